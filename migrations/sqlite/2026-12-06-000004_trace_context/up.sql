-- The W3C trace context of the submitting call; see migrations/postgres/…_trace_context.
ALTER TABLE jobs ADD COLUMN trace_context text;
