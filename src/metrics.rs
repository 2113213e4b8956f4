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

pub mod process;
pub mod queues;

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use opentelemetry::{
    KeyValue, Value,
    metrics::{Counter, Histogram, Meter, MeterProvider as _, UpDownCounter},
};

use crate::job::{Priority, queue_name};

/// Most distinct `gen_ai.request.model` values; later models are recorded as `other`.
pub const MAX_MODELS: usize = 64;

/// Durations from milliseconds to minutes (s): GenAI operation durations (the conventions'
/// advisory buckets, extended to the attempt timeout) and attempt runtimes.
const OPERATION_BUCKETS: [f64; 16] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92, 163.84,
    327.68,
];
/// Queue waits, from a millisecond to an hour (s).
const WAIT_BUCKETS: [f64; 19] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    600.0, 1800.0, 3600.0,
];
/// Time to first token (s): the conventions' advisory buckets, extended to the first-token
/// timeout.
const FIRST_TOKEN_BUCKETS: [f64; 18] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    30.0, 60.0,
];
/// Time per output token (s): the conventions' advisory buckets, with finer ones below 10 ms
/// for fast models and simulated runs.
const PER_TOKEN_BUCKETS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5,
];
/// Tokens per operation: the conventions' advisory buckets, up to 262,144.
const TOKEN_BUCKETS: [f64; 10] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0,
];

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

/// Which client limit refused a request (`limit` of `llmjobs.ratelimit.refusals`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Requests per minute of a key.
    Requests,
    /// Unfinished jobs of a key.
    UnfinishedJobs,
    /// Open streams of a key on one gateway.
    OpenStreams,
}

impl Limit {
    fn as_str(self) -> &'static str {
        match self {
            Limit::Requests => "requests",
            Limit::UnfinishedJobs => "unfinished_jobs",
            Limit::OpenStreams => "open_streams",
        }
    }
}

/// The service's instruments. Cheap to clone; a disabled one ([`Metrics::disabled`]) records
/// nothing.
#[derive(Clone)]
pub struct Metrics(Arc<Instruments>);

struct Instruments {
    token_usage: Histogram<u64>,
    operation_duration: Histogram<f64>,
    time_to_first_token: Histogram<f64>,
    time_per_output_token: Histogram<f64>,
    submitted: Counter<u64>,
    completed: Counter<u64>,
    failed: Counter<u64>,
    cancelled: Counter<u64>,
    wait: Histogram<f64>,
    attempt: Histogram<f64>,
    retried: Counter<u64>,
    reclaimed: Counter<u64>,
    upstream_errors: Counter<u64>,
    refusals: Counter<u64>,
    watchers: UpDownCounter<i64>,
    watchers_behind: Counter<u64>,
    events: Counter<u64>,
    connections: UpDownCounter<i64>,
    /// `[queue]` per configured queue name.
    queues: HashMap<String, [KeyValue; 1]>,
    /// `[queue=other]`, for a queue name not configured here.
    other_queue: [KeyValue; 1],
    models: Models,
}

