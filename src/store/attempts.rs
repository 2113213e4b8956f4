//! A job's attempts: each start and end is a conditional update fenced on the attempt's
//! number, so a stale worker cannot overwrite a newer attempt.

use async_trait::async_trait;

use super::Error;
use crate::{
    events::archive::Archive,
    job::{Job, JobError, JobId, Outcome},
    progress::ProgressRecord,
};

/// How an attempt ends, as written by [`AttemptStore::finish_attempt`].
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

impl Finish {
    /// The end as the job's row takes it: its status, the error of a failed job, whether
    /// that error was retryable, and what the attempt produced (whole or partial).
    pub fn into_parts(self) -> (crate::job::JobStatus, Option<JobError>, bool, Outcome) {
        use crate::job::JobStatus;
        match self {
            Finish::Completed(o) => (JobStatus::Completed, None, false, o),
            Finish::Failed {
                error,
                retryable,
                partial,
            } => (JobStatus::Failed, Some(error), retryable, partial),
            Finish::Cancelled { partial } => (JobStatus::Cancelled, None, false, partial),
        }
    }
}

/// The attempts of jobs: start, end, retry, release, and their failure records.
#[async_trait]
pub trait AttemptStore: Send + Sync + 'static {
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
        history: &[ProgressRecord],
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
        history: &[ProgressRecord],
    ) -> Result<bool, Error>;

    /// Marks a RUNNING job whose attempt `attempt` was lost (no lease; it waits in its queue
    /// again) as QUEUED. Returns false when it changed meanwhile.
    async fn release_running(&self, id: JobId, attempt: u32) -> Result<bool, Error>;

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
}
