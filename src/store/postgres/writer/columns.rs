//! The group commit's values as the statement binds them: one array per column of each
//! table a batch writes (for `unnest`), borrowed from the writes.

use chrono::{DateTime, Utc};

use super::End;
use crate::{
    job::JobId,
    store::{
        models::NewJobRow,
        postgres::{fixed::Bind, to_i32},
    },
};

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// New jobs' values, one array per column (for `unnest`).
pub(super) struct InsertColumns<'a> {
    pub(super) ids: Vec<JobId>,
    statuses: Vec<&'a str>,
    types: Vec<&'a str>,
    priorities: Vec<&'a str>,
    queues: Vec<&'a str>,
    messages: Vec<&'a serde_json::Value>,
    params: Vec<&'a serde_json::Value>,
    models: Vec<&'a str>,
    modes: Vec<&'a str>,
    metadata: Vec<&'a serde_json::Value>,
    keys: Vec<Option<&'a str>>,
    max_attempts: Vec<i32>,
    timeouts: Vec<Option<i32>>,
    /// Every job's tags, one after another; job i's are `flat_tags[from[i]..=to[i]]`
    /// (1-based).
    flat_tags: Vec<&'a str>,
    from: Vec<i32>,
    to: Vec<i32>,
    tenants: Vec<&'a str>,
    discard: Vec<bool>,
    traces: Vec<Option<&'a str>>,
}

