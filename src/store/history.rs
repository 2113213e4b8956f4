//! What a job leaves behind besides its result: its progress history, its stored event log,
//! and the output sizes that progress estimates come from.

use async_trait::async_trait;

use super::Error;
use crate::{events::archive::Archive, job::JobId, progress::ProgressRecord};

/// The jobs' progress histories, stored event logs and output sizes.
#[async_trait]
pub trait HistoryStore: Send + Sync + 'static {
    /// Appends stage changes and milestones to the job's progress history, in order.
    async fn append_progress(&self, id: JobId, events: &[ProgressRecord]) -> Result<(), Error>;

    /// Up to `limit` entries of the job's progress history after position `after` (from a
    /// previous page), oldest first, each with its position and its stored bytes
    /// ([`ProgressRecord::encoded`]).
    async fn progress_history(
        &self,
        id: JobId,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, Error>;

    /// Stores the whole event logs of ended jobs (replacing any stored before) and sets each
    /// job's `last_sequence` to its log's last sequence, in one transaction: for logs not
    /// written with the result (a job cancelled while queued, a log another writer ended).
    async fn store_event_logs(&self, logs: &[(JobId, Archive)]) -> Result<(), Error>;

    /// The job's stored event log; `None` when it has none (unfinished, or ended before logs
    /// were stored).
    async fn event_log(&self, id: JobId) -> Result<Option<Archive>, Error>;

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
}
