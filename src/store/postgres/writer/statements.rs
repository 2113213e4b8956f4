//! The group commit's statement: one constant text that binds one array per column and
//! `unnest`s them, so a batch of any size, with its new jobs, attempt starts and attempt ends
//! and everything those write, is one prepared statement (see [`crate::store::fixed`]) and
//! one round trip, atomic without `BEGIN`/`COMMIT` around it.

use std::collections::HashMap;

use chrono::Utc;
use diesel::{QueryableByName, sql_types::Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::{
    End,
    columns::{EndColumns, InsertColumns},
};
use crate::{
    job::JobId,
    store::{
        Error,
        models::{JobRow, NewJobRow},
        postgres::fixed::{Bind, Fixed, Sql},
    },
};

/// Rows the statement returns, by job id.
pub(super) type Rows = HashMap<JobId, JobRow>;

/// The columns every part of the statement returns (those of [`JobRow`]), with the prompt as
/// `$messages`.
macro_rules! returned {
    ($messages:literal) => {
        concat!(
            "id, status, job_type, priority, queue, ",
            $messages,
            " AS messages, params, model, streaming_mode, metadata, idempotency_key, attempts, \
             max_attempts, error_code, error_message, last_sequence, created_at, enqueued_at, \
             started_at, finished_at, updated_at, timeout_secs, forgotten_at, tags, batch_id, \
             tenant, trace_context"
        )
    };
}

/// One batch, in three parts on distinct jobs (the writer never puts two writes of one job in
/// a batch):
///
/// - `inserted`: new jobs. A job's tags (an array per row, which `unnest` cannot carry) are
///   the slice `[tags_from:tags_to]` (1-based, inclusive; empty when `from > to`) of one flat
///   array. The prompt is not sent back: the caller has it.
/// - `started`: attempt starts; QUEUED or RUNNING becomes RUNNING with one more attempt (a
///   terminal or unknown job is left out).
/// - `ended`: attempt ends, fenced: only a job still RUNNING the same attempt ends, and only
///   for those jobs are the result, failure record, event log and progress history inserted
///   (a stale attempt writes nothing).
///
/// Each returned row says which part (`written`) it comes from.
struct WriteBatch;
impl Sql for WriteBatch {
    const SQL: &'static str = concat!(
        "WITH inserted AS ( \
           INSERT INTO jobs (id, status, job_type, priority, queue, messages, params, model, \
             streaming_mode, metadata, idempotency_key, max_attempts, timeout_secs, tags, \
             tenant, discard_prompt, trace_context) \
           SELECT v.id, v.status, v.job_type, v.priority, v.queue, v.messages, v.params, \
             v.model, v.streaming_mode, v.metadata, v.idempotency_key, v.max_attempts, \
             v.timeout_secs, coalesce(t.flat[v.tags_from:v.tags_to], '{}'), v.tenant, \
             v.discard_prompt, v.trace_context \
           FROM (SELECT ?::text[] AS flat) AS t, \
             unnest(?::uuid[], ?::text[], ?::text[], ?::text[], ?::text[], ?::jsonb[], \
               ?::jsonb[], ?::text[], ?::text[], ?::jsonb[], ?::text[], ?::int4[], ?::int4[], \
               ?::int4[], ?::int4[], ?::text[], ?::bool[], ?::text[]) \
             AS v(id, status, job_type, priority, queue, messages, params, model, \
               streaming_mode, metadata, idempotency_key, max_attempts, timeout_secs, \
               tags_from, tags_to, tenant, discard_prompt, trace_context) \
           RETURNING ",
        returned!("'[]'::jsonb"),
        "), \
         started AS ( \
           UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = ?, \
             updated_at = ? \
           WHERE id = ANY(?::uuid[]) AND status IN ('queued', 'running') \
           RETURNING ",
        returned!("messages"),
        "), \
         ended AS ( \
           UPDATE jobs SET status = e.end_status, error_code = e.end_code, \
             error_message = e.end_message, \
             last_sequence = coalesce(e.end_sequence, jobs.last_sequence), finished_at = ?, \
             updated_at = ? \
           FROM unnest(?::uuid[], ?::int4[], ?::text[], ?::text[], ?::text[], ?::int8[]) \
             AS e(end_id, end_attempt, end_status, end_code, end_message, end_sequence) \
           WHERE jobs.id = e.end_id AND jobs.status = 'running' \
             AND jobs.attempts = e.end_attempt \
           RETURNING ",
        returned!("jobs.messages"),
        "), \
         results AS ( \
           INSERT INTO job_results (job_id, content, reasoning_content, finish_reason, model, \
             provider, simulated, input_tokens, output_tokens, total_tokens, usage_estimated, \
             time_to_first_token_ms, duration_ms, output_tokens_per_second, queue_wait_ms, \
             cost_usd, cached_input_tokens, reasoning_tokens, stream_chunks, stream_bytes, \
             inter_token_p50_ms, inter_token_p95_ms, upstream_request_id, structured_output) \
           SELECT r.* FROM unnest(?::uuid[], ?::text[], ?::text[], ?::text[], ?::text[], \
             ?::text[], ?::bool[], ?::int8[], ?::int8[], ?::int8[], ?::bool[], ?::int8[], \
             ?::int8[], ?::float8[], ?::int8[], ?::float8[], ?::int8[], ?::int8[], ?::int8[], \
             ?::int8[], ?::float8[], ?::float8[], ?::text[], ?::jsonb[]) \
             AS r(job_id, content, reasoning_content, finish_reason, model, provider, \
               simulated, input_tokens, output_tokens, total_tokens, usage_estimated, \
               time_to_first_token_ms, duration_ms, output_tokens_per_second, queue_wait_ms, \
               cost_usd, cached_input_tokens, reasoning_tokens, stream_chunks, stream_bytes, \
               inter_token_p50_ms, inter_token_p95_ms, upstream_request_id, structured_output) \
           WHERE r.job_id IN (SELECT id FROM ended)), \
         failures AS ( \
           INSERT INTO job_attempt_failures (job_id, attempt, error_code, message, retryable) \
           SELECT f.* FROM unnest(?::uuid[], ?::int4[], ?::text[], ?::text[], ?::bool[]) \
             AS f(job_id, attempt, error_code, message, retryable) \
           WHERE f.job_id IN (SELECT id FROM ended) \
           ON CONFLICT DO NOTHING), \
         logs AS ( \
           INSERT INTO job_event_logs (job_id, first_sequence, event_count, events) \
           SELECT l.* FROM unnest(?::uuid[], ?::int8[], ?::int8[], ?::bytea[]) \
             AS l(job_id, first_sequence, event_count, events) \
           WHERE l.job_id IN (SELECT id FROM ended) \
           ON CONFLICT (job_id) DO UPDATE SET first_sequence = excluded.first_sequence, \
             event_count = excluded.event_count, events = excluded.events), \
         progress AS ( \
           INSERT INTO job_progress_events (job_id, attempt, kind, name, time, event) \
           SELECT p.* FROM unnest(?::uuid[], ?::int4[], ?::text[], ?::text[], \
             ?::timestamptz[], ?::bytea[]) AS p(job_id, attempt, kind, name, time, event) \
           WHERE p.job_id IN (SELECT id FROM ended)) \
         SELECT 'inserted' AS written, * FROM inserted \
         UNION ALL SELECT 'started', * FROM started \
         UNION ALL SELECT 'ended', * FROM ended"
    );
}

