//! Row types of the Postgres tables and their mapping to the domain types in `job`.

// Row fields mirror the columns in `migrations/`, which document them.
#![allow(missing_docs)]

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::{Error, schema::*};
use crate::job::{
    ChatMessage, GenerationParams, Job, JobError, JobStatus, NewJob, Outcome, Priority,
    StreamingMode, Usage,
};

/// A row of `jobs`.
#[derive(Queryable, QueryableByName, Selectable, Insertable, Debug)]
#[diesel(table_name = jobs, check_for_backend(diesel::pg::Pg))]
pub struct JobRow {
    pub id: Uuid,
    pub status: String,
    pub job_type: String,
    pub priority: String,
    pub queue: String,
    pub messages: serde_json::Value,
    pub params: serde_json::Value,
    pub model: String,
    pub streaming_mode: String,
    pub metadata: serde_json::Value,
    pub idempotency_key: Option<String>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub last_sequence: i64,
    pub created_at: DateTime<Utc>,
    pub enqueued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub timeout_secs: Option<i32>,
    pub forgotten_at: Option<DateTime<Utc>>,
    pub tags: Vec<String>,
    pub batch_id: Option<Uuid>,
    pub tenant: String,
    /// The submitting call's W3C trace context (see [`NewJob::trace_context`]).
    pub trace_context: Option<String>,
}

/// A new row of `jobs`.
#[derive(Insertable, Debug)]
#[diesel(table_name = jobs)]
pub struct NewJobRow {
    pub id: Uuid,
    pub status: &'static str,
    pub job_type: String,
    pub priority: &'static str,
    pub queue: String,
    pub messages: serde_json::Value,
    pub params: serde_json::Value,
    pub model: String,
    pub streaming_mode: &'static str,
    pub metadata: serde_json::Value,
    pub idempotency_key: Option<String>,
    pub max_attempts: i32,
    pub timeout_secs: Option<i32>,
    pub tags: Vec<String>,
    pub tenant: String,
    pub discard_prompt: bool,
    pub trace_context: Option<String>,
}

/// A row of `job_results`.
#[derive(Queryable, Selectable, Insertable, Debug)]
#[diesel(table_name = job_results, check_for_backend(diesel::pg::Pg))]
pub struct ResultRow {
    pub job_id: Uuid,
    pub content: String,
    pub reasoning_content: String,
    pub finish_reason: String,
    pub model: String,
    pub provider: String,
    pub simulated: bool,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub total_tokens: i64,
    pub usage_estimated: bool,
    pub time_to_first_token_ms: Option<i64>,
    pub duration_ms: i64,
    pub output_tokens_per_second: f64,
    pub queue_wait_ms: i64,
    pub cost_usd: Option<f64>,
    pub cached_input_tokens: Option<i64>,
    pub reasoning_tokens: Option<i64>,
    pub stream_chunks: i64,
    pub stream_bytes: i64,
    pub inter_token_p50_ms: Option<f64>,
    pub inter_token_p95_ms: Option<f64>,
    pub upstream_request_id: Option<String>,
    pub structured_output: Option<serde_json::Value>,
}

/// A row of `job_progress_events` to insert.
#[derive(Insertable, Debug)]
#[diesel(table_name = job_progress_events)]
pub struct NewProgressRow {
    pub job_id: Uuid,
    pub attempt: i32,
    pub kind: &'static str,
    pub name: String,
    pub time: chrono::DateTime<chrono::Utc>,
    pub event: Vec<u8>,
}

/// A row of `job_attempt_failures`.
#[derive(Insertable, Debug)]
#[diesel(table_name = job_attempt_failures)]
pub struct AttemptFailureRow<'a> {
    pub job_id: Uuid,
    pub attempt: i32,
    pub error_code: &'a str,
    pub message: &'a str,
    pub retryable: bool,
}

