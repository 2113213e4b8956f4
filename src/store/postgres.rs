//! [`Store`] on Postgres through diesel-async, with a deadpool connection pool and embedded
//! migrations; [`reports`] holds the operators' queries, [`batches`] the batches'.

mod batches;
mod logs;
mod migrate;
mod progress;
mod reports;
mod security;
mod writer;

pub use migrate::{MIGRATIONS, ensure_database, migrate};

use async_trait::async_trait;
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper};
use diesel_async::{
    AsyncConnection, AsyncPgConnection, RunQueryDsl,
    pooled_connection::AsyncDieselConnectionManager,
};
use tracing::instrument;

use super::{
    Error, FailedFilter, Finish, GroupBy, Inserted, JobFilter, Performance, QueueFigures, Store,
    StoredResult,
    models::{AttemptFailureRow, JobRow, NewJobRow, ResultRow},
    schema::{job_attempt_failures, job_results, jobs},
};
use crate::job::{Job, JobError, JobId, JobStatus, NewJob};

/// How long an idempotency key returns the job first submitted with it.
pub const IDEMPOTENCY_WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// The connection pool.
type Pool = diesel_async::pooled_connection::deadpool::Pool<AsyncPgConnection>;

/// The Postgres store.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// The group-commit writer of the hot-path writes, started on first use (it needs the
    /// Tokio runtime, which the constructor does not).
    writer: std::sync::Arc<std::sync::OnceLock<writer::Writer>>,
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for Error {
    fn from(e: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        Error::Unavailable(e.to_string())
    }
}

impl PgStore {
    /// Builds the pool (connections open lazily, so this succeeds while Postgres is down).
    ///
    /// Errors: [`Error::Unavailable`] when the pool cannot be built from the URL.
    pub fn new(url: &str, pool_size: usize) -> Result<PgStore, Error> {
        // Each checkout is verified with a test query: a read never meets a connection whose
        // server process was terminated (it would fail as an internal error). The hot-path
        // writes check out one connection per group commit, so the test query is shared by
        // every write of a batch.
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .wait_timeout(Some(std::time::Duration::from_secs(5)))
            .create_timeout(Some(std::time::Duration::from_secs(5)))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        Ok(PgStore {
            pool,
            writer: Default::default(),
        })
    }

    fn writer(&self) -> &writer::Writer {
        self.writer
            .get_or_init(|| writer::Writer::start(self.pool.clone()))
    }

    async fn conn(
        &self,
    ) -> Result<diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>, Error> {
        Ok(self.pool.get().await?)
    }
}

fn to_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

#[async_trait]
impl Store for PgStore {
    #[instrument(skip_all, fields(job_id = %job.id))]
    async fn insert_job(&self, job: &NewJob) -> Result<Inserted, Error> {
        if job.idempotency_key.is_none() {
            // A fresh id cannot conflict: group-committed with other jobs' writes.
            let row = self.writer().insert(NewJobRow::from_new(job)).await?;
            return Ok(Inserted {
                job: row.try_into()?,
                created: true,
            });
        }
        let mut conn = self.conn().await?;
        // Twice at most: a key older than the idempotency window is released, then reused.
        for _ in 0..2 {
            let inserted: Option<JobRow> = diesel::insert_into(jobs::table)
                .values(NewJobRow::from_new(job))
                .on_conflict_do_nothing()
                .returning(JobRow::as_returning())
                .get_result(&mut conn)
                .await
                .optional()?;
            if let Some(row) = inserted {
                return Ok(Inserted {
                    job: row.try_into()?,
                    created: true,
                });
            }
            // Conflict: the idempotency key was used before (ids are fresh UUIDs).
            let key = job.idempotency_key.as_deref().unwrap_or_default();
            let earlier: Option<JobRow> = jobs::table
                .filter(jobs::tenant.eq(&job.tenant))
                .filter(jobs::idempotency_key.eq(key))
                .select(JobRow::as_select())
                .first(&mut conn)
                .await
                .optional()?;
            let Some(row) = earlier else {
                continue; // released meanwhile
            };
            if row.created_at > chrono::Utc::now() - IDEMPOTENCY_WINDOW {
                return Ok(Inserted {
                    job: row.try_into()?,
                    created: false,
                });
            }
            diesel::update(jobs::table.find(row.id))
                .filter(jobs::tenant.eq(&job.tenant))
                .filter(jobs::idempotency_key.eq(key))
                .set(jobs::idempotency_key.eq(None::<String>))
                .execute(&mut conn)
                .await?;
        }
        Err(Error::Unavailable(
            "the idempotency key is being released concurrently; retry".into(),
        ))
    }

