//! [`Store`] on a SQLite file through diesel: the embedded mode's store (first runs,
//! development, demos, single-node installs), with its own migrations under
//! `migrations/sqlite/`. [`reports`] holds the operators' queries, [`batches`] the batches',
//! [`progress`] the progress history, [`security`] API keys and the audit log.
//!
//! One connection serves every call, one at a time, on tokio's blocking threads: SQLite
//! allows one writer anyway, and a statement here takes microseconds. The file is in WAL mode
//! with `synchronous = NORMAL`: a committed transaction survives the process being killed
//! (SIGKILL); the last ones may be lost with the machine's power. Other processes (the `keys`
//! and `cleanup` commands) may use the file meanwhile: writers wait up to 5 s for each other.

mod batches;
mod commit;
mod copy;
mod fixed;
mod logs;
mod progress;
mod reports;
mod rows;
pub mod schema;
mod security;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use async_trait::async_trait;
use diesel::{
    Connection, ExpressionMethods, OptionalExtension, QueryDsl, RunQueryDsl, SelectableHelper,
    SqliteConnection, connection::SimpleConnection,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use tracing::instrument;

use self::{
    fixed::{Bind, Fixed, Sql},
    rows::{JobRow, NewJobRow, ResultRow, micros},
    schema::{job_attempt_failures, job_results, jobs},
};
use super::{
    Error, FailedFilter, Finish, GroupBy, Inserted, JobFilter, Performance, QueueFigures, Store,
    StoredResult,
};
use crate::job::{Job, JobError, JobId, JobStatus, NewJob};

pub use copy::{Copied, copy_to_postgres};

/// The migrations under `migrations/sqlite/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// How long a writer waits for another process's write to end before failing (ms).
const BUSY_TIMEOUT_MS: u32 = 5_000;

/// The SQLite store. Clones share the connection.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<tokio::sync::Mutex<SqliteConnection>>,
    /// Applies writes in batches (group commit) through `conn`.
    committer: commit::Committer,
}

/// Creates the file at `path`, when missing, readable and writable by its owner only (0600):
/// it holds prompts, results and key hashes. SQLite creates the `-wal`, `-shm` and
/// `-journal` files beside it with the same permissions. An existing file keeps its mode
/// (with a warning when others may read it).
fn create_private(path: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if let Ok(meta) = std::fs::metadata(path)
                    && meta.permissions().mode() & 0o077 != 0
                {
                    tracing::warn!(
                        path = %path.display(),
                        mode = format!("{:o}", meta.permissions().mode() & 0o777),
                        "the SQLite store is readable by other users; `chmod 600` it (and its \
                         -wal and -shm files)"
                    );
                }
            }
            Err(e) => {
                return Err(Error::Unavailable(format!(
                    "cannot create SQLite file {}: {e}",
                    path.display()
                )));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Opens (creating when missing, see [`create_private`]) the file at `path` with the store's
/// settings.
fn connect(path: &Path) -> Result<SqliteConnection, Error> {
    let name = path
        .to_str()
        .ok_or_else(|| Error::Unavailable(format!("SQLite path {path:?} is not UTF-8")))?;
    create_private(path)?;
    let mut conn = SqliteConnection::establish(name)
        .map_err(|e| Error::Unavailable(format!("cannot open SQLite file {name}: {e}")))?;
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}; PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;"
    ))
    .map_err(|e| Error::Unavailable(format!("cannot set up SQLite file {name}: {e}")))?;
    Ok(conn)
}

/// Creates the file at `path` when missing and applies pending migrations; returns the
/// versions applied. Errors: [`Error::Unavailable`], [`Error::Migration`].
pub async fn migrate(path: &Path) -> Result<Vec<String>, Error> {
    let path: PathBuf = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn = connect(&path)?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| Error::Migration(e.to_string()))?;
        Ok(applied.iter().map(|v| v.to_string()).collect())
    })
    .await
    .map_err(|e| Error::Migration(format!("migration task failed: {e}")))?
}

impl SqliteStore {
    /// Opens the file at `path` (created when missing; migrations are [`migrate`]'s job).
    ///
    /// Errors: [`Error::Unavailable`] when the file cannot be opened or set up.
    pub async fn open(path: &Path) -> Result<SqliteStore, Error> {
        let path = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || connect(&path))
            .await
            .map_err(|e| Error::Unavailable(format!("SQLite open task failed: {e}")))??;
        let conn = Arc::new(tokio::sync::Mutex::new(conn));
        Ok(SqliteStore {
            committer: commit::Committer::start(conn.clone()),
            conn,
        })
    }

    /// Runs `f` on the connection on a blocking thread, after the calls before it.
    async fn run<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T, Error> + Send + 'static,
    {
        let mut conn = self.conn.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || f(&mut conn))
            .await
            .map_err(|e| Error::Unavailable(format!("SQLite task failed: {e}")))?
    }

    /// Runs `f` as one write of the next group commit ([`commit`]): in a savepoint of an
    /// `IMMEDIATE` transaction (which takes the write lock at once, so it never has to give up
    /// half-way for another process's write), answered once that transaction commits.
    async fn write<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnMut(&mut SqliteConnection) -> Result<T, Error> + Send + 'static,
    {
        self.committer.write(f).await
    }
}

