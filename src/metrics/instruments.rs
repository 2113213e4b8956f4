//! The instruments behind [`Metrics`](super::Metrics): created once from a meter, with
//! their names, units, descriptions and bucket boundaries, and the bounded label sets.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use opentelemetry::{
    KeyValue, Value,
    metrics::{Counter, Histogram, Meter, UpDownCounter},
};

use super::MAX_MODELS;
use crate::job::{Priority, queue_name};

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

/// Every instrument, with the label sets built at start-up.
pub(super) struct Instruments {
    /// The GenAI upstream calls.
    pub(super) calls: Calls,
    /// Jobs and their attempts.
    pub(super) jobs: Jobs,
    /// Client limits, streams and connections.
    pub(super) serving: Serving,
    /// `[queue]` per configured queue name.
    pub(super) queues: HashMap<String, [KeyValue; 1]>,
    /// `[queue=other]`, for a queue name not configured here.
    pub(super) other_queue: [KeyValue; 1],
    /// The model labels seen so far.
    pub(super) models: Models,
}

/// The `gen_ai.*` instruments of upstream calls, and their errors.
pub(super) struct Calls {
    pub(super) token_usage: Histogram<u64>,
    pub(super) operation_duration: Histogram<f64>,
    pub(super) time_to_first_token: Histogram<f64>,
    pub(super) time_per_output_token: Histogram<f64>,
    pub(super) upstream_errors: Counter<u64>,
}

/// Job counters, queue waits and attempt runtimes.
pub(super) struct Jobs {
    pub(super) submitted: Counter<u64>,
    pub(super) completed: Counter<u64>,
    pub(super) failed: Counter<u64>,
    pub(super) cancelled: Counter<u64>,
    pub(super) wait: Histogram<f64>,
    pub(super) attempt: Histogram<f64>,
    pub(super) retried: Counter<u64>,
    pub(super) reclaimed: Counter<u64>,
}

/// What the gateway serves: refusals, job streams, published events, connections.
pub(super) struct Serving {
    pub(super) refusals: Counter<u64>,
    pub(super) watchers: UpDownCounter<i64>,
    pub(super) watchers_behind: Counter<u64>,
    pub(super) events: Counter<u64>,
    pub(super) connections: UpDownCounter<i64>,
}

/// Makes instruments from one meter.
struct Make<'a>(&'a Meter);

impl Make<'_> {
    fn histogram(
        &self,
        name: &'static str,
        unit: &'static str,
        help: &'static str,
        b: &[f64],
    ) -> Histogram<f64> {
        self.0
            .f64_histogram(name)
            .with_unit(unit)
            .with_description(help)
            .with_boundaries(b.to_vec())
            .build()
    }

    fn counter(&self, name: &'static str, unit: &'static str, help: &'static str) -> Counter<u64> {
        self.0
            .u64_counter(name)
            .with_unit(unit)
            .with_description(help)
            .build()
    }

    fn gauge(
        &self,
        name: &'static str,
        unit: &'static str,
        help: &'static str,
    ) -> UpDownCounter<i64> {
        self.0
            .i64_up_down_counter(name)
            .with_unit(unit)
            .with_description(help)
            .build()
    }
}

impl Instruments {
    /// Instruments from `meter`, labelled with the queues of `job_types`.
    pub(super) fn new(meter: &Meter, job_types: &[String]) -> Instruments {
        let queues = job_types
            .iter()
            .flat_map(|t| Priority::CLAIM_ORDER.map(|p| queue_name(t, p)))
            .map(|q| (q.clone(), [KeyValue::new("queue", q)]))
            .collect();
        let make = Make(meter);
        Instruments {
            calls: Calls::new(&make),
            jobs: Jobs::new(&make),
            serving: Serving::new(&make),
            queues,
            other_queue: [KeyValue::new("queue", "other")],
            models: Models::default(),
        }
    }
}

impl Calls {
    fn new(make: &Make<'_>) -> Calls {
        Calls {
            token_usage: make
                .0
                .u64_histogram("gen_ai.client.token.usage")
                .with_unit("{token}")
                .with_description("Input and output tokens of each upstream call")
                .with_boundaries(TOKEN_BUCKETS.to_vec())
                .build(),
            operation_duration: make.histogram(
                "gen_ai.client.operation.duration",
                "s",
                "Upstream call duration, from the request to the end of its stream",
                &OPERATION_BUCKETS,
            ),
            time_to_first_token: make.histogram(
                "gen_ai.server.time_to_first_token",
                "s",
                "Time from the upstream request to its first token",
                &FIRST_TOKEN_BUCKETS,
            ),
            time_per_output_token: make.histogram(
                "gen_ai.server.time_per_output_token",
                "s",
                "Time per output token after the first, per upstream call",
                &PER_TOKEN_BUCKETS,
            ),
            upstream_errors: make.counter(
                "llmjobs.upstream.errors",
                "{error}",
                "Failed upstream calls by error type",
            ),
        }
    }
}

impl Jobs {
    fn new(make: &Make<'_>) -> Jobs {
        Jobs {
            submitted: make.counter("llmjobs.jobs.submitted", "{job}", "Jobs accepted"),
            completed: make.counter("llmjobs.jobs.completed", "{job}", "Jobs completed"),
            failed: make.counter("llmjobs.jobs.failed", "{job}", "Jobs failed for good"),
            cancelled: make.counter("llmjobs.jobs.cancelled", "{job}", "Jobs cancelled"),
            wait: make.histogram(
                "llmjobs.queue.wait.duration",
                "s",
                "Time a job waited in its queue before an attempt started",
                &WAIT_BUCKETS,
            ),
            attempt: make.histogram(
                "llmjobs.attempt.duration",
                "s",
                "Attempt runtime, from its start to its end, by outcome",
                &OPERATION_BUCKETS,
            ),
            retried: make.counter(
                "llmjobs.attempts.retried",
                "{attempt}",
                "Attempts that failed and left their job waiting to retry",
            ),
            reclaimed: make.counter(
                "llmjobs.leases.reclaimed",
                "{attempt}",
                "Attempts lost with their worker (killed, crashed, or past its lease) whose \
                 job was claimed again",
            ),
        }
    }
}

impl Serving {
    fn new(make: &Make<'_>) -> Serving {
        Serving {
            refusals: make.counter(
                "llmjobs.ratelimit.refusals",
                "{request}",
                "Requests refused by a client limit",
            ),
            watchers: make.gauge(
                "llmjobs.stream.watchers",
                "{watcher}",
                "Job streams being served",
            ),
            watchers_behind: make.counter(
                "llmjobs.stream.watchers.behind",
                "{watcher}",
                "Job streams ended because their client stopped reading",
            ),
            events: make.counter(
                "llmjobs.events.published",
                "{event}",
                "Events appended to job logs by this process",
            ),
            connections: make.gauge(
                "llmjobs.server.connections",
                "{connection}",
                "Client connections open on the gRPC listener",
            ),
        }
    }
}

/// `gen_ai.request.model` labels: the first [`MAX_MODELS`] model names seen, then `other`
/// (model names come from clients).
#[derive(Default)]
pub(super) struct Models(RwLock<HashMap<String, KeyValue>>);

impl Models {
    pub(super) fn label(&self, model: &str) -> KeyValue {
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
}
