//! The durable store: the source of truth for a job's existence and final state.
//!
//! [`Store`] is the narrow interface the gateway and the worker use. [`postgres`] implements it
//! with diesel-async for production; [`sqlite`] with diesel on a SQLite file for the embedded
//! mode (first runs, development, single-node installs). [`open`] picks one from the
//! configuration. Every state change that must happen once (start of an attempt, the final
//! status) is a conditional update, so a stale worker cannot overwrite a newer attempt.

pub mod models;
pub mod postgres;
pub mod schema;
pub mod single;
pub mod sqlite;

use std::{path::PathBuf, sync::Arc};

use async_trait::async_trait;

/// Which database holds the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A Postgres URL.
    Postgres(String),
    /// A SQLite file.
    Sqlite(PathBuf),
}

impl Location {
    /// The database `url` names: Postgres for `postgres://…` or `postgresql://…`, a SQLite
    /// file for `sqlite://PATH` or `sqlite:PATH`, and the file at `sqlite_path` when `url` is
    /// empty.
    ///
    /// Errors: a URL of another scheme (the message names `DATABASE_URL` and the schemes
    /// understood), or `sqlite://` without a path.
    pub fn parse(url: &str, sqlite_path: &std::path::Path) -> Result<Location, String> {
        let url = url.trim();
        if url.is_empty() {
            return Ok(Location::Sqlite(sqlite_path.to_owned()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Location::Postgres(url.to_owned()));
        }
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err("DATABASE_URL: `sqlite://` needs a file path".into());
            }
            return Ok(Location::Sqlite(PathBuf::from(path)));
        }
        Err(format!(
            "DATABASE_URL must start with postgres://, postgresql:// or sqlite:// (or be empty \
             for a SQLite file at --sqlite-path); got {:?}",
            url.split("://").next().unwrap_or_default()
        ))
    }
}

/// What opening the store needs (built from `config::Database`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// `DATABASE_URL`: see [`Location::parse`].
    pub url: String,
    /// The SQLite file used when `url` is empty.
    pub sqlite_path: PathBuf,
    /// Pooled connections (Postgres; SQLite uses one connection).
    pub pool_size: usize,
}

impl Settings {
    /// The database these settings name ([`Location::parse`]).
    pub fn location(&self) -> Result<Location, String> {
        Location::parse(&self.url, &self.sqlite_path)
    }
}

/// Opens the configured store: a Postgres pool (connections open lazily, so this succeeds
/// while Postgres is down) or the SQLite file (created when missing).
///
/// Errors: [`Error::Unavailable`] for a bad `DATABASE_URL` or a SQLite file that cannot be
/// opened.
pub async fn open(cfg: impl Into<Settings>) -> Result<Arc<dyn Store>, Error> {
    let cfg = cfg.into();
    Ok(match cfg.location().map_err(Error::Unavailable)? {
        Location::Postgres(url) => Arc::new(postgres::PgStore::new(&url, cfg.pool_size)?),
        Location::Sqlite(path) => Arc::new(sqlite::SqliteStore::open(&path).await?),
    })
}

/// Creates the database when it is missing and applies pending migrations (those under
/// `migrations/postgres/` or `migrations/sqlite/`); returns the versions applied.
///
/// Errors: [`Error::Unavailable`], [`Error::Migration`].
pub async fn migrate(cfg: impl Into<Settings>) -> Result<Vec<String>, Error> {
    match cfg.into().location().map_err(Error::Unavailable)? {
        Location::Postgres(url) => {
            postgres::ensure_database(&url).await?;
            postgres::migrate(&url).await
        }
        Location::Sqlite(path) => sqlite::migrate(&path).await,
    }
}

/// The configured store for logs and errors: `Postgres at postgres://u:***@h/db` or
/// `SQLite at llm-jobs.db` (passwords masked).
pub fn describe(cfg: impl Into<Settings>) -> String {
    match cfg.into().location() {
        Ok(Location::Postgres(url)) => {
            format!("Postgres at {}", crate::redact::redact_url(&url))
        }
        Ok(Location::Sqlite(path)) => format!("SQLite at {}", path.display()),
        Err(e) => e,
    }
}

use crate::{
    batch::{BatchId, NewBatch, Snapshot},
    events::archive::Archive,
    job::{Job, JobError, JobId, NewJob, Outcome},
    principal::ApiKey,
};

