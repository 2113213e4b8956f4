//! [`AttemptStore`] on Postgres: starts and ends go through the group commit
//! ([`super::writer`]); retries, releases and failure records are written directly.

use async_trait::async_trait;
use diesel::{ExpressionMethods, QueryDsl};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tracing::instrument;

use super::{PgStore, to_i32, writer};
use crate::{
    events::archive::Archive,
    job::{Job, JobError, JobId, JobStatus},
    progress::ProgressRecord,
    store::{
        AttemptStore, Error, Finish,
        models::{AttemptFailureRow, NewProgressRow, ResultRow},
        schema::{job_attempt_failures, jobs},
    },
};

#[async_trait]
impl AttemptStore for PgStore {
    #[instrument(skip_all, fields(job_id = %id))]
    async fn start_attempt(&self, id: JobId) -> Result<Option<Job>, Error> {
        let row = self.writer().start_attempt(id).await?;
        row.map(Job::try_from).transpose()
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
        let end = writer::End {
            id,
            attempt,
            status,
            error,
            retryable,
            terminal_sequence: terminal_sequence.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
            result: ResultRow::from_outcome(id, &outcome),
            history: NewProgressRow::from_events(id, history),
            log: log.cloned(),
        };
        let row = self.writer().finish(end).await?;
        row.map(Job::try_from).transpose()
    }

    #[instrument(skip_all, fields(job_id = %id, attempt))]
    async fn retry_attempt(
        &self,
        id: JobId,
        attempt: u32,
        error: &JobError,
        history: &[ProgressRecord],
    ) -> Result<bool, Error> {
        let mut conn = self.conn().await?;
        conn.transaction::<_, Error, _>(async |conn| {
            let now = chrono::Utc::now();
            let updated = diesel::update(jobs::table.find(id))
                .filter(jobs::status.eq(JobStatus::Running.as_str()))
                .filter(jobs::attempts.eq(to_i32(attempt)))
                .set((
                    jobs::status.eq(JobStatus::Queued.as_str()),
                    jobs::error_code.eq(&error.code),
                    jobs::error_message.eq(&error.message),
                    jobs::enqueued_at.eq(now),
                    jobs::updated_at.eq(now),
                ))
                .execute(conn)
                .await?;
            if updated == 0 {
                return Ok(false);
            }
            insert_failure(conn, id, attempt, error).await?;
            super::history::insert_progress(conn, id, history).await?;
            Ok(true)
        })
        .await
    }

    async fn release_running(&self, id: JobId, attempt: u32) -> Result<bool, Error> {
        let mut conn = self.conn().await?;
        let now = chrono::Utc::now();
        let n = diesel::update(jobs::table.find(id))
            .filter(jobs::status.eq(JobStatus::Running.as_str()))
            .filter(jobs::attempts.eq(to_i32(attempt)))
            .set((
                jobs::status.eq(JobStatus::Queued.as_str()),
                jobs::enqueued_at.eq(now),
                jobs::updated_at.eq(now),
            ))
            .execute(&mut conn)
            .await?;
        Ok(n == 1)
    }

    async fn record_attempt_failure(
        &self,
        id: JobId,
        attempt: u32,
        error: &JobError,
    ) -> Result<(), Error> {
        let mut conn = self.conn().await?;
        insert_failure(&mut conn, id, attempt, error).await
    }

    async fn attempt_failures(&self, id: JobId) -> Result<Vec<(u32, JobError)>, Error> {
        let mut conn = self.conn().await?;
        let rows: Vec<(i32, String, String)> = job_attempt_failures::table
            .filter(job_attempt_failures::job_id.eq(id))
            .order(job_attempt_failures::attempt.asc())
            .select((
                job_attempt_failures::attempt,
                job_attempt_failures::error_code,
                job_attempt_failures::message,
            ))
            .load(&mut conn)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(attempt, code, message)| {
                (
                    u32::try_from(attempt).unwrap_or(0),
                    JobError { code, message },
                )
            })
            .collect())
    }
}

/// Records the retryable failure `error` of `attempt` (once: a record already there stays).
async fn insert_failure(
    conn: &mut AsyncPgConnection,
    id: JobId,
    attempt: u32,
    error: &JobError,
) -> Result<(), Error> {
    diesel::insert_into(job_attempt_failures::table)
        .values(AttemptFailureRow {
            job_id: id,
            attempt: to_i32(attempt),
            error_code: &error.code,
            message: &error.message,
            retryable: true,
        })
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}