fn to_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// The job `id` as stored.
fn key(id: JobId) -> String {
    id.to_string()
}

const UNFINISHED: [&str; 2] = ["queued", "running"];

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

/// Inserts a job (in batch `batch` when given); `None` when its idempotency key is taken.
fn insert_row(
    conn: &mut SqliteConnection,
    job: &NewJob,
    batch: Option<uuid::Uuid>,
) -> Result<Option<JobRow>, Error> {
    Ok(diesel::insert_into(jobs::table)
        .values(NewJobRow::from_new(job, batch, chrono::Utc::now()))
        .on_conflict_do_nothing()
        .returning(JobRow::as_returning())
        .get_result(conn)
        .optional()?)
}

#[async_trait]
impl Store for SqliteStore {
    #[instrument(skip_all, fields(job_id = %job.id))]
    async fn insert_job(&self, job: &NewJob) -> Result<Inserted, Error> {
        let job = job.clone();
        self.write(move |conn| {
            if let Some(row) = insert_row(conn, &job, None)? {
                return Ok(Inserted {
                    job: row.try_into()?,
                    created: true,
                });
            }
            // Conflict: the idempotency key was used before (ids are fresh UUIDs).
            let key = job.idempotency_key.as_deref().unwrap_or_default();
            let earlier: JobRow = jobs::table
                .filter(jobs::tenant.eq(&job.tenant))
                .filter(jobs::idempotency_key.eq(key))
                .select(JobRow::as_select())
                .get_result(conn)?;
            let window = micros(chrono::Utc::now() - super::postgres::IDEMPOTENCY_WINDOW);
            if earlier.created_at > window {
                return Ok(Inserted {
                    job: earlier.try_into()?,
                    created: false,
                });
            }
            // Older than the window: the key is released and used again (in this same
            // transaction, so no other writer sees it free).
            diesel::update(jobs::table.find(&earlier.id))
                .set(jobs::idempotency_key.eq(None::<String>))
                .execute(conn)?;
            let row = insert_row(conn, &job, None)?
                .ok_or_else(|| Error::Corrupt("idempotency key still taken".into()))?;
            Ok(Inserted {
                job: row.try_into()?,
                created: true,
            })
        })
        .await
    }