/// The jobs a cleanup would delete: how many, and when the first and the last of them ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deletable {
    /// Jobs.
    pub jobs: u64,
    /// The earliest end among them (`None` when there are none).
    pub oldest: Option<chrono::DateTime<chrono::Utc>>,
    /// The latest end among them.
    pub newest: Option<chrono::DateTime<chrono::Utc>>,
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection could be had (pool timeout, connection refused, server gone).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// Stored data does not decode (a bug or a manual edit).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// Migrations could not be applied.
    #[error("migrations failed: {0}")]
    Migration(String),
    /// Another server with an in-process queue uses this store ([`single`]).
    #[error("{0}")]
    InUse(String),
    /// Refused as asked: e.g. copying into a store that already holds data.
    #[error("{0}")]
    Refused(String),
}

/// How SQLite ("database or disk is full") and Postgres ("could not extend file …: No space
/// left on device") report a full disk: a message, not an error kind.
const OUT_OF_SPACE: [&str; 2] = ["disk is full", "No space left on device"];

impl Error {
    /// True when the same write may succeed later: the database is down, restarting, or the
    /// connection was cut. Constraint violations and decoding errors are permanent.
    pub fn is_transient(&self) -> bool {
        use diesel::result::{DatabaseErrorKind as K, Error as D};
        if self.is_unavailable() {
            return true;
        }
        match self {
            Error::Query(D::DatabaseError(
                K::UniqueViolation
                | K::ForeignKeyViolation
                | K::NotNullViolation
                | K::CheckViolation
                | K::RestrictViolation,
                _,
            )) => false,
            Error::Query(D::DatabaseError(K::ClosedConnection | K::SerializationFailure, _))
            | Error::Query(D::BrokenTransactionManager) => true,
            // Postgres reports a killed or restarting backend with a message, not a kind; SQLite
            // reports another process holding the write lock past the busy timeout the same way.
            Error::Query(D::DatabaseError(_, info)) => {
                let m = info.message();
                [
                    "terminating connection",
                    "connection",
                    "shutting down",
                    "starting up",
                    "database is locked",
                ]
                .iter()
                .any(|s| m.contains(s))
            }
            _ => false,
        }
    }

    /// True when retrying later may succeed (the database is down, overloaded, or out of
    /// disk space).
    pub fn is_unavailable(&self) -> bool {
        use diesel::result::{DatabaseErrorKind as K, Error as D};
        match self {
            Error::Unavailable(_) | Error::Query(D::DatabaseError(K::ClosedConnection, _)) => true,
            Error::Query(D::DatabaseError(_, info)) => {
                OUT_OF_SPACE.iter().any(|s| info.message().contains(s))
            }
            _ => false,
        }
    }
}

/// What `insert_job` did.
#[derive(Clone, Debug)]
pub struct Inserted {
    /// The stored job (the earlier one when the idempotency key was already used).
    pub job: Job,
    /// False when an earlier job with the same idempotency key was returned instead.
    pub created: bool,
}

/// How an attempt ends, as written by [`Store::finish_attempt`].
#[derive(Clone, Debug)]
pub enum Finish {
    /// The upstream finished: status COMPLETED with this result.
    Completed(Outcome),
    /// The job failed for good: status FAILED; `partial` keeps what was generated.
    Failed {
        /// The last attempt's error.
        error: JobError,
        /// Whether that error was retryable (kept with the attempt's failure record).
        retryable: bool,
        /// What the attempt produced before failing.
        partial: Outcome,
    },
    /// A client cancelled it while it ran: status CANCELLED; `partial` keeps the text so far.
    Cancelled {
        /// What the attempt produced before the cancel.
        partial: Outcome,
    },
}

/// What `insert_batch` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InsertedBatch {
    /// The stored batch (the earlier one when the idempotency key was already used).
    pub id: BatchId,
    /// False when an earlier batch with the same idempotency key was returned instead.
    pub created: bool,
}

/// A stored result with the job it belongs to.
#[derive(Clone, Debug)]
pub struct StoredResult {
    /// The job (terminal).
    pub job: Job,
    /// The final attempt's outcome; `None` when the job never produced one (cancelled while
    /// queued).
    pub outcome: Option<Outcome>,
}

/// Figures of one queue from finished jobs (Horizon's metrics).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueFigures {
    /// Queue name.
    pub queue: String,
    /// Jobs completed in the last 5 minutes.
    pub completed_last_5_minutes: u64,
    /// Average queue wait of jobs finished in the last hour (ms).
    pub average_wait_ms: f64,
    /// Average final-attempt duration of jobs finished in the last hour (ms).
    pub average_runtime_ms: f64,
    /// Jobs that failed in the last hour.
    pub failed_last_hour: u64,
}

