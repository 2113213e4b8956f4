//! Row types of the SQLite tables and their mapping to the Postgres row types in
//! [`crate::store::models`], whose conversions to the domain types are then shared: a SQLite
//! row is a Postgres row with text ids, integer times (µs since the Unix epoch) and JSON text.

// Row fields mirror the columns in `migrations/sqlite/`, which document them.
#![allow(missing_docs)]

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::{job_results, jobs};
use crate::store::{Error, models};

/// Microseconds since the Unix epoch: how the SQLite store keeps a time.
pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The time `us` microseconds after the Unix epoch. Errors: [`Error::Corrupt`] when out of
/// chrono's range (a manual edit).
pub fn time(us: i64) -> Result<DateTime<Utc>, Error> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| Error::Corrupt(format!("time {us} µs is out of range")))
}

/// [`time`] of a nullable column.
pub fn time_opt(us: Option<i64>) -> Result<Option<DateTime<Utc>>, Error> {
    us.map(time).transpose()
}

/// A UUID from its text column. Errors: [`Error::Corrupt`].
pub fn uuid(text: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(text).map_err(|e| Error::Corrupt(format!("id {text:?}: {e}")))
}

/// JSON from its text column. Errors: [`Error::Corrupt`] naming `what`.
pub fn json(text: &str, what: &str) -> Result<serde_json::Value, Error> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

/// A row of `jobs`.
#[derive(Queryable, Selectable, Debug)]
#[diesel(table_name = jobs, check_for_backend(diesel::sqlite::Sqlite))]
pub struct JobRow {
    pub id: String,
    pub status: String,
    pub job_type: String,
    pub priority: String,
    pub queue: String,
    pub messages: String,
    pub params: String,
    pub model: String,
    pub streaming_mode: String,
    pub metadata: String,
    pub idempotency_key: Option<String>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub last_sequence: i64,
    pub created_at: i64,
    pub enqueued_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub updated_at: i64,
    pub timeout_secs: Option<i32>,
    pub forgotten_at: Option<i64>,
    pub tags: String,
    pub batch_id: Option<String>,
    pub tenant: String,
    pub trace_context: Option<String>,
}

/// A row of `jobs` for listings: every column but the prompt (`messages`).
#[derive(Queryable, Selectable, Debug)]
#[diesel(table_name = jobs, check_for_backend(diesel::sqlite::Sqlite))]
pub struct ListedJobRow {
    pub id: String,
    pub status: String,
    pub job_type: String,
    pub priority: String,
    pub queue: String,
    /// The prompt is left out (read as an empty list): listings do not show it.
    #[diesel(
        select_expression = diesel::dsl::sql::<diesel::sql_types::Text>("'[]'"),
        select_expression_type = diesel::expression::SqlLiteral<diesel::sql_types::Text>
    )]
    pub messages: String,
    pub params: String,
    pub model: String,
    pub streaming_mode: String,
    pub metadata: String,
    pub idempotency_key: Option<String>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub last_sequence: i64,
    pub created_at: i64,
    pub enqueued_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub updated_at: i64,
    pub timeout_secs: Option<i32>,
    pub forgotten_at: Option<i64>,
    pub tags: String,
    pub batch_id: Option<String>,
    pub tenant: String,
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

impl TryFrom<JobRow> for models::JobRow {
    type Error = Error;

    fn try_from(r: JobRow) -> Result<models::JobRow, Error> {
        let what = |column: &str| format!("job {} {column}", r.id);
        let tags: Vec<String> = serde_json::from_str(&r.tags)
            .map_err(|e| Error::Corrupt(format!("{}: {e}", what("tags"))))?;
        Ok(models::JobRow {
            id: uuid(&r.id)?,
            messages: json(&r.messages, &what("messages"))?,
            params: json(&r.params, &what("params"))?,
            metadata: json(&r.metadata, &what("metadata"))?,
            created_at: time(r.created_at)?,
            enqueued_at: time(r.enqueued_at)?,
            started_at: time_opt(r.started_at)?,
            finished_at: time_opt(r.finished_at)?,
            updated_at: time(r.updated_at)?,
            forgotten_at: time_opt(r.forgotten_at)?,
            batch_id: r.batch_id.as_deref().map(uuid).transpose()?,
            tags,
            status: r.status,
            job_type: r.job_type,
            priority: r.priority,
            queue: r.queue,
            model: r.model,
            streaming_mode: r.streaming_mode,
            idempotency_key: r.idempotency_key,
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            error_code: r.error_code,
            error_message: r.error_message,
            last_sequence: r.last_sequence,
            timeout_secs: r.timeout_secs,
            tenant: r.tenant,
            trace_context: r.trace_context,
        })
    }
}

impl TryFrom<JobRow> for crate::job::Job {
    type Error = Error;

    fn try_from(r: JobRow) -> Result<crate::job::Job, Error> {
        models::JobRow::try_from(r)?.try_into()
    }
}

