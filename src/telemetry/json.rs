//! JSON log lines (`--log-format json`): tracing-subscriber's JSON format, one object per line,
//! plus `trace_id` and `span_id` (lowercase hex, as W3C `traceparent` spells them) on every
//! line emitted inside a span that has them (a request, an attempt, an upstream call), so a
//! log line leads to its trace.
//!
//! [`RecordIds`] notes each span's ids in the span's extensions when it is first entered;
//! [`WithTraceIds`] reads them when it formats a line. (A formatter cannot ask the
//! OpenTelemetry layer itself: inside a subscriber callback the current dispatcher is none.)

use std::{fmt, sync::OnceLock};

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::{Dispatch, Event, Subscriber, dispatcher::WeakDispatch, span};
use tracing_subscriber::{
    Layer,
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::{Format, Json, Writer},
        time::SystemTime,
    },
    layer::Context,
    registry::LookupSpan,
};

/// A span's OpenTelemetry ids, in hex.
struct Ids {
    trace_id: String,
    span_id: String,
}

/// Notes each span's OpenTelemetry ids in its extensions when it is first entered (the
/// OpenTelemetry layer must be below it).
#[derive(Default)]
pub struct RecordIds {
    dispatch: OnceLock<WeakDispatch>,
}

impl<S> Layer<S> for RecordIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        if span.extensions().get::<Ids>().is_some() {
            return;
        }
        let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade) else {
            return;
        };
        // No extension lock may be held here: the OpenTelemetry layer takes its own.
        let Some(cx) = tracing_opentelemetry::get_otel_context(id, &dispatch) else {
            return;
        };
        let otel = cx.span();
        let sc = otel.span_context();
        if sc.is_valid() {
            span.extensions_mut().insert(Ids {
                trace_id: sc.trace_id().to_string(),
                span_id: sc.span_id().to_string(),
            });
        }
    }
}

/// The JSON event format with the ids [`RecordIds`] noted for the event's span added.
pub struct WithTraceIds(Format<Json, SystemTime>);

impl WithTraceIds {
    /// Message and fields at the top level of each object, the current span and the list of
    /// spans under `span` and `spans`.
    pub fn new() -> WithTraceIds {
        WithTraceIds(
            tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(true),
        )
    }
}

impl Default for WithTraceIds {
    fn default() -> Self {
        WithTraceIds::new()
    }
}

impl<S, N> FormatEvent<S, N> for WithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let ids = ctx.event_scope().and_then(|mut scope| {
            let leaf = scope.next()?;
            let extensions = leaf.extensions();
            let ids = extensions.get::<Ids>()?;
            Some((ids.trace_id.clone(), ids.span_id.clone()))
        });
        let Some((trace_id, span_id)) = ids else {
            return writer.write_str(&line);
        };
        match serde_json::from_str::<Map<String, Value>>(line.trim_end()) {
            Ok(mut object) => {
                object.insert("trace_id".into(), trace_id.into());
                object.insert("span_id".into(), span_id.into());
                writeln!(writer, "{}", Value::Object(object))
            }
            Err(_) => writer.write_str(&line),
        }
    }
}