/// Performance of one queue or model over a window (jobs finished in it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Performance {
    /// Queue or model name.
    pub key: String,
    /// Jobs completed.
    pub completed: u64,
    /// Jobs failed.
    pub failed: u64,
    /// Final-attempt duration percentiles 50/95/99 (ms) of completed jobs.
    pub runtime_ms: [Option<f64>; 3],
    /// Time-to-first-token percentiles 50/95/99 (ms) of completed jobs.
    pub time_to_first_token_ms: [Option<f64>; 3],
    /// Average output tokens per second of completed jobs.
    pub output_tokens_per_second: f64,
    /// Input tokens of completed jobs.
    pub input_tokens: u64,
    /// Output tokens of completed jobs.
    pub output_tokens: u64,
    /// Summed cost (USD) of completed jobs with a known price; `None` when none had one.
    pub cost_usd: Option<f64>,
}

/// How [`Store::performance`] groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    /// By queue name.
    Queue,
    /// By the model that answered.
    Model,
}

/// Which jobs `ListJobs` means; `None` fields match any job.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    /// Tenant (always set for callers that are not admins).
    pub tenant: Option<String>,
    /// Status.
    pub status: Option<crate::job::JobStatus>,
    /// Job type.
    pub job_type: Option<String>,
    /// Priority.
    pub priority: Option<crate::job::Priority>,
    /// A tag the job has.
    pub tag: Option<String>,
    /// The batch it belongs to.
    pub batch_id: Option<uuid::Uuid>,
    /// Created strictly after.
    pub created_after: Option<chrono::DateTime<chrono::Utc>>,
    /// Created strictly before.
    pub created_before: Option<chrono::DateTime<chrono::Utc>>,
}

/// Which failed jobs an operator means.
#[derive(Clone, Debug, Default)]
pub struct FailedFilter {
    /// Tenant (set for callers that are not operators).
    pub tenant: Option<String>,
    /// Queue name, if given.
    pub queue: Option<String>,
    /// Job type, if given.
    pub job_type: Option<String>,
    /// Error code, if given.
    pub error_code: Option<String>,
}