    async fn discard_job(&self, id: JobId) -> Result<bool, Error> {
        self.write(move |conn| {
            let deleted = diesel::delete(jobs::table.find(key(id)))
                .filter(jobs::status.eq(JobStatus::Queued.as_str()))
                .filter(jobs::attempts.eq(0))
                .execute(conn)?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>, Error> {
        self.run(move |conn| {
            let row: Option<JobRow> = jobs::table
                .find(key(id))
                .select(JobRow::as_select())
                .get_result(conn)
                .optional()?;
            row.map(Job::try_from).transpose()
        })
        .await
    }

    async fn get_result(&self, id: JobId) -> Result<Option<StoredResult>, Error> {
        self.run(move |conn| {
            let row: Option<(JobRow, Option<ResultRow>)> = jobs::table
                .left_join(job_results::table)
                .filter(jobs::id.eq(key(id)))
                .select((JobRow::as_select(), Option::<ResultRow>::as_select()))
                .get_result(conn)
                .optional()?;
            match row {
                None => Ok(None),
                Some((job, result)) => Ok(Some(StoredResult {
                    job: job.try_into()?,
                    outcome: result.map(Into::into),
                })),
            }
        })
        .await
    }

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
            progress::insert(conn, id, &history)?;
            if let Some(log) = &log {
                logs::upsert(conn, id, log)?;
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
        history: &[crate::progress::ProgressRecord],
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
            progress::insert(conn, id, &history)?;
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

    #[instrument(skip_all, fields(job_id = %id))]
    async fn cancel_queued(&self, id: JobId) -> Result<Option<Job>, Error> {
        self.write(move |conn| {
            let now = micros(chrono::Utc::now());
            let n = diesel::update(jobs::table.find(key(id)))
                .filter(jobs::status.eq_any(UNFINISHED))
                .set((
                    jobs::status.eq(JobStatus::Cancelled.as_str()),
                    jobs::finished_at.eq(now),
                    jobs::updated_at.eq(now),
                ))
                .execute(conn)?;
            if n == 0 {
                return Ok(None);
            }
            let row: JobRow = jobs::table
                .find(key(id))
                .select(JobRow::as_select())
                .get_result(conn)?;
            Ok(Some(Job::try_from(row)?))
        })
        .await
    }

    async fn set_last_sequence(&self, id: JobId, sequence: u64) -> Result<(), Error> {
        self.set_last_sequences(&[(id, sequence)]).await
    }

    async fn set_last_sequences(&self, sequences: &[(JobId, u64)]) -> Result<(), Error> {
        if sequences.is_empty() {
            return Ok(());
        }
        let sequences = sequences.to_vec();
        self.write(move |conn| {
            for &(id, sequence) in &sequences {
                diesel::update(jobs::table.find(key(id)))
                    .set(jobs::last_sequence.eq(i64::try_from(sequence).unwrap_or(i64::MAX)))
                    .execute(conn)?;
            }
            Ok(())
        })
        .await
    }

    async fn store_event_logs(
        &self,
        logs: &[(JobId, crate::events::archive::Archive)],
    ) -> Result<(), Error> {
        if logs.is_empty() {
            return Ok(());
        }
        let logs = logs.to_vec();
        self.write(move |conn| logs::store(conn, &logs)).await
    }

    async fn event_log(&self, id: JobId) -> Result<Option<crate::events::archive::Archive>, Error> {
        self.run(move |conn| logs::get(conn, id)).await
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

    async fn unfinished(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        after: Option<JobId>,
        limit: i64,
    ) -> Result<Vec<Job>, Error> {
        self.run(move |conn| {
            let mut query = jobs::table
                .filter(jobs::status.eq_any(UNFINISHED))
                .filter(jobs::updated_at.lt(micros(before)))
                .order(jobs::id.asc())
                .limit(limit)
                .select(JobRow::as_select())
                .into_boxed();
            if let Some(id) = after {
                query = query.filter(jobs::id.gt(key(id)));
            }
            let rows: Vec<JobRow> = query.load(conn)?;
            rows.into_iter().map(Job::try_from).collect()
        })
        .await
    }

    async fn unfinished_among(&self, ids: &[JobId]) -> Result<Vec<JobId>, Error> {
        let ids: Vec<String> = ids.iter().copied().map(key).collect();
        self.run(move |conn| {
            let found: Vec<String> = jobs::table
                .filter(jobs::id.eq_any(ids))
                .filter(jobs::status.eq_any(UNFINISHED))
                .select(jobs::id)
                .load(conn)?;
            found.iter().map(|id| rows::uuid(id)).collect()
        })
        .await
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
        if events.is_empty() {
            return Ok(());
        }
        let events = events.to_vec();
        self.write(move |conn| progress::insert(conn, id, &events))
            .await
    }

    async fn progress_history(
        &self,
        id: JobId,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, Error> {
        self.run(move |conn| progress::history(conn, id, after, limit))
            .await
    }

    async fn result_output_tokens(&self, ids: &[JobId]) -> Result<Vec<(JobId, u64)>, Error> {
        let ids: Vec<String> = ids.iter().copied().map(key).collect();
        self.run(move |conn| progress::result_output_tokens(conn, &ids))
            .await
    }

    async fn recent_output_tokens(
        &self,
        job_type: &str,
        model: &str,
        limit: i64,
    ) -> Result<Vec<u64>, Error> {
        let (job_type, model) = (job_type.to_owned(), model.to_owned());
        self.run(move |conn| progress::recent_output_tokens(conn, &job_type, &model, limit))
            .await
    }

    async fn insert_api_key(&self, key: &crate::principal::ApiKey) -> Result<(), Error> {
        let key = key.clone();
        self.write(move |conn| security::insert_api_key(conn, &key))
            .await
    }

    async fn api_key(&self, prefix: &str) -> Result<Option<crate::principal::ApiKey>, Error> {
        let prefix = prefix.to_owned();
        self.run(move |conn| security::api_key(conn, &prefix)).await
    }

    async fn list_api_keys(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<crate::principal::ApiKey>, Error> {
        let tenant = tenant.map(str::to_owned);
        self.run(move |conn| security::list_api_keys(conn, tenant.as_deref()))
            .await
    }

    async fn revoke_api_key(
        &self,
        prefix: &str,
    ) -> Result<Option<crate::principal::ApiKey>, Error> {
        let prefix = prefix.to_owned();
        self.write(move |conn| security::revoke_api_key(conn, &prefix))
            .await
    }

    async fn append_audit(&self, event: &crate::audit::record::Event) -> Result<(), Error> {
        let event = event.clone();
        self.write(move |conn| security::append_audit(conn, &event))
            .await
    }

    async fn audit_events(
        &self,
        filter: &crate::audit::record::Filter,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<crate::audit::record::Event>, Error> {
        let filter = filter.clone();
        self.run(move |conn| security::audit_events(conn, &filter, before, limit))
            .await
    }

    async fn ping(&self) -> Result<(), Error> {
        self.run(|conn| {
            diesel::sql_query("SELECT 1").execute(conn)?;
            Ok(())
        })
        .await
    }
}
