//! [`Store`] on Postgres through diesel-async, with a deadpool connection pool and embedded
//! migrations.

use async_trait::async_trait;
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper};
use diesel_async::{
    AsyncConnection, AsyncPgConnection, RunQueryDsl,
    async_connection_wrapper::AsyncConnectionWrapper,
    pooled_connection::{AsyncDieselConnectionManager, deadpool::Pool},
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use tracing::instrument;

use super::{
    Error, FailedFilter, Finish, GroupBy, Inserted, Performance, QueueFigures, Store, StoredResult,
    models::{AttemptFailureRow, JobRow, NewJobRow, ResultRow},
    schema::{job_attempt_failures, job_results, jobs},
};
use crate::{
    config,
    job::{Job, JobError, JobId, JobStatus, NewJob},
};

/// How long an idempotency key returns the job first submitted with it.
pub const IDEMPOTENCY_WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// The migrations under `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The Postgres store.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool<AsyncPgConnection>,
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
    pub fn new(cfg: &config::Postgres) -> Result<PgStore, Error> {
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(cfg.url.clone());
        let pool = Pool::builder(manager)
            .max_size(cfg.pool_size.max(1))
            .wait_timeout(Some(std::time::Duration::from_secs(5)))
            .create_timeout(Some(std::time::Duration::from_secs(5)))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        Ok(PgStore { pool })
    }

    async fn conn(
        &self,
    ) -> Result<diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>, Error> {
        Ok(self.pool.get().await?)
    }
}

/// Creates the database named in `url` when it does not exist (connecting to the `postgres`
/// maintenance database for that), so a fresh machine needs no manual `createdb`.
///
/// Errors: [`Error::Unavailable`] when Postgres cannot be reached.
pub async fn ensure_database(url: &str) -> Result<(), Error> {
    match AsyncPgConnection::establish(url).await {
        Ok(_) => return Ok(()),
        Err(e) if describe(&e).contains("does not exist") => {
            tracing::info!(error = %e, "database missing; creating it");
        }
        Err(e) => return Err(Error::Unavailable(describe(&e))),
    }
    let (base, name) = url
        .rsplit_once('/')
        .ok_or_else(|| Error::Unavailable(format!("no database name in URL {url:?}")))?;
    let name = name.split('?').next().unwrap_or(name);
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Error::Unavailable(format!(
            "database {name:?} does not exist and its name is not a plain identifier"
        )));
    }
    let mut admin = AsyncPgConnection::establish(&format!("{base}/postgres"))
        .await
        .map_err(|e| Error::Unavailable(e.to_string()))?;
    match diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
    {
        Ok(_) => {
            tracing::info!(database = name, "created database");
            Ok(())
        }
        // Another instance created it at the same moment.
        Err(e) if e.to_string().contains("already exists") => Ok(()),
        Err(e) => Err(Error::Query(e)),
    }
}

/// Applies pending migrations; returns the versions applied.
///
/// Runs diesel's sync migration harness over diesel-async's connection wrapper on a blocking
/// thread. Errors: [`Error::Unavailable`], [`Error::Migration`].
pub async fn migrate(url: &str) -> Result<Vec<String>, Error> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        use diesel::Connection;
        let mut conn = <AsyncConnectionWrapper<AsyncPgConnection> as Connection>::establish(&url)
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| Error::Migration(e.to_string()))?;
        Ok(applied.iter().map(|v| v.to_string()).collect())
    })
    .await
    .map_err(|e| Error::Migration(format!("migration task failed: {e}")))?
}

/// An error with its causes ("error connecting to server: Connection refused").
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}

fn to_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

#[async_trait]
impl Store for PgStore {
    #[instrument(skip_all, fields(job_id = %job.id))]
    async fn insert_job(&self, job: &NewJob) -> Result<Inserted, Error> {
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
        let mut conn = self.conn().await?;
        let now = chrono::Utc::now();
        let row: Option<JobRow> = diesel::update(jobs::table.find(id))
            .filter(jobs::status.eq_any([JobStatus::Queued.as_str(), JobStatus::Running.as_str()]))
            .set((
                jobs::status.eq(JobStatus::Running.as_str()),
                jobs::attempts.eq(jobs::attempts + 1),
                jobs::started_at.eq(now),
                jobs::updated_at.eq(now),
            ))
            .returning(JobRow::as_returning())
            .get_result(&mut conn)
            .await
            .optional()?;
        row.map(Job::try_from).transpose()
    }

