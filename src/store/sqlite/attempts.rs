//! [`AttemptStore`] on SQLite: each start and end is one fixed statement ([`super::fixed`])
//! fenced on the job's status and attempt, written through the group commit.

use async_trait::async_trait;
use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl, SelectableHelper, SqliteConnection};
use tracing::instrument;

use super::{
    SqliteStore,
    fixed::{Bind, Fixed, Sql},
    key,
    rows::{JobRow, ResultRow, micros},
    schema::{job_attempt_failures, job_results, jobs},
    to_i32,
};
use crate::{
    events::archive::Archive,
    job::{Job, JobError, JobId, JobStatus},
    progress::ProgressRecord,
    store::{AttemptStore, Error, Finish},
};

/// An attempt's start: binds `started_at`, `updated_at` (µs), `id`. Matches an unfinished
/// job only (a lost attempt's job is `running` and starts again).
struct StartAttempt;
impl Sql for StartAttempt {
    const SQL: &'static str = "UPDATE jobs SET status = 'running', attempts = attempts + 1, \
         started_at = ?, updated_at = ? WHERE id = ? AND status IN ('queued', 'running')";
}

/// An attempt's end: binds `status`, `error_code`, `error_message`, `finished_at`,
/// `updated_at` (µs), the terminal event's sequence (NULL keeps `last_sequence`), `id`, and
/// the attempt's number, which must still be the job's (fencing a lost attempt's late end).
struct EndAttempt;
impl Sql for EndAttempt {
    const SQL: &'static str = "UPDATE jobs SET status = ?, error_code = ?, error_message = ?, \
         finished_at = ?, updated_at = ?, last_sequence = coalesce(?, last_sequence) \
         WHERE id = ? AND status = 'running' AND attempts = ?";
}

/// Records a failed attempt (a second record of the same attempt is ignored).
fn insert_failure(
    conn: &mut SqliteConnection,
    id: JobId,
    attempt: u32,
    error: &JobError,
    retryable: bool,
) -> Result<(), Error> {
    diesel::insert_into(job_attempt_failures::table)
        .values((
            job_attempt_failures::job_id.eq(key(id)),
            job_attempt_failures::attempt.eq(to_i32(attempt)),
            job_attempt_failures::error_code.eq(&error.code),
            job_attempt_failures::message.eq(&error.message),
            job_attempt_failures::retryable.eq(retryable),
            job_attempt_failures::created_at.eq(micros(chrono::Utc::now())),
        ))
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(())
}

#[async_trait]
impl AttemptStore for SqliteStore {
    #[instrument(skip_all, fields(job_id = %id))]
    async fn start_attempt(&self, id: JobId) -> Result<Option<Job>, Error> {
        self.write(move |conn| {
            let now = micros(chrono::Utc::now());
            let id = key(id);
            let binds = [Bind::BigInt(now), Bind::BigInt(now), Bind::Text(&id)];
            if Fixed::<StartAttempt>::new(&binds).execute(conn)? == 0 {
                return Ok(None);
            }
            let row: JobRow = jobs::table
                .find(&id)
                .select(JobRow::as_select())
                .get_result(conn)?;
            Ok(Some(Job::try_from(row)?))
        })
        .await
    }