/// A new row of `jobs`.
#[derive(Insertable, Debug)]
#[diesel(table_name = jobs)]
pub struct NewJobRow {
    pub id: String,
    pub status: &'static str,
    pub job_type: String,
    pub priority: &'static str,
    pub queue: String,
    pub messages: String,
    pub params: String,
    pub model: String,
    pub streaming_mode: &'static str,
    pub metadata: String,
    pub idempotency_key: Option<String>,
    pub max_attempts: i32,
    pub timeout_secs: Option<i32>,
    pub tags: String,
    pub tenant: String,
    pub discard_prompt: bool,
    pub trace_context: Option<String>,
    pub batch_id: Option<String>,
    pub created_at: i64,
    pub enqueued_at: i64,
    pub updated_at: i64,
}

impl NewJobRow {
    /// Row for a validated job created at `now`, in batch `batch` when given.
    pub fn from_new(job: &crate::job::NewJob, batch: Option<Uuid>, now: DateTime<Utc>) -> Self {
        let r = models::NewJobRow::from_new(job);
        let now = micros(now);
        NewJobRow {
            id: r.id.to_string(),
            status: r.status,
            job_type: r.job_type,
            priority: r.priority,
            queue: r.queue,
            messages: r.messages.to_string(),
            params: r.params.to_string(),
            model: r.model,
            streaming_mode: r.streaming_mode,
            metadata: r.metadata.to_string(),
            idempotency_key: r.idempotency_key,
            max_attempts: r.max_attempts,
            timeout_secs: r.timeout_secs,
            tags: serde_json::Value::from(r.tags).to_string(),
            tenant: r.tenant,
            discard_prompt: r.discard_prompt,
            trace_context: r.trace_context,
            batch_id: batch.map(|b| b.to_string()),
            created_at: now,
            enqueued_at: now,
            updated_at: now,
        }
    }
}

/// A row of `job_results`.
#[derive(Queryable, Selectable, Insertable, Debug)]
#[diesel(table_name = job_results, check_for_backend(diesel::sqlite::Sqlite))]
pub struct ResultRow {
    pub job_id: String,
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
    pub created_at: i64,
    pub cost_usd: Option<f64>,
    pub cached_input_tokens: Option<i64>,
    pub reasoning_tokens: Option<i64>,
    pub stream_chunks: i64,
    pub stream_bytes: i64,
    pub inter_token_p50_ms: Option<f64>,
    pub inter_token_p95_ms: Option<f64>,
    pub upstream_request_id: Option<String>,
    pub structured_output: Option<String>,
}

impl ResultRow {
    /// Row for a job's final outcome, written at `now`.
    pub fn from_outcome(job_id: Uuid, o: &crate::job::Outcome, now: DateTime<Utc>) -> Self {
        let r = models::ResultRow::from_outcome(job_id, o);
        ResultRow {
            job_id: job_id.to_string(),
            content: r.content,
            reasoning_content: r.reasoning_content,
            finish_reason: r.finish_reason,
            model: r.model,
            provider: r.provider,
            simulated: r.simulated,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            total_tokens: r.total_tokens,
            usage_estimated: r.usage_estimated,
            time_to_first_token_ms: r.time_to_first_token_ms,
            duration_ms: r.duration_ms,
            output_tokens_per_second: r.output_tokens_per_second,
            queue_wait_ms: r.queue_wait_ms,
            created_at: micros(now),
            cost_usd: r.cost_usd,
            cached_input_tokens: r.cached_input_tokens,
            reasoning_tokens: r.reasoning_tokens,
            stream_chunks: r.stream_chunks,
            stream_bytes: r.stream_bytes,
            inter_token_p50_ms: r.inter_token_p50_ms,
            inter_token_p95_ms: r.inter_token_p95_ms,
            upstream_request_id: r.upstream_request_id,
            structured_output: r.structured_output.map(|v| v.to_string()),
        }
    }
}

impl From<ResultRow> for crate::job::Outcome {
    fn from(r: ResultRow) -> crate::job::Outcome {
        // The job id is not part of an outcome.
        r.into_postgres(Uuid::nil()).into()
    }
}

impl ResultRow {
    /// The same row as the Postgres store keeps it, for job `job_id` (its `created_at` is
    /// not part of that row type).
    pub fn into_postgres(self, job_id: Uuid) -> models::ResultRow {
        let r = self;
        models::ResultRow {
            job_id,
            content: r.content,
            reasoning_content: r.reasoning_content,
            finish_reason: r.finish_reason,
            model: r.model,
            provider: r.provider,
            simulated: r.simulated,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            total_tokens: r.total_tokens,
            usage_estimated: r.usage_estimated,
            time_to_first_token_ms: r.time_to_first_token_ms,
            duration_ms: r.duration_ms,
            output_tokens_per_second: r.output_tokens_per_second,
            queue_wait_ms: r.queue_wait_ms,
            cost_usd: r.cost_usd,
            cached_input_tokens: r.cached_input_tokens,
            reasoning_tokens: r.reasoning_tokens,
            stream_chunks: r.stream_chunks,
            stream_bytes: r.stream_bytes,
            inter_token_p50_ms: r.inter_token_p50_ms,
            inter_token_p95_ms: r.inter_token_p95_ms,
            upstream_request_id: r.upstream_request_id,
            structured_output: r
                .structured_output
                .and_then(|s| serde_json::from_str(&s).ok()),
        }
    }
}
