//! The source's rows, read with diesel's blocking calls (diesel-async's are for the target).

use std::path::Path;

use diesel::{QueryDsl, QueryResult, RunQueryDsl, SelectableHelper, SqliteConnection};

use super::super::{
    connect,
    rows::{JobRow, ResultRow},
    schema as lite,
};
use crate::store::Error;

pub(super) type BatchRow = (String, String, String, Option<String>, i64, String);
pub(super) type FailureRow = (String, i32, String, String, bool, i64);
pub(super) type ProgressRow = (String, i32, String, String, i64, Vec<u8>);
pub(super) type LogRow = (String, i64, i64, Vec<u8>);
pub(super) type KeyRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    Option<i32>,
    Option<i32>,
    i64,
    Option<i64>,
);
pub(super) type AuditRow = (i64, String, String, String, String, String, String, String);

/// Everything the source holds.
pub(super) struct Source {
    pub(super) batches: Vec<BatchRow>,
    pub(super) jobs: Vec<(JobRow, bool)>,
    pub(super) results: Vec<ResultRow>,
    pub(super) failures: Vec<FailureRow>,
    pub(super) progress: Vec<ProgressRow>,
    pub(super) logs: Vec<LogRow>,
    pub(super) keys: Vec<KeyRow>,
    pub(super) audit: Vec<AuditRow>,
}

/// Everything the store at `path` holds.
pub(super) fn read(path: &Path) -> Result<Source, Error> {
    let conn = &mut connect(path)?;
    Ok(Source {
        batches: lite::batches::table
            .order(lite::batches::id)
            .select((
                lite::batches::id,
                lite::batches::display_name,
                lite::batches::metadata,
                lite::batches::idempotency_key,
                lite::batches::created_at,
                lite::batches::tenant,
            ))
            .load(conn)?,
        jobs: lite::jobs::table
            .order(lite::jobs::id)
            .select((JobRow::as_select(), lite::jobs::discard_prompt))
            .load(conn)?,
        results: lite::job_results::table
            .order(lite::job_results::job_id)
            .select(ResultRow::as_select())
            .load(conn)?,
        failures: failures(conn)?,
        progress: progress(conn)?,
        logs: lite::job_event_logs::table
            .order(lite::job_event_logs::job_id)
            .select((
                lite::job_event_logs::job_id,
                lite::job_event_logs::first_sequence,
                lite::job_event_logs::event_count,
                lite::job_event_logs::events,
            ))
            .load(conn)?,
        keys: keys(conn)?,
        audit: audit(conn)?,
    })
}

/// The failed attempts, by job and attempt.
fn failures(conn: &mut SqliteConnection) -> QueryResult<Vec<FailureRow>> {
    lite::job_attempt_failures::table
        .order((
            lite::job_attempt_failures::job_id,
            lite::job_attempt_failures::attempt,
        ))
        .select((
            lite::job_attempt_failures::job_id,
            lite::job_attempt_failures::attempt,
            lite::job_attempt_failures::error_code,
            lite::job_attempt_failures::message,
            lite::job_attempt_failures::retryable,
            lite::job_attempt_failures::created_at,
        ))
        .load(conn)
}

/// The progress history, in its order.
fn progress(conn: &mut SqliteConnection) -> QueryResult<Vec<ProgressRow>> {
    lite::job_progress_events::table
        .order(lite::job_progress_events::id)
        .select((
            lite::job_progress_events::job_id,
            lite::job_progress_events::attempt,
            lite::job_progress_events::kind,
            lite::job_progress_events::name,
            lite::job_progress_events::time,
            lite::job_progress_events::event,
        ))
        .load(conn)
}

/// The API keys, oldest first.
fn keys(conn: &mut SqliteConnection) -> QueryResult<Vec<KeyRow>> {
    lite::api_keys::table
        .order(lite::api_keys::created_at)
        .select((
            lite::api_keys::id,
            lite::api_keys::prefix,
            lite::api_keys::secret_sha256,
            lite::api_keys::tenant,
            lite::api_keys::role,
            lite::api_keys::name,
            lite::api_keys::requests_per_minute,
            lite::api_keys::max_concurrent_jobs,
            lite::api_keys::created_at,
            lite::api_keys::revoked_at,
        ))
        .load(conn)
}

/// The audit log, in its order.
fn audit(conn: &mut SqliteConnection) -> QueryResult<Vec<AuditRow>> {
    lite::audit_events::table
        .order(lite::audit_events::id)
        .select((
            lite::audit_events::time,
            lite::audit_events::actor,
            lite::audit_events::tenant,
            lite::audit_events::action,
            lite::audit_events::target,
            lite::audit_events::peer,
            lite::audit_events::outcome,
            lite::audit_events::detail,
        ))
        .load(conn)
}