impl NewProgressRow {
    /// Rows of job `id`'s history for `records` (stage changes and milestones), in order; an
    /// entry without a time is stamped now.
    pub fn from_events(id: Uuid, records: &[crate::progress::ProgressRecord]) -> Vec<Self> {
        use crate::progress::ProgressEventKind as Kind;
        records
            .iter()
            .map(|r| {
                let (kind, name, attempt) = match &r.event.kind {
                    Kind::StageChanged(c) => (
                        "stage_changed",
                        c.current.map(|s| s.stage.name()).unwrap_or_default(),
                        c.attempt,
                    ),
                    Kind::Milestone(m) => ("milestone", m.kind.name(), m.attempt),
                };
                NewProgressRow {
                    job_id: id,
                    attempt: i32::try_from(attempt).unwrap_or(i32::MAX),
                    kind,
                    name: name.to_owned(),
                    time: r.event.time.unwrap_or_else(chrono::Utc::now),
                    event: r.encoded.clone(),
                }
            })
            .collect()
    }
}

fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    // Serialising plain data structs (strings, numbers, maps) cannot fail.
    serde_json::to_value(value).expect("plain data serialises to JSON")
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl NewJobRow {
    /// Row for a validated job.
    pub fn from_new(job: &NewJob) -> NewJobRow {
        NewJobRow {
            id: job.id,
            status: JobStatus::Queued.as_str(),
            job_type: job.job_type.clone(),
            priority: job.priority.as_str(),
            queue: job.queue.clone(),
            messages: json(&job.messages),
            params: json(&job.params),
            model: job.params.model.clone(),
            streaming_mode: job.streaming_mode.as_str(),
            metadata: json(&job.metadata),
            idempotency_key: job.idempotency_key.clone(),
            max_attempts: i32::try_from(job.max_attempts).unwrap_or(i32::MAX),
            timeout_secs: job
                .timeout
                .map(|t| i32::try_from(t.as_secs()).unwrap_or(i32::MAX)),
            tags: job.tags.clone(),
            tenant: job.tenant.clone(),
            discard_prompt: job.discard_prompt,
            trace_context: job.trace_context.clone(),
        }
    }
}

/// A row of `jobs` for listings: every column but the prompt (`messages`).
#[derive(Queryable, Selectable, Debug)]
#[diesel(table_name = jobs, check_for_backend(diesel::pg::Pg))]
pub struct ListedJobRow {
    pub id: Uuid,
    pub status: String,
    pub job_type: String,
    pub priority: String,
    pub queue: String,
    /// The prompt is left out (read as an empty list): listings do not show it, and a page
    /// of jobs with large prompts would otherwise cost their whole size in memory.
    #[diesel(
        select_expression = diesel::dsl::sql::<diesel::sql_types::Jsonb>("'[]'::jsonb"),
        select_expression_type = diesel::expression::SqlLiteral<diesel::sql_types::Jsonb>
    )]
    pub messages: serde_json::Value,
    pub params: serde_json::Value,
    pub model: String,
    pub streaming_mode: String,
    pub metadata: serde_json::Value,
    pub idempotency_key: Option<String>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub last_sequence: i64,
    pub created_at: DateTime<Utc>,
    pub enqueued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub timeout_secs: Option<i32>,
    pub forgotten_at: Option<DateTime<Utc>>,
    pub tags: Vec<String>,
    pub batch_id: Option<Uuid>,
    pub tenant: String,
    /// The submitting call's W3C trace context (see [`NewJob::trace_context`]).
    pub trace_context: Option<String>,
}

impl From<ListedJobRow> for JobRow {
    fn from(r: ListedJobRow) -> JobRow {
        JobRow {
            id: r.id,
            status: r.status,
            job_type: r.job_type,
            priority: r.priority,
            queue: r.queue,
            messages: r.messages,
            params: r.params,
            model: r.model,
            streaming_mode: r.streaming_mode,
            metadata: r.metadata,
            idempotency_key: r.idempotency_key,
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            error_code: r.error_code,
            error_message: r.error_message,
            last_sequence: r.last_sequence,
            created_at: r.created_at,
            enqueued_at: r.enqueued_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            updated_at: r.updated_at,
            timeout_secs: r.timeout_secs,
            forgotten_at: r.forgotten_at,
            tags: r.tags,
            batch_id: r.batch_id,
            tenant: r.tenant,
            trace_context: r.trace_context,
        }
    }
}

impl TryFrom<JobRow> for Job {
    type Error = Error;