    async fn discard_job(&self, id: JobId) -> Result<bool, Error> {
        let mut conn = self.conn().await?;
        let deleted = diesel::delete(jobs::table.find(id))
            .filter(jobs::status.eq(JobStatus::Queued.as_str()))
            .filter(jobs::attempts.eq(0))
            .execute(&mut conn)
            .await?;
        Ok(deleted == 1)
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>, Error> {
        let mut conn = self.conn().await?;
        let row: Option<JobRow> = jobs::table
            .find(id)
            .select(JobRow::as_select())
            .first(&mut conn)
            .await
            .optional()?;
        row.map(Job::try_from).transpose()
    }

    async fn get_result(&self, id: JobId) -> Result<Option<StoredResult>, Error> {
        let mut conn = self.conn().await?;
        let row: Option<(JobRow, Option<ResultRow>)> = jobs::table
            .left_join(job_results::table)
            .filter(jobs::id.eq(id))
            .select((JobRow::as_select(), Option::<ResultRow>::as_select()))
            .first(&mut conn)
            .await
            .optional()?;
        match row {
            None => Ok(None),
            Some((job, result)) => Ok(Some(StoredResult {
                job: job.try_into()?,
                outcome: result.map(Into::into),
            })),
        }
    }

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
        history: &[crate::progress::ProgressRecord],
        terminal_sequence: Option<u64>,
        log: Option<&crate::events::archive::Archive>,
    ) -> Result<Option<Job>, Error> {
        let (status, error, retryable, outcome) = match finish {
            Finish::Completed(o) => (JobStatus::Completed, None, false, o),
            Finish::Failed {
                error,
                retryable,
                partial,
            } => (JobStatus::Failed, Some(error), retryable, partial),
            Finish::Cancelled { partial } => (JobStatus::Cancelled, None, false, partial),
        };
        let end = writer::End {
            id,
            attempt,
            status,
            error,
            retryable,
            terminal_sequence: terminal_sequence.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
            result: ResultRow::from_outcome(id, &outcome),
            history: crate::store::models::NewProgressRow::from_events(id, history),
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
        history: &[crate::progress::ProgressRecord],
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
            progress::insert(conn, id, history).await?;
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

    #[instrument(skip_all, fields(job_id = %id))]
    async fn cancel_queued(&self, id: JobId) -> Result<Option<Job>, Error> {
        let mut conn = self.conn().await?;
        let now = chrono::Utc::now();
        let row: Option<JobRow> = diesel::update(jobs::table.find(id))
            .filter(jobs::status.eq_any([JobStatus::Queued.as_str(), JobStatus::Running.as_str()]))
            .set((
                jobs::status.eq(JobStatus::Cancelled.as_str()),
                jobs::finished_at.eq(now),
                jobs::updated_at.eq(now),
            ))
            .returning(JobRow::as_returning())
            .get_result(&mut conn)
            .await
            .optional()?;
        row.map(Job::try_from).transpose()
    }

    async fn set_last_sequence(&self, id: JobId, sequence: u64) -> Result<(), Error> {
        let mut conn = self.conn().await?;
        diesel::update(jobs::table.find(id))
            .set(jobs::last_sequence.eq(i64::try_from(sequence).unwrap_or(i64::MAX)))
            .execute(&mut conn)
            .await?;
        Ok(())
    }

    async fn set_last_sequences(&self, sequences: &[(JobId, u64)]) -> Result<(), Error> {
        if sequences.is_empty() {
            return Ok(());
        }
        let (ids, seqs): (Vec<uuid::Uuid>, Vec<i64>) = sequences
            .iter()
            .map(|(id, s)| (*id, i64::try_from(*s).unwrap_or(i64::MAX)))
            .unzip();
        let mut conn = self.conn().await?;
        diesel::sql_query(
            "UPDATE jobs SET last_sequence = v.seq \
             FROM unnest($1::uuid[], $2::bigint[]) AS v(id, seq) WHERE jobs.id = v.id",
        )
        .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(ids)
        .bind::<diesel::sql_types::Array<diesel::sql_types::BigInt>, _>(seqs)
        .execute(&mut conn)
        .await?;
        Ok(())
    }

    async fn store_event_logs(
        &self,
        logs: &[(JobId, crate::events::archive::Archive)],
    ) -> Result<(), Error> {
        logs::store(self, logs).await
    }

    async fn event_log(&self, id: JobId) -> Result<Option<crate::events::archive::Archive>, Error> {
        logs::get(self, id).await
    }

    async fn record_attempt_failure(
        &self,
        id: JobId,
        attempt: u32,
        error: &JobError,
    ) -> Result<(), Error> {
        let mut conn = self.conn().await?;
        diesel::insert_into(job_attempt_failures::table)
            .values(AttemptFailureRow {
                job_id: id,
                attempt: to_i32(attempt),
                error_code: &error.code,
                message: &error.message,
                retryable: true,
            })
            .on_conflict_do_nothing()
            .execute(&mut conn)
            .await?;
        Ok(())
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

    async fn unfinished(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        after: Option<JobId>,
        limit: i64,
    ) -> Result<Vec<Job>, Error> {
        let mut conn = self.conn().await?;
        let mut query = jobs::table
            .filter(jobs::status.eq_any([JobStatus::Queued.as_str(), JobStatus::Running.as_str()]))
            .filter(jobs::updated_at.lt(before))
            .order(jobs::id.asc())
            .limit(limit)
            .select(JobRow::as_select())
            .into_boxed();
        if let Some(id) = after {
            query = query.filter(jobs::id.gt(id));
        }
        let rows: Vec<JobRow> = query.load(&mut conn).await?;
        rows.into_iter().map(Job::try_from).collect()
    }

    async fn unfinished_among(&self, ids: &[JobId]) -> Result<Vec<JobId>, Error> {
        let mut conn = self.conn().await?;
        Ok(jobs::table
            .filter(jobs::id.eq_any(ids))
            .filter(jobs::status.eq_any([JobStatus::Queued.as_str(), JobStatus::Running.as_str()]))
            .select(jobs::id)
            .load(&mut conn)
            .await?)
    }

    async fn list_jobs(
        &self,
        filter: &JobFilter,
        before: Option<JobId>,
        limit: i64,
    ) -> Result<Vec<Job>, Error> {
        reports::list_jobs(self, filter, before, limit).await
    }

    async fn queue_figures(&self) -> Result<Vec<QueueFigures>, Error> {
        reports::queue_figures(self).await
    }

    async fn failed_jobs(
        &self,
        filter: &FailedFilter,
        before: Option<JobId>,
        limit: i64,
    ) -> Result<Vec<Job>, Error> {
        reports::failed_jobs(self, filter, before, limit).await
    }

    async fn forget_failed(&self, ids: &[JobId]) -> Result<Vec<JobId>, Error> {
        reports::forget_failed(self, ids).await
    }

    async fn requeue_failed(&self, id: JobId) -> Result<Option<Job>, Error> {
        reports::requeue_failed(self, id).await
    }

    async fn performance(
        &self,
        window: std::time::Duration,
        by: GroupBy,
    ) -> Result<Vec<Performance>, Error> {
        reports::performance(self, window, by).await
    }

    async fn upstream_error_rate(&self, window: std::time::Duration) -> Result<f64, Error> {
        reports::upstream_error_rate(self, window).await
    }

    async fn delete_finished(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        batch: i64,
    ) -> Result<u64, Error> {
        batches::delete_finished(self, before, batch).await
    }

    async fn deletable(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<super::Deletable, Error> {
        batches::deletable(self, before).await
    }

    async fn insert_batch(
        &self,
        batch: &crate::batch::NewBatch,
        jobs: &[NewJob],
    ) -> Result<super::InsertedBatch, Error> {
        batches::insert_batch(self, batch, jobs).await
    }

    async fn get_batch(
        &self,
        id: crate::batch::BatchId,
    ) -> Result<Option<crate::batch::Snapshot>, Error> {
        batches::get_batch(self, id).await
    }

    async fn append_progress(
        &self,
        id: JobId,
        events: &[crate::progress::ProgressRecord],
    ) -> Result<(), Error> {
        progress::append(self, id, events).await
    }

    async fn progress_history(
        &self,
        id: JobId,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, Error> {
        progress::history(self, id, after, limit).await
    }

    async fn result_output_tokens(&self, ids: &[JobId]) -> Result<Vec<(JobId, u64)>, Error> {
        progress::result_output_tokens(self, ids).await
    }

    async fn recent_output_tokens(
        &self,
        job_type: &str,
        model: &str,
        limit: i64,
    ) -> Result<Vec<u64>, Error> {
        progress::recent_output_tokens(self, job_type, model, limit).await
    }

    async fn insert_api_key(&self, key: &crate::principal::ApiKey) -> Result<(), Error> {
        security::insert_api_key(self, key).await
    }

    async fn api_key(&self, prefix: &str) -> Result<Option<crate::principal::ApiKey>, Error> {
        security::api_key(self, prefix).await
    }

    async fn list_api_keys(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<crate::principal::ApiKey>, Error> {
        security::list_api_keys(self, tenant).await
    }

    async fn revoke_api_key(
        &self,
        prefix: &str,
    ) -> Result<Option<crate::principal::ApiKey>, Error> {
        security::revoke_api_key(self, prefix).await
    }

    async fn append_audit(&self, event: &crate::audit::record::Event) -> Result<(), Error> {
        security::append_audit(self, event).await
    }

    async fn audit_events(
        &self,
        filter: &crate::audit::record::Filter,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<crate::audit::record::Event>, Error> {
        security::audit_events(self, filter, before, limit).await
    }

    async fn ping(&self) -> Result<(), Error> {
        let mut conn = self.conn().await?;
        diesel::sql_query("SELECT 1").execute(&mut conn).await?;
        Ok(())
    }
}
