//! Every metric the service records: the instruments, created once, and the attribute sets
//! they are recorded with, behind one cloneable handle ([`Metrics`]) that the core calls.
//!
//! Instruments come from an OpenTelemetry [`Meter`]; which readers take them (Prometheus text
//! at `GET /metrics`, OTLP export) is the composition root's business ([`crate::telemetry`],
//! [`crate::http`]). Names and attributes follow the OpenTelemetry GenAI semantic conventions
//! (`gen_ai.*`) and the process conventions (`process.*`); the queue figures use Horizon's
//! vocabulary (submitted, completed, failed, wait time, runtime). The README lists them all.
//!
//! Cost on the hot path: nothing is recorded per token. A job records a handful of counter
//! and histogram updates when it is submitted, starts and ends; an append to a job's log adds
//! to one counter without attributes (an atomic add). Attribute sets are built at start-up
//! (queues) or once per attempt (model, provider), never per event.
//!
//! Labels stay bounded: queues are the configured job types × priorities, models are the
//! first [`MAX_MODELS`] seen (then `other`), error types are the service's error codes. No
//! job id, tenant or key ever becomes a label.

mod instruments;
pub mod process;
pub mod queues;

use std::{sync::Arc, time::Duration};

use opentelemetry::{
    KeyValue,
    metrics::{Meter, MeterProvider as _},
};

pub use crate::ratelimit::Limit;
use instruments::Instruments;

/// Most distinct `gen_ai.request.model` values; later models are recorded as `other`.
pub const MAX_MODELS: usize = 64;

/// How a job ended, for the job counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Generation finished and the result is stored.
    Completed,
    /// Failed for good.
    Failed,
    /// Cancelled by a client or an operator.
    Cancelled,
}

/// How an attempt ended, the `outcome` of `llmjobs.attempt.duration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The job completed.
    Completed,
    /// The job failed for good.
    Failed,
    /// The attempt failed and the job waits to retry.
    Retried,
    /// The job was cancelled while it ran.
    Cancelled,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
            Outcome::Retried => "retried",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// The service's instruments. Cheap to clone; a disabled one ([`Metrics::disabled`]) records
/// nothing.
#[derive(Clone)]
pub struct Metrics(Arc<Instruments>);

impl Metrics {
    /// Instruments from `meter`, labelled with the queues of `job_types`.
    pub fn new(meter: &Meter, job_types: &[String]) -> Metrics {
        process::register(meter);
        Metrics(Arc::new(Instruments::new(meter, job_types)))
    }

    /// Instruments that record nothing (unit tests, tools).
    pub fn disabled() -> Metrics {
        let meter = opentelemetry::metrics::NoopMeterProvider::new().meter("llm-jobs");
        Metrics::new(&meter, &[])
    }

    fn queue(&self, queue: &str) -> &[KeyValue] {
        self.0.queues.get(queue).unwrap_or(&self.0.other_queue)
    }

    /// `n` jobs of `queue` were accepted.
    pub fn submitted(&self, queue: &str, n: u64) {
        self.0.jobs.submitted.add(n, self.queue(queue));
    }

    /// A job of `queue` ended.
    pub fn ended(&self, queue: &str, how: Ended) {
        let counter = match how {
            Ended::Completed => &self.0.jobs.completed,
            Ended::Failed => &self.0.jobs.failed,
            Ended::Cancelled => &self.0.jobs.cancelled,
        };
        counter.add(1, self.queue(queue));
    }

    /// An attempt of a job of `queue` started after the job waited `wait`.
    pub fn started(&self, queue: &str, wait: Duration) {
        self.0
            .jobs
            .wait
            .record(wait.as_secs_f64(), self.queue(queue));
    }

    /// An attempt of a job of `queue` ended after `runtime` (a retried one also counts in
    /// `llmjobs.attempts.retried`).
    pub fn attempt_ended(&self, queue: &str, outcome: Outcome, runtime: Duration) {
        let attrs = [
            self.queue(queue)[0].clone(),
            KeyValue::new("outcome", outcome.as_str()),
        ];
        self.0.jobs.attempt.record(runtime.as_secs_f64(), &attrs);
        if outcome == Outcome::Retried {
            self.retried(queue);
        }
    }

    /// An attempt of a job of `queue` failed and the job waits to retry.
    pub fn retried(&self, queue: &str) {
        self.0.jobs.retried.add(1, self.queue(queue));
    }

    /// The next attempt of a job of `queue` found an earlier one lost with its worker.
    pub fn reclaimed(&self, queue: &str) {
        self.0.jobs.reclaimed.add(1, self.queue(queue));
    }