/// The durable store's operations.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a QUEUED job; with an idempotency key already used, returns the earlier job.
    async fn insert_job(&self, job: &NewJob) -> Result<Inserted, Error>;

    /// Deletes a job that never left QUEUED and never ran (its enqueue failed). Returns
    /// whether a row was deleted.
    async fn discard_job(&self, id: JobId) -> Result<bool, Error>;

    /// The job, or `None` when unknown.
    async fn get_job(&self, id: JobId) -> Result<Option<Job>, Error>;

    /// The job and its result, or `None` when the job is unknown.
    async fn get_result(&self, id: JobId) -> Result<Option<StoredResult>, Error>;

    /// Starts a new attempt: QUEUED or RUNNING (a reclaimed lease) becomes RUNNING with
    /// `attempts + 1`. Returns the updated job, or `None` when the job is terminal or unknown.
    async fn start_attempt(&self, id: JobId) -> Result<Option<Job>, Error>;

    /// Ends attempt `attempt` for good and appends the attempt's last progress `history`
    /// (stage changes and milestones), in one transaction. Returns the updated job, or `None`
    /// when the attempt no longer owns the job (a newer attempt started, or it is already
    /// terminal): nothing is written and the caller must publish nothing.
    ///
    /// `terminal_sequence` is the sequence the caller's terminal event will have in the job's
    /// log when it knows it ahead (it is the log's only writer while the attempt runs, and
    /// appends the terminal event next), stored as `last_sequence` with the result; `None`
    /// leaves `last_sequence` as it is. `log`, when the caller knows it ahead too, is the
    /// job's whole event log ending with that terminal event, stored with the result (in the
    /// same transaction) for replays once the live log has expired.
    async fn finish_attempt(
        &self,
        id: JobId,
        attempt: u32,
        finish: Finish,
        history: &[crate::progress::ProgressRecord],
        terminal_sequence: Option<u64>,
        log: Option<&Archive>,
    ) -> Result<Option<Job>, Error>;

    /// Records a failed attempt that will be retried (RUNNING becomes QUEUED again) and
    /// appends its progress `history`, in one transaction. Returns false, writing nothing,
    /// when the attempt no longer owns the job.
    async fn retry_attempt(
        &self,
        id: JobId,
        attempt: u32,
        error: &JobError,
        history: &[crate::progress::ProgressRecord],
    ) -> Result<bool, Error>;

    /// Marks a RUNNING job whose attempt `attempt` was lost (no lease; it waits in its queue
    /// again) as QUEUED. Returns false when it changed meanwhile.
    async fn release_running(&self, id: JobId, attempt: u32) -> Result<bool, Error>;

    /// Cancels a job that no worker holds: QUEUED, or RUNNING in the store although its
    /// attempt was lost (its lease expired and it waits in its queue again). The caller
    /// knows no lease is held. Returns the updated job, or `None` when it had ended.
    async fn cancel_queued(&self, id: JobId) -> Result<Option<Job>, Error>;

    /// Remembers the sequence of the job's terminal event, for snapshots after the Redis log
    /// expired.
    async fn set_last_sequence(&self, id: JobId, sequence: u64) -> Result<(), Error>;

    /// [`Store::set_last_sequence`] for many jobs in one statement (job id, sequence).
    async fn set_last_sequences(&self, sequences: &[(JobId, u64)]) -> Result<(), Error>;

    /// Stores the whole event logs of ended jobs (replacing any stored before) and sets each
    /// job's `last_sequence` to its log's last sequence, in one transaction: for logs not
    /// written with the result (a job cancelled while queued, a log another writer ended).
    async fn store_event_logs(&self, logs: &[(JobId, Archive)]) -> Result<(), Error>;

    /// The job's stored event log; `None` when it has none (unfinished, or ended before logs
    /// were stored).
    async fn event_log(&self, id: JobId) -> Result<Option<Archive>, Error>;

    /// Records that attempt `attempt` failed with `error` (retryable) without changing the
    /// job: for attempts that ended with their worker lost, noticed when the next one starts.
    /// A second record of the same attempt is ignored.
    async fn record_attempt_failure(
        &self,
        id: JobId,
        attempt: u32,
        error: &JobError,
    ) -> Result<(), Error>;

    /// Errors of every failed attempt, oldest first.
    async fn attempt_failures(&self, id: JobId) -> Result<Vec<(u32, JobError)>, Error>;

    /// Up to `limit` QUEUED or RUNNING jobs last changed before `before`, oldest id first,
    /// with ids above `after` (the last id of the previous page). The reconciler compares
    /// them with what the queue knows.
    async fn unfinished(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        after: Option<JobId>,
        limit: i64,
    ) -> Result<Vec<Job>, Error>;

    /// Those of `ids` that are QUEUED or RUNNING (client concurrency limits prune with it).
    async fn unfinished_among(&self, ids: &[JobId]) -> Result<Vec<JobId>, Error>;

    /// Jobs matching `filter`, newest first, with ids below `before` (pagination), at most
    /// `limit`.
    async fn list_jobs(
        &self,
        filter: &JobFilter,
        before: Option<JobId>,
        limit: i64,
    ) -> Result<Vec<Job>, Error>;

    /// Per-queue figures from jobs finished in the last hour.
    async fn queue_figures(&self) -> Result<Vec<QueueFigures>, Error>;

    /// Failed, not forgotten jobs matching `filter`, newest first, with ids below `before`
    /// (pagination), at most `limit`.
    async fn failed_jobs(
        &self,
        filter: &FailedFilter,
        before: Option<JobId>,
        limit: i64,
    ) -> Result<Vec<Job>, Error>;

    /// Marks failed jobs as forgotten; returns the ids it marked (the others are unknown, not
    /// FAILED, or were forgotten already).
    async fn forget_failed(&self, ids: &[JobId]) -> Result<Vec<JobId>, Error>;

    /// Puts a FAILED job back to QUEUED with one more attempt allowed; its failed result and
    /// stored event log go, its attempt history stays. `None` when the job is not FAILED, or its prompt was
    /// discarded when it ended (`--prompt-storage none`).
    async fn requeue_failed(&self, id: JobId) -> Result<Option<Job>, Error>;

    /// Performance per queue or model of jobs finished within `window`.
    async fn performance(
        &self,
        window: std::time::Duration,
        by: GroupBy,
    ) -> Result<Vec<Performance>, Error>;

    /// Attempts the upstream failed / those plus completed jobs, within `window` (0 when
    /// none). The upstream failed an attempt when its error code is an `upstream_*` one or
    /// `first_token_timeout`; attempts lost with their worker, stopped by a shutdown, timed
    /// out as a whole or ended by a bug are not the upstream's and count on neither side.
    async fn upstream_error_rate(&self, window: std::time::Duration) -> Result<f64, Error>;

    /// Deletes up to `batch` jobs that ended before `before`, with their results and attempt
    /// history; returns how many were deleted (0 when none are left). A job of a batch goes
    /// only once every job of its batch ended before `before`; batches created before `before`
    /// that have no job left go too.
    async fn delete_finished(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        batch: i64,
    ) -> Result<u64, Error>;

    /// What [`Store::delete_finished`] would delete for `before`, deleting nothing (a dry run,
    /// and the figures a confirmation shows).
    async fn deletable(&self, before: chrono::DateTime<chrono::Utc>) -> Result<Deletable, Error>;

    /// Appends stage changes and milestones to the job's progress history, in order.
    async fn append_progress(
        &self,
        id: JobId,
        events: &[crate::progress::ProgressRecord],
    ) -> Result<(), Error>;

    /// Up to `limit` entries of the job's progress history after position `after` (from a
    /// previous page), oldest first, each with its position and its stored bytes
    /// ([`crate::progress::ProgressRecord::encoded`]).
    async fn progress_history(
        &self,
        id: JobId,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, Error>;

    /// Output tokens of the stored results of those of `ids` that have one (job id, tokens),
    /// in no particular order: the figure `GetJob` reports for an ended job, for a whole page.
    async fn result_output_tokens(&self, ids: &[JobId]) -> Result<Vec<(JobId, u64)>, Error>;

    /// Output tokens of up to `limit` recently completed jobs of `job_type` and `model`,
    /// newest first (the basis of progress estimates).
    async fn recent_output_tokens(
        &self,
        job_type: &str,
        model: &str,
        limit: i64,
    ) -> Result<Vec<u64>, Error>;

    // Batches

    /// Stores the batch and all its jobs (QUEUED, in request order; they must carry no
    /// idempotency key) in one transaction. With a batch idempotency key used within the last
    /// 24 h, stores nothing and returns the earlier batch's id with `created` false.
    async fn insert_batch(&self, batch: &NewBatch, jobs: &[NewJob])
    -> Result<InsertedBatch, Error>;

    /// The batch and every job of it in request order, the jobs read by one statement (so
    /// their statuses are of one moment); `None` when the batch is unknown.
    async fn get_batch(&self, id: BatchId) -> Result<Option<Snapshot>, Error>;

    // API keys and the audit log

    /// Stores a new API key. Errors: `Query` when its prefix is taken (generate another).
    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), Error>;

    /// The key with `prefix`, revoked or not; `None` when unknown.
    async fn api_key(&self, prefix: &str) -> Result<Option<ApiKey>, Error>;

    /// Every key (of `tenant` when given), newest first.
    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>, Error>;

    /// Revokes the key with `prefix` (a second revoke keeps the first time) and returns it;
    /// `None` when unknown.
    async fn revoke_api_key(&self, prefix: &str) -> Result<Option<ApiKey>, Error>;

    /// Appends `event` to the audit log (its `id` is assigned here).
    async fn append_audit(&self, event: &crate::audit::record::Event) -> Result<(), Error>;

    /// Audit events matching `filter`, newest first, with ids below `before` (pagination), at
    /// most `limit`.
    async fn audit_events(
        &self,
        filter: &crate::audit::record::Filter,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<crate::audit::record::Event>, Error>;

    /// Round trip to the database (health checks).
    async fn ping(&self) -> Result<(), Error>;
}

#[cfg(test)]
mod tests {
    use super::Error;
    use diesel::result::{DatabaseErrorKind, Error as D};

    fn database_error(message: &str) -> Error {
        Error::Query(D::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new(message.to_owned()),
        ))
    }

    #[test]
    fn a_full_disk_or_a_busy_file_is_worth_retrying_and_bad_data_is_not() {
        for retry in [
            "database or disk is full",
            "could not extend file \"base/1/2\": No space left on device",
            "database is locked",
            "terminating connection due to administrator command",
        ] {
            assert!(database_error(retry).is_transient(), "{retry}");
        }
        assert!(database_error("database or disk is full").is_unavailable());
        assert!(!database_error("database is locked").is_unavailable());
        let constraint = Error::Query(D::DatabaseError(
            DatabaseErrorKind::CheckViolation,
            Box::new("CHECK constraint failed".to_owned()),
        ));
        assert!(!constraint.is_transient() && !constraint.is_unavailable());
        assert!(!Error::Corrupt("bad".into()).is_transient());
    }
}