    #[instrument(skip_all, fields(job_id = %id, attempt))]
    async fn finish_attempt(
        &self,
        id: JobId,
        attempt: u32,
        finish: Finish,
        history: &[ProgressRecord],
        terminal_sequence: Option<u64>,
        log: Option<&Archive>,
    ) -> Result<Option<Job>, Error> {
        let (status, error, retryable, outcome) = finish.into_parts();
        let history = history.to_vec();
        let log = log.cloned();
        self.write(move |conn| {
            let now = chrono::Utc::now();
            let key = key(id);
            let binds = [
                Bind::Text(status.as_str()),
                Bind::NullableText(error.as_ref().map(|e| e.code.as_str())),
                Bind::NullableText(error.as_ref().map(|e| e.message.as_str())),
                Bind::BigInt(micros(now)),
                Bind::BigInt(micros(now)),
                Bind::NullableBigInt(
                    terminal_sequence.map(|seq| i64::try_from(seq).unwrap_or(i64::MAX)),
                ),
                Bind::Text(&key),
                Bind::Integer(to_i32(attempt)),
            ];
            if Fixed::<EndAttempt>::new(&binds).execute(conn)? == 0 {
                return Ok(None);
            }
            diesel::insert_into(job_results::table)
                .values(ResultRow::from_outcome(id, &outcome, now))
                .execute(conn)?;
            if let Some(error) = &error {
                insert_failure(conn, id, attempt, error, retryable)?;
            }
            super::history::insert_progress(conn, id, &history)?;
            if let Some(log) = &log {
                super::history::upsert_log(conn, id, log)?;
            }
            // Read back after the statement's triggers (the prompt may have been emptied).
            let row: JobRow = jobs::table
                .find(&key)
                .select(JobRow::as_select())
                .get_result(conn)?;
            Ok(Some(Job::try_from(row)?))
        })
        .await
    }

    #[instrument(skip_all, fields(job_id = %id, attempt))]
    async fn retry_attempt(
        &self,
        id: JobId,
        attempt: u32,
        error: &JobError,
        history: &[ProgressRecord],
    ) -> Result<bool, Error> {
        let error = error.clone();
        let history = history.to_vec();
        self.write(move |conn| {
            let now = micros(chrono::Utc::now());
            let updated = diesel::update(jobs::table.find(key(id)))
                .filter(jobs::status.eq(JobStatus::Running.as_str()))
                .filter(jobs::attempts.eq(to_i32(attempt)))
                .set((
                    jobs::status.eq(JobStatus::Queued.as_str()),
                    jobs::error_code.eq(&error.code),
                    jobs::error_message.eq(&error.message),
                    jobs::enqueued_at.eq(now),
                    jobs::updated_at.eq(now),
                ))
                .execute(conn)?;
            if updated == 0 {
                return Ok(false);
            }
            insert_failure(conn, id, attempt, &error, true)?;
            super::history::insert_progress(conn, id, &history)?;
            Ok(true)
        })
        .await
    }

    async fn release_running(&self, id: JobId, attempt: u32) -> Result<bool, Error> {
        self.write(move |conn| {
            let now = micros(chrono::Utc::now());
            let n = diesel::update(jobs::table.find(key(id)))
                .filter(jobs::status.eq(JobStatus::Running.as_str()))
                .filter(jobs::attempts.eq(to_i32(attempt)))
                .set((
                    jobs::status.eq(JobStatus::Queued.as_str()),
                    jobs::enqueued_at.eq(now),
                    jobs::updated_at.eq(now),
                ))
                .execute(conn)?;
            Ok(n == 1)
        })
        .await
    }

    async fn record_attempt_failure(
        &self,
        id: JobId,
        attempt: u32,
        error: &JobError,
    ) -> Result<(), Error> {
        let error = error.clone();
        self.write(move |conn| insert_failure(conn, id, attempt, &error, true))
            .await
    }

    async fn attempt_failures(&self, id: JobId) -> Result<Vec<(u32, JobError)>, Error> {
        self.run(move |conn| {
            let rows: Vec<(i32, String, String)> = job_attempt_failures::table
                .filter(job_attempt_failures::job_id.eq(key(id)))
                .order(job_attempt_failures::attempt.asc())
                .select((
                    job_attempt_failures::attempt,
                    job_attempt_failures::error_code,
                    job_attempt_failures::message,
                ))
                .load(conn)?;
            Ok(rows
                .into_iter()
                .map(|(attempt, code, message)| {
                    (
                        u32::try_from(attempt).unwrap_or(0),
                        JobError { code, message },
                    )
                })
                .collect())
        })
        .await
    }
}