    /// A client limit refused a request.
    pub fn refused(&self, limit: Limit) {
        self.0
            .serving
            .refusals
            .add(1, &[KeyValue::new("limit", limit.as_str())]);
    }

    /// `n` events went into job logs.
    pub fn published(&self, n: usize) {
        self.0.serving.events.add(n as u64, &[]);
    }

    /// A job stream starts; it counts as served until the guard is dropped.
    pub fn watching(&self) -> Watching {
        self.0.serving.watchers.add(1, &[]);
        Watching(self.clone())
    }

    /// A job stream ended because its client stopped reading.
    pub fn fell_behind(&self) {
        self.0.serving.watchers_behind.add(1, &[]);
    }

    /// A client connection opened on the gRPC listener; it counts as open until the guard is
    /// dropped.
    pub fn connected(&self) -> Connected {
        self.0.serving.connections.add(1, &[]);
        Connected(self.clone())
    }

    /// The attribute sets of one upstream call to `model` through `provider` (its
    /// `gen_ai.provider.name`), built once per attempt.
    pub fn call(&self, provider: &'static str, model: &str) -> Call {
        let base = [
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.provider.name", provider),
            self.0.models.label(model),
        ];
        let with_type = |t: &'static str| {
            let [a, b, c] = base.clone();
            [a, b, c, KeyValue::new("gen_ai.token.type", t)]
        };
        Call {
            input: with_type("input"),
            output: with_type("output"),
            base,
        }
    }

    /// Records an upstream call that ended: its tokens and, when `timed` (it completed or
    /// failed, rather than being stopped on our side), its duration, time to first token and
    /// per output token, and (failed) its error type.
    pub fn call_ended(&self, call: &Call, figures: &CallFigures<'_>, timed: bool) {
        let i = &self.0;
        if figures.input_tokens.is_some() || figures.output_tokens > 0 {
            if let Some(input) = figures.input_tokens {
                i.calls.token_usage.record(input, &call.input);
            }
            i.calls
                .token_usage
                .record(figures.output_tokens, &call.output);
        }
        if !timed {
            return;
        }
        let with_error;
        let attrs: &[KeyValue] = match figures.error {
            None => &call.base,
            Some(error) => {
                let [a, b, c] = call.base.clone();
                with_error = [a, b, c, KeyValue::new("error.type", error.to_owned())];
                i.calls.upstream_errors.add(1, &with_error[1..]);
                &with_error
            }
        };
        i.calls
            .operation_duration
            .record(figures.duration.as_secs_f64(), attrs);
        if let Some(first) = figures.first_token {
            i.calls
                .time_to_first_token
                .record(first.as_secs_f64(), attrs);
        }
        if let Some(per) = figures.per_output_token {
            i.calls
                .time_per_output_token
                .record(per.as_secs_f64(), attrs);
        }
    }
}

impl crate::ratelimit::Refusals for Metrics {
    fn refused(&self, limit: Limit) {
        Metrics::refused(self, limit);
    }
}

/// The attribute sets of one upstream call (see [`Metrics::call`]).
#[derive(Clone, Debug)]
pub struct Call {
    base: [KeyValue; 3],
    input: [KeyValue; 4],
    output: [KeyValue; 4],
}

/// What one upstream call measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct CallFigures<'a> {
    /// From the request to the end of the stream.
    pub duration: Duration,
    /// From the request to the first token, if one came.
    pub first_token: Option<Duration>,
    /// Mean time per output token after the first, with two tokens or more.
    pub per_output_token: Option<Duration>,
    /// Input tokens, when the upstream reported them.
    pub input_tokens: Option<u64>,
    /// Output tokens (reported, or counted from the stream).
    pub output_tokens: u64,
    /// The error code, when the call failed.
    pub error: Option<&'a str>,
}

/// A job stream being served (see [`Metrics::watching`]).
pub struct Watching(Metrics);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.0.serving.watchers.add(-1, &[]);
    }
}

/// A client connection open (see [`Metrics::connected`]).
pub struct Connected(Metrics);

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connected")
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.0.serving.connections.add(-1, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_queues_are_labelled_other() {
        let m = Metrics::disabled();
        assert_eq!(m.queue("openai-general")[0].value.as_str(), "other");
        let meter = opentelemetry::metrics::NoopMeterProvider::new().meter("t");
        let m = Metrics::new(&meter, &["general".to_owned()]);
        assert_eq!(
            m.queue("openai-general-urgent")[0].value.as_str(),
            "openai-general-urgent"
        );
        assert_eq!(m.queue("openai-nope")[0].value.as_str(), "other");
    }
}