    fn try_from(row: JobRow) -> Result<Job, Error> {
        let corrupt = |what: &str| Error::Corrupt(format!("job {}: bad {what}", row.id));
        let status = JobStatus::parse(&row.status).ok_or_else(|| corrupt("status"))?;
        let priority = Priority::parse(&row.priority).ok_or_else(|| corrupt("priority"))?;
        let messages: Vec<ChatMessage> =
            serde_json::from_value(row.messages.clone()).map_err(|_| corrupt("messages"))?;
        let params: GenerationParams =
            serde_json::from_value(row.params.clone()).map_err(|_| corrupt("params"))?;
        let metadata: BTreeMap<String, String> =
            serde_json::from_value(row.metadata.clone()).map_err(|_| corrupt("metadata"))?;
        let error = match (row.error_code, row.error_message) {
            (Some(code), message) => Some(JobError {
                code,
                message: message.unwrap_or_default(),
            }),
            _ => None,
        };
        Ok(Job {
            id: row.id,
            status,
            job_type: row.job_type,
            priority,
            queue: row.queue,
            messages,
            params,
            streaming_mode: StreamingMode::parse(&row.streaming_mode),
            metadata,
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            max_attempts: u32::try_from(row.max_attempts).unwrap_or(0),
            timeout: row
                .timeout_secs
                .and_then(|s| u64::try_from(s).ok())
                .map(std::time::Duration::from_secs),
            tags: row.tags,
            batch_id: row.batch_id,
            error,
            last_sequence: u64::try_from(row.last_sequence).unwrap_or(0),
            created_at: row.created_at,
            enqueued_at: row.enqueued_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            tenant: row.tenant,
            trace_context: row.trace_context,
        })
    }
}

impl ResultRow {
    /// Row for a job's final outcome.
    pub fn from_outcome(job_id: Uuid, o: &Outcome) -> ResultRow {
        ResultRow {
            job_id,
            content: o.content.clone(),
            reasoning_content: o.reasoning_content.clone(),
            finish_reason: o.finish_reason.clone(),
            model: o.model.clone(),
            provider: o.provider.clone(),
            simulated: o.simulated,
            input_tokens: saturating_i64(o.usage.input_tokens),
            output_tokens: saturating_i64(o.usage.output_tokens),
            total_tokens: saturating_i64(o.usage.total_tokens),
            usage_estimated: o.usage.estimated,
            time_to_first_token_ms: o.time_to_first_token_ms.map(saturating_i64),
            duration_ms: saturating_i64(o.duration_ms),
            output_tokens_per_second: o.output_tokens_per_second,
            queue_wait_ms: saturating_i64(o.queue_wait_ms),
            cost_usd: o.cost_usd,
            cached_input_tokens: o.usage.cached_input_tokens.map(saturating_i64),
            reasoning_tokens: o.usage.reasoning_tokens.map(saturating_i64),
            stream_chunks: saturating_i64(o.streaming.chunks),
            stream_bytes: saturating_i64(o.streaming.bytes),
            inter_token_p50_ms: o.streaming.inter_token_p50_ms,
            inter_token_p95_ms: o.streaming.inter_token_p95_ms,
            upstream_request_id: o.upstream_request_id.clone(),
            structured_output: o
                .structured
                .as_ref()
                .and_then(|so| serde_json::to_value(so).ok()),
        }
    }
}

impl From<ResultRow> for Outcome {
    fn from(r: ResultRow) -> Outcome {
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        Outcome {
            content: r.content,
            reasoning_content: r.reasoning_content,
            finish_reason: r.finish_reason,
            model: r.model,
            provider: r.provider,
            simulated: r.simulated,
            usage: Usage {
                input_tokens: u(r.input_tokens),
                output_tokens: u(r.output_tokens),
                total_tokens: u(r.total_tokens),
                estimated: r.usage_estimated,
                cached_input_tokens: r.cached_input_tokens.map(u),
                reasoning_tokens: r.reasoning_tokens.map(u),
            },
            time_to_first_token_ms: r.time_to_first_token_ms.map(u),
            duration_ms: u(r.duration_ms),
            output_tokens_per_second: r.output_tokens_per_second,
            queue_wait_ms: u(r.queue_wait_ms),
            cost_usd: r.cost_usd,
            streaming: crate::job::StreamingStats {
                chunks: u(r.stream_chunks),
                bytes: u(r.stream_bytes),
                inter_token_p50_ms: r.inter_token_p50_ms,
                inter_token_p95_ms: r.inter_token_p95_ms,
            },
            upstream_request_id: r.upstream_request_id,
            structured: r
                .structured_output
                .and_then(|v| serde_json::from_value(v).ok()),
        }
    }
}