impl Metrics {
    /// Instruments from `meter`, labelled with the queues of `job_types`.
    pub fn new(meter: &Meter, job_types: &[String]) -> Metrics {
        let queues = job_types
            .iter()
            .flat_map(|t| Priority::CLAIM_ORDER.map(|p| queue_name(t, p)))
            .map(|q| (q.clone(), [KeyValue::new("queue", q)]))
            .collect();
        let histogram = |name: &'static str, unit: &'static str, help: &'static str, b: &[f64]| {
            meter
                .f64_histogram(name)
                .with_unit(unit)
                .with_description(help)
                .with_boundaries(b.to_vec())
                .build()
        };
        let counter = |name: &'static str, unit: &'static str, help: &'static str| {
            meter
                .u64_counter(name)
                .with_unit(unit)
                .with_description(help)
                .build()
        };
        let gauge = |name: &'static str, unit: &'static str, help: &'static str| {
            meter
                .i64_up_down_counter(name)
                .with_unit(unit)
                .with_description(help)
                .build()
        };
        process::register(meter);
        Metrics(Arc::new(Instruments {
            token_usage: meter
                .u64_histogram("gen_ai.client.token.usage")
                .with_unit("{token}")
                .with_description("Input and output tokens of each upstream call")
                .with_boundaries(TOKEN_BUCKETS.to_vec())
                .build(),
            operation_duration: histogram(
                "gen_ai.client.operation.duration",
                "s",
                "Upstream call duration, from the request to the end of its stream",
                &OPERATION_BUCKETS,
            ),
            time_to_first_token: histogram(
                "gen_ai.server.time_to_first_token",
                "s",
                "Time from the upstream request to its first token",
                &FIRST_TOKEN_BUCKETS,
            ),
            time_per_output_token: histogram(
                "gen_ai.server.time_per_output_token",
                "s",
                "Time per output token after the first, per upstream call",
                &PER_TOKEN_BUCKETS,
            ),
            submitted: counter("llmjobs.jobs.submitted", "{job}", "Jobs accepted"),
            completed: counter("llmjobs.jobs.completed", "{job}", "Jobs completed"),
            failed: counter("llmjobs.jobs.failed", "{job}", "Jobs failed for good"),
            cancelled: counter("llmjobs.jobs.cancelled", "{job}", "Jobs cancelled"),
            wait: histogram(
                "llmjobs.queue.wait.duration",
                "s",
                "Time a job waited in its queue before an attempt started",
                &WAIT_BUCKETS,
            ),
            attempt: histogram(
                "llmjobs.attempt.duration",
                "s",
                "Attempt runtime, from its start to its end, by outcome",
                &OPERATION_BUCKETS,
            ),
            retried: counter(
                "llmjobs.attempts.retried",
                "{attempt}",
                "Attempts that failed and left their job waiting to retry",
            ),
            reclaimed: counter(
                "llmjobs.leases.reclaimed",
                "{attempt}",
                "Attempts lost with their worker (killed, crashed, or past its lease) whose \
                 job was claimed again",
            ),
            upstream_errors: counter(
                "llmjobs.upstream.errors",
                "{error}",
                "Failed upstream calls by error type",
            ),
            refusals: counter(
                "llmjobs.ratelimit.refusals",
                "{request}",
                "Requests refused by a client limit",
            ),
            watchers: gauge(
                "llmjobs.stream.watchers",
                "{watcher}",
                "Job streams being served",
            ),
            watchers_behind: counter(
                "llmjobs.stream.watchers.behind",
                "{watcher}",
                "Job streams ended because their client stopped reading",
            ),
            events: counter(
                "llmjobs.events.published",
                "{event}",
                "Events appended to job logs by this process",
            ),
            connections: gauge(
                "llmjobs.server.connections",
                "{connection}",
                "Client connections open on the gRPC listener",
            ),
            queues,
            other_queue: [KeyValue::new("queue", "other")],
            models: Models::default(),
        }))
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
        self.0.submitted.add(n, self.queue(queue));
    }

    /// A job of `queue` ended.
    pub fn ended(&self, queue: &str, how: Ended) {
        let counter = match how {
            Ended::Completed => &self.0.completed,
            Ended::Failed => &self.0.failed,
            Ended::Cancelled => &self.0.cancelled,
        };
        counter.add(1, self.queue(queue));
    }

    /// An attempt of a job of `queue` started after the job waited `wait`.
    pub fn started(&self, queue: &str, wait: Duration) {
        self.0.wait.record(wait.as_secs_f64(), self.queue(queue));
    }

    /// An attempt of a job of `queue` ended after `runtime` (a retried one also counts in
    /// `llmjobs.attempts.retried`).
    pub fn attempt_ended(&self, queue: &str, outcome: Outcome, runtime: Duration) {
        let attrs = [
            self.queue(queue)[0].clone(),
            KeyValue::new("outcome", outcome.as_str()),
        ];
        self.0.attempt.record(runtime.as_secs_f64(), &attrs);
        if outcome == Outcome::Retried {
            self.retried(queue);
        }
    }

    /// An attempt of a job of `queue` failed and the job waits to retry.
    pub fn retried(&self, queue: &str) {
        self.0.retried.add(1, self.queue(queue));
    }

    /// The next attempt of a job of `queue` found an earlier one lost with its worker.
    pub fn reclaimed(&self, queue: &str) {
        self.0.reclaimed.add(1, self.queue(queue));
    }

    /// A client limit refused a request.
    pub fn refused(&self, limit: Limit) {
        self.0
            .refusals
            .add(1, &[KeyValue::new("limit", limit.as_str())]);
    }

    /// `n` events went into job logs.
    pub fn published(&self, n: usize) {
        self.0.events.add(n as u64, &[]);
    }

    /// A job stream starts; it counts as served until the guard is dropped.
    pub fn watching(&self) -> Watching {
        self.0.watchers.add(1, &[]);
        Watching(self.clone())
    }

    /// A job stream ended because its client stopped reading.
    pub fn fell_behind(&self) {
        self.0.watchers_behind.add(1, &[]);
    }

    /// A client connection opened on the gRPC listener; it counts as open until the guard is
    /// dropped.
    pub fn connected(&self) -> Connected {
        self.0.connections.add(1, &[]);
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
                i.token_usage.record(input, &call.input);
            }
            i.token_usage.record(figures.output_tokens, &call.output);
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
                i.upstream_errors.add(1, &with_error[1..]);
                &with_error
            }
        };
        i.operation_duration
            .record(figures.duration.as_secs_f64(), attrs);
        if let Some(first) = figures.first_token {
            i.time_to_first_token.record(first.as_secs_f64(), attrs);
        }
        if let Some(per) = figures.per_output_token {
            i.time_per_output_token.record(per.as_secs_f64(), attrs);
        }
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
        self.0.0.watchers.add(-1, &[]);
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
        self.0.0.connections.add(-1, &[]);
    }
}

/// `gen_ai.request.model` labels: the first [`MAX_MODELS`] model names seen, then `other`
/// (model names come from clients).
#[derive(Default)]
struct Models(RwLock<HashMap<String, KeyValue>>);

impl Models {
    fn label(&self, model: &str) -> KeyValue {
        if let Some(kv) = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(model)
        {
            return kv.clone();
        }
        let mut map = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_MODELS && !map.contains_key(model) {
            return KeyValue::new("gen_ai.request.model", "other");
        }
        map.entry(model.to_owned())
            .or_insert_with(|| {
                KeyValue::new("gen_ai.request.model", Value::from(Arc::<str>::from(model)))
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_past_the_cap_share_one_label() {
        let models = Models::default();
        for i in 0..MAX_MODELS {
            let kv = models.label(&format!("m{i}"));
            assert_eq!(kv.value.as_str(), format!("m{i}"));
        }
        assert_eq!(models.label("one-more").value.as_str(), "other");
        assert_eq!(
            models.label("m3").value.as_str(),
            "m3",
            "known models keep their label"
        );
    }

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