impl<'a> InsertColumns<'a> {
    pub(super) fn new(rows: Vec<&'a NewJobRow>) -> Self {
        let position = |len: usize| i32::try_from(len).unwrap_or(i32::MAX);
        let text = |f: fn(&'a NewJobRow) -> &'a str| rows.iter().map(|r| f(r)).collect();
        let json = |f: fn(&'a NewJobRow) -> &'a serde_json::Value| {
            rows.iter().map(|r| f(r)).collect()
        };
        let mut flat_tags: Vec<&str> = Vec::new();
        let (mut from, mut to) = (Vec::with_capacity(rows.len()), Vec::with_capacity(rows.len()));
        for r in &rows {
            from.push(position(flat_tags.len() + 1));
            flat_tags.extend(r.tags.iter().map(String::as_str));
            to.push(position(flat_tags.len()));
        }
        InsertColumns {
            ids: rows.iter().map(|r| r.id).collect(),
            statuses: text(|r| r.status),
            types: text(|r| &r.job_type),
            priorities: text(|r| r.priority),
            queues: text(|r| &r.queue),
            messages: json(|r| &r.messages),
            params: json(|r| &r.params),
            models: text(|r| &r.model),
            modes: text(|r| r.streaming_mode),
            metadata: json(|r| &r.metadata),
            keys: rows.iter().map(|r| r.idempotency_key.as_deref()).collect(),
            max_attempts: rows.iter().map(|r| r.max_attempts).collect(),
            timeouts: rows.iter().map(|r| r.timeout_secs).collect(),
            flat_tags,
            from,
            to,
            tenants: text(|r| &r.tenant),
            discard: rows.iter().map(|r| r.discard_prompt).collect(),
            traces: rows.iter().map(|r| r.trace_context.as_deref()).collect(),
        }
    }

    /// The binds of `WriteBatch`'s `inserted` part, in the order of its `?`s.
    pub(super) fn binds(&self) -> [Bind<'_>; 19] {
        [
            Bind::Texts(&self.flat_tags),
            Bind::Uuids(&self.ids),
            Bind::Texts(&self.statuses),
            Bind::Texts(&self.types),
            Bind::Texts(&self.priorities),
            Bind::Texts(&self.queues),
            Bind::Jsonbs(&self.messages),
            Bind::Jsonbs(&self.params),
            Bind::Texts(&self.models),
            Bind::Texts(&self.modes),
            Bind::Jsonbs(&self.metadata),
            Bind::NullableTexts(&self.keys),
            Bind::Int4s(&self.max_attempts),
            Bind::NullableInt4s(&self.timeouts),
            Bind::Int4s(&self.from),
            Bind::Int4s(&self.to),
            Bind::Texts(&self.tenants),
            Bind::Bools(&self.discard),
            Bind::NullableTexts(&self.traces),
        ]
    }
}

/// Attempt ends' values, one array per column of each table they write (for `unnest`).
#[derive(Default)]
pub(super) struct EndColumns<'a> {
    // jobs
    pub(super) ids: Vec<JobId>,
    attempts: Vec<i32>,
    statuses: Vec<&'static str>,
    codes: Vec<Option<&'a str>>,
    messages: Vec<Option<&'a str>>,
    sequences: Vec<Option<i64>>,
    // job_results: the result's texts, flags, counts, times and optional figures
    contents: Vec<&'a str>,
    reasonings: Vec<&'a str>,
    finishes: Vec<&'a str>,
    models: Vec<&'a str>,
    providers: Vec<&'a str>,
    simulated: Vec<bool>,
    input_tokens: Vec<i64>,
    output_tokens: Vec<i64>,
    total_tokens: Vec<i64>,
    estimated: Vec<bool>,
    ttft_ms: Vec<Option<i64>>,
    duration_ms: Vec<i64>,
    tokens_per_second: Vec<f64>,
    wait_ms: Vec<i64>,
    cost_usd: Vec<Option<f64>>,
    cached_tokens: Vec<Option<i64>>,
    reasoning_tokens: Vec<Option<i64>>,
    chunks: Vec<i64>,
    bytes: Vec<i64>,
    itl_p50_ms: Vec<Option<f64>>,
    itl_p95_ms: Vec<Option<f64>>,
    request_ids: Vec<Option<&'a str>>,
    structured: Vec<Option<&'a serde_json::Value>>,
    // job_attempt_failures
    failed_ids: Vec<JobId>,
    failed_attempts: Vec<i32>,
    failed_codes: Vec<&'a str>,
    failed_messages: Vec<&'a str>,
    retryable: Vec<bool>,
    // job_event_logs
    log_ids: Vec<JobId>,
    log_firsts: Vec<i64>,
    log_counts: Vec<i64>,
    log_data: Vec<&'a [u8]>,
    // job_progress_events
    progress_ids: Vec<JobId>,
    progress_attempts: Vec<i32>,
    progress_kinds: Vec<&'static str>,
    progress_names: Vec<&'a str>,
    progress_times: Vec<DateTime<Utc>>,
    progress_events: Vec<&'a [u8]>,
}

impl<'a> EndColumns<'a> {
    pub(super) fn push(&mut self, e: &'a End) {
        let attempt = to_i32(e.attempt);
        self.ids.push(e.id);
        self.attempts.push(attempt);
        self.statuses.push(e.status.as_str());
        self.codes.push(e.error.as_ref().map(|e| e.code.as_str()));
        self.messages.push(e.error.as_ref().map(|e| e.message.as_str()));
        self.sequences.push(e.terminal_sequence);
        self.push_result(e);
        if let Some(error) = &e.error {
            self.failed_ids.push(e.id);
            self.failed_attempts.push(attempt);
            self.failed_codes.push(&error.code);
            self.failed_messages.push(&error.message);
            self.retryable.push(e.retryable);
        }
        if let Some(log) = &e.log {
            self.log_ids.push(e.id);
            self.log_firsts.push(to_i64(log.first_sequence));
            self.log_counts.push(to_i64(log.count));
            self.log_data.push(&log.data);
        }
        for p in &e.history {
            self.progress_ids.push(p.job_id);
            self.progress_attempts.push(p.attempt);
            self.progress_kinds.push(p.kind);
            self.progress_names.push(&p.name);
            self.progress_times.push(p.time);
            self.progress_events.push(&p.event);
        }
    }