/// A row of [`WriteBatch`]'s answer.
#[derive(QueryableByName)]
struct Written {
    /// `inserted`, `started` or `ended`.
    #[diesel(sql_type = Text)]
    written: String,
    #[diesel(embed)]
    row: JobRow,
}

/// What one batch wrote: the rows of the jobs inserted (with an empty prompt), started and
/// ended, by job id. A start or end that did not apply (see [`WriteBatch`]) has no row.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) inserted: Rows,
    pub(super) started: Rows,
    pub(super) ended: Rows,
}

/// Writes one batch (new jobs, attempt starts, attempt ends; each job at most once) with one
/// statement.
pub(super) async fn write<'a>(
    conn: &mut AsyncPgConnection,
    inserts: impl IntoIterator<Item = &'a NewJobRow>,
    starts: impl IntoIterator<Item = JobId>,
    ends: impl IntoIterator<Item = &'a End>,
) -> Result<Batch, Error> {
    let inserts = InsertColumns::new(inserts.into_iter().collect());
    let starts: Vec<JobId> = starts.into_iter().collect();
    let mut e = EndColumns::default();
    ends.into_iter().for_each(|end| e.push(end));
    if inserts.ids.is_empty() && starts.is_empty() && e.ids.is_empty() {
        return Ok(Batch::default());
    }
    let now = Utc::now();
    let mut binds = Vec::with_capacity(72);
    binds.extend(inserts.binds());
    binds.extend([
        Bind::Timestamptz(now),
        Bind::Timestamptz(now),
        Bind::Uuids(&starts),
    ]);
    binds.extend(e.binds(now));
    let rows: Vec<Written> = Fixed::<WriteBatch>::new(&binds).load(conn).await?;
    let mut batch = Batch::default();
    for Written { written, row } in rows {
        let part = match written.as_str() {
            "inserted" => &mut batch.inserted,
            "started" => &mut batch.started,
            _ => &mut batch.ended,
        };
        part.insert(row.id, row);
    }
    Ok(batch)
}
