-- The W3C trace context of the call that submitted the job (`traceparent`, then a newline
-- and `tracestate` when there is one), so that its attempts continue that trace (issue 17).
-- NULL when tracing is off or the job came before this column.
ALTER TABLE jobs ADD COLUMN trace_context text;
