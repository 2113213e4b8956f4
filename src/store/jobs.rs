//! The jobs of the store: a job's row from submit to end (insert, read, cancel while queued),
//! the reconciler's view of unfinished jobs, and the retention that deletes ended ones.
//! Attempts are [`super::AttemptStore`]'s, a job's history [`super::HistoryStore`]'s.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::Error;
use crate::job::{Job, JobId, NewJob, Outcome};

/// What `insert_job` did.
#[derive(Clone, Debug)]
pub struct Inserted {
    /// The stored job (the earlier one when the idempotency key was already used).
    pub job: Job,
    /// False when an earlier job with the same idempotency key was returned instead.
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

/// The jobs a cleanup would delete: how many, and when the first and the last of them ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deletable {
    /// Jobs.
    pub jobs: u64,
    /// The earliest end among them (`None` when there are none).
    pub oldest: Option<DateTime<Utc>>,
    /// The latest end among them.
    pub newest: Option<DateTime<Utc>>,
}

/// The jobs: rows, reads, unfinished ones and retention.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Inserts a QUEUED job; with an idempotency key already used, returns the earlier job.
    async fn insert_job(&self, job: &NewJob) -> Result<Inserted, Error>;

    /// Deletes a job that never left QUEUED and never ran (its enqueue failed). Returns
    /// whether a row was deleted.
    async fn discard_job(&self, id: JobId) -> Result<bool, Error>;

    /// The job, or `None` when unknown.
    async fn get_job(&self, id: JobId) -> Result<Option<Job>, Error>;

    /// The job and its result, or `None` when the job is unknown.
    async fn get_result(&self, id: JobId) -> Result<Option<StoredResult>, Error>;

    /// Cancels a job that no worker holds: QUEUED, or RUNNING in the store although its
    /// attempt was lost (its lease expired and it waits in its queue again). The caller
    /// knows no lease is held. Returns the updated job, or `None` when it had ended.
    async fn cancel_queued(&self, id: JobId) -> Result<Option<Job>, Error>;

    /// Remembers the sequence of the job's terminal event, for snapshots after the Redis log
    /// expired.
    async fn set_last_sequence(&self, id: JobId, sequence: u64) -> Result<(), Error>;

    /// [`JobStore::set_last_sequence`] for many jobs in one statement (job id, sequence).
    async fn set_last_sequences(&self, sequences: &[(JobId, u64)]) -> Result<(), Error>;

    /// Up to `limit` QUEUED or RUNNING jobs last changed before `before`, oldest id first,
    /// with ids above `after` (the last id of the previous page). The reconciler compares
    /// them with what the queue knows.
    async fn unfinished(
        &self,
        before: DateTime<Utc>,
        after: Option<JobId>,
        limit: i64,
    ) -> Result<Vec<Job>, Error>;

    /// Those of `ids` that are QUEUED or RUNNING (client concurrency limits prune with it).
    async fn unfinished_among(&self, ids: &[JobId]) -> Result<Vec<JobId>, Error>;

    /// Deletes up to `batch` jobs that ended before `before`, with their results and attempt
    /// history; returns how many were deleted (0 when none are left). A job of a batch goes
    /// only once every job of its batch ended before `before`; batches created before `before`
    /// that have no job left go too.
    async fn delete_finished(&self, before: DateTime<Utc>, batch: i64) -> Result<u64, Error>;

    /// What [`JobStore::delete_finished`] would delete for `before`, deleting nothing (a dry run,
    /// and the figures a confirmation shows).
    async fn deletable(&self, before: DateTime<Utc>) -> Result<Deletable, Error>;

    /// Round trip to the database (health checks).
    async fn ping(&self) -> Result<(), Error>;
}
