//! The operators' views over many jobs: listings, failed jobs (list, forget, requeue),
//! queue figures, performance and the upstream error rate.

use async_trait::async_trait;

use super::Error;
use crate::job::{Job, JobId};

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

/// How [`ReportStore::performance`] groups.
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

/// The operators' queries and their actions on failed jobs.
#[async_trait]
pub trait ReportStore: Send + Sync + 'static {
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
    /// stored event log go, its attempt history stays. `None` when the job is not FAILED, or
    /// its prompt was discarded when it ended (`--prompt-storage none`).
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
}