    #[instrument(skip_all, fields(job_id = %id, attempt))]
    async fn finish_attempt(
        &self,
        id: JobId,
        attempt: u32,
        finish: Finish,
    ) -> Result<Option<Job>, Error> {
        let mut conn = self.conn().await?;
        let (status, error, retryable, outcome) = match finish {
            Finish::Completed(o) => (JobStatus::Completed, None, false, o),
            Finish::Failed {
                error,
                retryable,
                partial,
            } => (JobStatus::Failed, Some(error), retryable, partial),
            Finish::Cancelled { partial } => (JobStatus::Cancelled, None, false, partial),
        };
        let row = conn
            .transaction::<_, Error, _>(async |conn| {
                let now = chrono::Utc::now();
                let row: Option<JobRow> = diesel::update(jobs::table.find(id))
                    .filter(jobs::status.eq(JobStatus::Running.as_str()))
                    .filter(jobs::attempts.eq(to_i32(attempt)))
                    .set((
                        jobs::status.eq(status.as_str()),
                        jobs::error_code.eq(error.as_ref().map(|e| e.code.as_str())),
                        jobs::error_message.eq(error.as_ref().map(|e| e.message.as_str())),
                        jobs::finished_at.eq(now),
                        jobs::updated_at.eq(now),
                    ))
                    .returning(JobRow::as_returning())
                    .get_result(conn)
                    .await
                    .optional()?;
                let Some(row) = row else { return Ok(None) };
                diesel::insert_into(job_results::table)
                    .values(ResultRow::from_outcome(id, &outcome))
                    .execute(conn)
                    .await?;
                if let Some(error) = &error {
                    diesel::insert_into(job_attempt_failures::table)
                        .values(AttemptFailureRow {
                            job_id: id,
                            attempt: to_i32(attempt),
                            error_code: &error.code,
                            message: &error.message,
                            retryable,
                        })
                        .on_conflict_do_nothing()
                        .execute(conn)
                        .await?;
                }
                Ok(Some(row))
            })
            .await?;
        row.map(Job::try_from).transpose()
    }