    fn push_result(&mut self, e: &'a End) {
        let r = &e.result;
        self.contents.push(&r.content);
        self.reasonings.push(&r.reasoning_content);
        self.finishes.push(&r.finish_reason);
        self.models.push(&r.model);
        self.providers.push(&r.provider);
        self.simulated.push(r.simulated);
        self.input_tokens.push(r.input_tokens);
        self.output_tokens.push(r.output_tokens);
        self.total_tokens.push(r.total_tokens);
        self.estimated.push(r.usage_estimated);
        self.ttft_ms.push(r.time_to_first_token_ms);
        self.duration_ms.push(r.duration_ms);
        self.tokens_per_second.push(r.output_tokens_per_second);
        self.wait_ms.push(r.queue_wait_ms);
        self.cost_usd.push(r.cost_usd);
        self.cached_tokens.push(r.cached_input_tokens);
        self.reasoning_tokens.push(r.reasoning_tokens);
        self.chunks.push(r.stream_chunks);
        self.bytes.push(r.stream_bytes);
        self.itl_p50_ms.push(r.inter_token_p50_ms);
        self.itl_p95_ms.push(r.inter_token_p95_ms);
        self.request_ids.push(r.upstream_request_id.as_deref());
        self.structured.push(r.structured_output.as_ref());
    }

    /// The binds of `WriteBatch`'s `ended` part and the inserts hanging off it, in the
    /// order of their `?`s.
    pub(super) fn binds(&self, now: DateTime<Utc>) -> [Bind<'_>; 47] {
        [
            Bind::Timestamptz(now),
            Bind::Timestamptz(now),
            Bind::Uuids(&self.ids),
            Bind::Int4s(&self.attempts),
            Bind::Texts(&self.statuses),
            Bind::NullableTexts(&self.codes),
            Bind::NullableTexts(&self.messages),
            Bind::NullableInt8s(&self.sequences),
            // the results' job ids are the jobs' ids, in the same order
            Bind::Uuids(&self.ids),
            Bind::Texts(&self.contents),
            Bind::Texts(&self.reasonings),
            Bind::Texts(&self.finishes),
            Bind::Texts(&self.models),
            Bind::Texts(&self.providers),
            Bind::Bools(&self.simulated),
            Bind::Int8s(&self.input_tokens),
            Bind::Int8s(&self.output_tokens),
            Bind::Int8s(&self.total_tokens),
            Bind::Bools(&self.estimated),
            Bind::NullableInt8s(&self.ttft_ms),
            Bind::Int8s(&self.duration_ms),
            Bind::Float8s(&self.tokens_per_second),
            Bind::Int8s(&self.wait_ms),
            Bind::NullableFloat8s(&self.cost_usd),
            Bind::NullableInt8s(&self.cached_tokens),
            Bind::NullableInt8s(&self.reasoning_tokens),
            Bind::Int8s(&self.chunks),
            Bind::Int8s(&self.bytes),
            Bind::NullableFloat8s(&self.itl_p50_ms),
            Bind::NullableFloat8s(&self.itl_p95_ms),
            Bind::NullableTexts(&self.request_ids),
            Bind::NullableJsonbs(&self.structured),
            Bind::Uuids(&self.failed_ids),
            Bind::Int4s(&self.failed_attempts),
            Bind::Texts(&self.failed_codes),
            Bind::Texts(&self.failed_messages),
            Bind::Bools(&self.retryable),
            Bind::Uuids(&self.log_ids),
            Bind::Int8s(&self.log_firsts),
            Bind::Int8s(&self.log_counts),
            Bind::Byteas(&self.log_data),
            Bind::Uuids(&self.progress_ids),
            Bind::Int4s(&self.progress_attempts),
            Bind::Texts(&self.progress_kinds),
            Bind::Texts(&self.progress_names),
            Bind::Timestamptzs(&self.progress_times),
            Bind::Byteas(&self.progress_events),
        ]
    }
}
