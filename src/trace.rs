//! One trace from the client's call through the queue to the upstream: the W3C Trace Context
//! (<https://www.w3.org/TR/trace-context/>) read from a submitting call, carried with the job,
//! continued by its attempts and passed on to the upstream, and the spans that say so.
//!
//! Spans (names as exported; the gRPC ones are made in `api`):
//! - `job.attempt`: one attempt, a child of the submitting call's span when the attempt
//!   started within [`CONTINUE_WITHIN`] of the submit, else the root of a trace of its own
//!   with a span link to it (a job that waited long, or a retry long after, would otherwise
//!   stretch one trace over hours);
//! - `chat {model}` (kind client): the upstream call, with the OpenTelemetry GenAI attributes
//!   (<https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/>):
//!   `gen_ai.operation.name` (`chat`), `gen_ai.provider.name`, `gen_ai.request.model`,
//!   `gen_ai.response.model`, `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens` and
//!   `error.type` when it failed; never prompt or completion text.
//!
//! Without an OpenTelemetry layer (see `telemetry`) spans have no ids: nothing is stored with
//! the job and no `traceparent` goes upstream.

use std::time::Duration;

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TraceContextExt,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::{Span, field::Empty, info_span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::job::{Job, Usage};

/// Longest `traceparent` or `tracestate` value read (bytes); a longer one is ignored as if
/// absent. The W3C format makes a `traceparent` 55 bytes and caps a `tracestate` at 32
/// members; 512 bytes keeps what a job stores small.
pub const MAX_HEADER_BYTES: usize = 512;

/// An attempt that starts at most this long after its job's submit continues the submit's
/// trace; a later one starts a trace of its own linked to it.
pub const CONTINUE_WITHIN: Duration = Duration::from_secs(5 * 60);

pub use crate::provider::TRACEPARENT;
/// The W3C header carrying vendor-specific trace state.
pub const TRACESTATE: &str = "tracestate";

/// The two W3C headers of one context, each dropped when longer than [`MAX_HEADER_BYTES`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Headers<'a> {
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
}

impl<'a> Headers<'a> {
    /// The headers as received (absent: `None`).
    pub fn new(traceparent: Option<&'a str>, tracestate: Option<&'a str>) -> Headers<'a> {
        let bounded = |v: Option<&'a str>| v.filter(|v| v.len() <= MAX_HEADER_BYTES);
        Headers {
            traceparent: bounded(traceparent),
            tracestate: bounded(tracestate),
        }
    }

    /// The remote span context they name; `None` when absent or malformed.
    pub fn context(&self) -> Option<Context> {
        // From an empty context: a malformed header must not come back as the current span.
        let cx = TraceContextPropagator::new().extract_with_context(&Context::new(), self);
        let valid = cx.span().span_context().is_valid();
        valid.then_some(cx)
    }
}

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent,
            TRACESTATE => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

/// What [`TraceContextPropagator`] writes: the two header values.
#[derive(Default)]
struct Written {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Written {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = Some(value),
            TRACESTATE if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}

/// The headers of `span`'s context; `None` when it has none (no OpenTelemetry layer).
fn written(span: &Span) -> Option<Written> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut out = Written::default();
    TraceContextPropagator::new().inject_context(&cx, &mut out);
    out.traceparent.is_some().then_some(out)
}

/// The form a job stores ([`Job::trace_context`]) of `span`'s context: its `traceparent`,
/// then a newline and its `tracestate` when not empty. `None` when the span has no ids.
pub fn carry(span: &Span) -> Option<String> {
    let w = written(span)?;
    let parent = w.traceparent?;
    Some(match w.tracestate {
        Some(state) => format!("{parent}\n{state}"),
        None => parent,
    })
}

/// The context a job stored with [`carry`]; `None` when it is absent or malformed.
pub fn carried(stored: &str) -> Option<Context> {
    let (parent, state) = match stored.split_once('\n') {
        Some((p, s)) => (p, Some(s)),
        None => (stored, None),
    };
    Headers::new(Some(parent), state).context()
}

/// The `traceparent` header value of `span` (for an outgoing request); `None` when it has no
/// ids.
pub fn traceparent(span: &Span) -> Option<String> {
    written(span)?.traceparent
}

/// Makes `span` a child of the caller's context in `headers`, when they name a valid one.
/// Call before the span is first entered (a started span keeps its parent).
pub fn continue_from(span: &Span, headers: Headers<'_>) {
    if let Some(cx) = headers.context()
        && let Err(e) = span.set_parent(cx)
    {
        tracing::debug!(error = %e, "the caller's trace context was not applied");
    }
}

/// The span of attempt `job.attempts` of `job` (read just after its start): a child of the
/// context the job carries when the attempt started within [`CONTINUE_WITHIN`] of the
/// submit, else a root linked to it.
pub fn attempt_span(job: &Job) -> Span {
    let span = info_span!(
        "job.attempt",
        otel.kind = "consumer",
        job_id = %job.id,
        job_type = job.job_type.as_str(),
        model = job.params.model.as_str(),
        attempt = job.attempts,
    );
    let Some(cx) = job.trace_context.as_deref().and_then(carried) else {
        return span;
    };
    let waited = job
        .started_at
        .and_then(|s| (s - job.created_at).to_std().ok())
        .unwrap_or_default();
    if waited <= CONTINUE_WITHIN {
        if let Err(e) = span.set_parent(cx) {
            tracing::debug!(error = %e, "the job's trace context was not applied");
        }
    } else {
        span.add_link(cx.span().span_context().clone());
    }
    span
}

/// The client span of one upstream call (`chat {model}`) by `provider` (e.g. `openai`),
/// with the request's GenAI attributes; [`end_chat`] adds the answer's.
pub fn chat_span(provider: &str, model: &str) -> Span {
    info_span!(
        "chat",
        otel.name = format!("chat {model}").as_str(),
        otel.kind = "client",
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = provider,
        gen_ai.request.model = model,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        error.type = Empty,
        otel.status_code = Empty,
    )
}

/// Records the answer of `span`'s call: the model that answered (empty: not recorded), the
/// tokens, and `error_type` (a stable code such as `upstream_server_error`) when it failed.
pub fn end_chat(span: &Span, response_model: &str, usage: &Usage, error_type: Option<&str>) {
    if !response_model.is_empty() {
        span.record("gen_ai.response.model", response_model);
    }
    span.record("gen_ai.usage.input_tokens", usage.input_tokens);
    span.record("gen_ai.usage.output_tokens", usage.output_tokens);
    if let Some(kind) = error_type {
        span.record("error.type", kind);
        span.record("otel.status_code", "ERROR");
    }
}

#[cfg(test)]
mod tests;