    #[instrument(skip_all, fields(job_id = %id, attempt))]
    async fn retry_attempt(
        &self,
        id: JobId,
        attempt: u32,
        error: &JobError,
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
            Ok(true)
        })
        .await
    }

    #[instrument(skip_all, fields(job_id = %id))]
    async fn cancel_queued(&self, id: JobId) -> Result<Option<Job>, Error> {
        let mut conn = self.conn().await?;
        let now = chrono::Utc::now();
        let row: Option<JobRow> = diesel::update(jobs::table.find(id))
            .filter(jobs::status.eq(JobStatus::Queued.as_str()))
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
        limit: i64,
    ) -> Result<Vec<Job>, Error> {
        let mut conn = self.conn().await?;
        let rows: Vec<JobRow> = jobs::table
            .filter(jobs::status.eq_any([JobStatus::Queued.as_str(), JobStatus::Running.as_str()]))
            .filter(jobs::updated_at.lt(before))
            .order(jobs::updated_at.asc())
            .limit(limit)
            .select(JobRow::as_select())
            .load(&mut conn)
            .await?;
        rows.into_iter().map(Job::try_from).collect()
    }

    async fn queue_figures(&self) -> Result<Vec<QueueFigures>, Error> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            queue: String,
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            completed: i64,
            #[diesel(sql_type = diesel::sql_types::Double)]
            wait: f64,
            #[diesel(sql_type = diesel::sql_types::Double)]
            runtime: f64,
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            failed: i64,
        }
        let mut conn = self.conn().await?;
        let rows: Vec<Row> = diesel::sql_query(
            "SELECT j.queue, \
               count(*) FILTER (WHERE j.status = 'completed' AND j.finished_at > now() - interval '5 minutes') AS completed, \
               coalesce(avg(r.queue_wait_ms) FILTER (WHERE j.status = 'completed'), 0)::float8 AS wait, \
               coalesce(avg(r.duration_ms) FILTER (WHERE j.status = 'completed'), 0)::float8 AS runtime, \
               count(*) FILTER (WHERE j.status = 'failed') AS failed \
             FROM jobs j LEFT JOIN job_results r ON r.job_id = j.id \
             WHERE j.finished_at > now() - interval '1 hour' \
             GROUP BY j.queue",
        )
        .load(&mut conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| QueueFigures {
                queue: r.queue,
                completed_last_5_minutes: u64::try_from(r.completed).unwrap_or(0),
                average_wait_ms: r.wait,
                average_runtime_ms: r.runtime,
                failed_last_hour: u64::try_from(r.failed).unwrap_or(0),
            })
            .collect())
    }

    async fn failed_jobs(
        &self,
        filter: &FailedFilter,
        before: Option<JobId>,
        limit: i64,
    ) -> Result<Vec<Job>, Error> {
        let mut conn = self.conn().await?;
        let mut query = jobs::table
            .filter(jobs::status.eq(JobStatus::Failed.as_str()))
            .filter(jobs::forgotten_at.is_null())
            .order(jobs::id.desc())
            .limit(limit)
            .select(JobRow::as_select())
            .into_boxed();
        if let Some(q) = &filter.queue {
            query = query.filter(jobs::queue.eq(q.clone()));
        }
        if let Some(t) = &filter.job_type {
            query = query.filter(jobs::job_type.eq(t.clone()));
        }
        if let Some(c) = &filter.error_code {
            query = query.filter(jobs::error_code.eq(c.clone()));
        }
        if let Some(id) = before {
            query = query.filter(jobs::id.lt(id));
        }
        let rows: Vec<JobRow> = query.load(&mut conn).await?;
        rows.into_iter().map(Job::try_from).collect()
    }

    async fn forget_failed(&self, ids: &[JobId]) -> Result<u64, Error> {
        let mut conn = self.conn().await?;
        let n = diesel::update(jobs::table)
            .filter(jobs::id.eq_any(ids))
            .filter(jobs::status.eq(JobStatus::Failed.as_str()))
            .filter(jobs::forgotten_at.is_null())
            .set(jobs::forgotten_at.eq(chrono::Utc::now()))
            .execute(&mut conn)
            .await?;
        Ok(n as u64)
    }

    async fn requeue_failed(&self, id: JobId) -> Result<Option<Job>, Error> {
        let mut conn = self.conn().await?;
        let row = conn
            .transaction::<_, Error, _>(async |conn| {
                let now = chrono::Utc::now();
                let row: Option<JobRow> = diesel::update(jobs::table.find(id))
                    .filter(jobs::status.eq(JobStatus::Failed.as_str()))
                    .set((
                        jobs::status.eq(JobStatus::Queued.as_str()),
                        jobs::max_attempts.eq(jobs::attempts + 1),
                        jobs::error_code.eq(None::<String>),
                        jobs::error_message.eq(None::<String>),
                        jobs::finished_at.eq(None::<chrono::DateTime<chrono::Utc>>),
                        jobs::forgotten_at.eq(None::<chrono::DateTime<chrono::Utc>>),
                        jobs::enqueued_at.eq(now),
                        jobs::updated_at.eq(now),
                    ))
                    .returning(JobRow::as_returning())
                    .get_result(conn)
                    .await
                    .optional()?;
                if row.is_some() {
                    diesel::delete(job_results::table.find(id))
                        .execute(conn)
                        .await?;
                }
                Ok(row)
            })
            .await?;
        row.map(Job::try_from).transpose()
    }

    async fn performance(
        &self,
        window: std::time::Duration,
        by: GroupBy,
    ) -> Result<Vec<Performance>, Error> {
        use diesel::sql_types::{BigInt, Double, Nullable, Text};
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = Text)]
            key: String,
            #[diesel(sql_type = BigInt)]
            completed: i64,
            #[diesel(sql_type = BigInt)]
            failed: i64,
            #[diesel(sql_type = Nullable<Double>)]
            r50: Option<f64>,
            #[diesel(sql_type = Nullable<Double>)]
            r95: Option<f64>,
            #[diesel(sql_type = Nullable<Double>)]
            r99: Option<f64>,
            #[diesel(sql_type = Nullable<Double>)]
            t50: Option<f64>,
            #[diesel(sql_type = Nullable<Double>)]
            t95: Option<f64>,
            #[diesel(sql_type = Nullable<Double>)]
            t99: Option<f64>,
            #[diesel(sql_type = Double)]
            tps: f64,
            #[diesel(sql_type = BigInt)]
            input: i64,
            #[diesel(sql_type = BigInt)]
            output: i64,
        }
        // The key column is one of two constants, never client input.
        let key = match by {
            GroupBy::Queue => "j.queue",
            GroupBy::Model => "r.model",
        };
        let done = "j.status = 'completed'";
        let p = |q: f64, col: &str| {
            format!(
                "(percentile_cont({q}) WITHIN GROUP (ORDER BY r.{col}) FILTER (WHERE {done}))::float8"
            )
        };
        let sql = format!(
            "SELECT {key} AS key, \
               count(*) FILTER (WHERE {done}) AS completed, \
               count(*) FILTER (WHERE j.status = 'failed') AS failed, \
               {} AS r50, {} AS r95, {} AS r99, {} AS t50, {} AS t95, {} AS t99, \
               coalesce(avg(r.output_tokens_per_second) FILTER (WHERE {done}), 0)::float8 AS tps, \
               coalesce(sum(r.input_tokens) FILTER (WHERE {done}), 0)::int8 AS input, \
               coalesce(sum(r.output_tokens) FILTER (WHERE {done}), 0)::int8 AS output \
             FROM jobs j JOIN job_results r ON r.job_id = j.id \
             WHERE j.finished_at > now() - make_interval(secs => $1) \
               AND j.status IN ('completed', 'failed') \
             GROUP BY {key} ORDER BY {key}",
            p(0.5, "duration_ms"),
            p(0.95, "duration_ms"),
            p(0.99, "duration_ms"),
            p(0.5, "time_to_first_token_ms"),
            p(0.95, "time_to_first_token_ms"),
            p(0.99, "time_to_first_token_ms"),
        );
        let mut conn = self.conn().await?;
        let rows: Vec<Row> = diesel::sql_query(sql)
            .bind::<Double, _>(window.as_secs_f64())
            .load(&mut conn)
            .await?;
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(rows
            .into_iter()
            .map(|r| Performance {
                key: r.key,
                completed: n(r.completed),
                failed: n(r.failed),
                runtime_ms: [r.r50, r.r95, r.r99],
                time_to_first_token_ms: [r.t50, r.t95, r.t99],
                output_tokens_per_second: r.tps,
                input_tokens: n(r.input),
                output_tokens: n(r.output),
            })
            .collect())
    }

    async fn upstream_error_rate(&self, window: std::time::Duration) -> Result<f64, Error> {
        use diesel::sql_types::Double;
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = Double)]
            rate: f64,
        }
        let mut conn = self.conn().await?;
        let row: Row = diesel::sql_query(
            "WITH f AS (SELECT count(*)::float8 AS n FROM job_attempt_failures \
                        WHERE created_at > now() - make_interval(secs => $1)), \
                  c AS (SELECT count(*)::float8 AS n FROM job_results r JOIN jobs j ON j.id = r.job_id \
                        WHERE j.status = 'completed' AND r.created_at > now() - make_interval(secs => $1)) \
             SELECT CASE WHEN f.n + c.n = 0 THEN 0 ELSE f.n / (f.n + c.n) END AS rate FROM f, c",
        )
        .bind::<Double, _>(window.as_secs_f64())
        .get_result(&mut conn)
        .await?;
        Ok(row.rate)
    }

    async fn ping(&self) -> Result<(), Error> {
        let mut conn = self.conn().await?;
        diesel::sql_query("SELECT 1").execute(&mut conn).await?;
        Ok(())
    }
}
