//! The gateway's batch operations, called by the API: submit, get, cancel. Following a batch
//! is [`crate::streaming::batch`].
//!
//! Ordering rules: Redis is checked before anything is written, so a submit while Redis is
//! down fails with nothing stored. The batch and all its jobs are then stored in one
//! transaction; from that commit on the batch exists. Each job is then published as
//! [`Jobs::submit`] publishes one (its `queued` event, then its queue). When Redis fails part
//! way, the submit still succeeds: undoing is not safe once workers may have claimed the jobs
//! published first, and the jobs left unpublished are QUEUED in Postgres, which the reconciler
//! ([`crate::reconciler`]) puts back in their queues once Redis answers.

use futures::{StreamExt, stream};
use tracing::{info, instrument, warn};

use super::{Error, Jobs};
use crate::{
    batch::{BatchId, NewBatch, Snapshot},
    job::{JobId, NewJob},
};

/// Jobs published to Redis at once by one submit.
const PUBLISH_CONCURRENCY: usize = 16;
/// Jobs cancelled at once by one batch cancel; running jobs each wait up to 2 s for their
/// worker, so this bounds how long a cancel of many running jobs takes.
pub const CANCEL_CONCURRENCY: usize = 32;
/// Reason of a batch cancel when the client gave none.
pub const DEFAULT_BATCH_CANCEL_REASON: &str = "batch cancelled by a client";

impl Jobs {
    /// Stores a validated batch with its validated jobs (in request order, without idempotency
    /// keys) and enqueues the jobs; with a known batch idempotency key, returns the earlier
    /// batch unchanged when the request is the same (a retry). Returns the batch as it is
    /// after publishing. Errors: `AlreadyExists` when the key was used for a different batch
    /// within 24 h; `Queue` (Redis down before anything was written), `Store` (UNAVAILABLE).
    ///
    /// Like [`Jobs::submit`], it runs to its end even when the call is dropped.
    #[instrument(skip_all, fields(batch_id = %batch.id, jobs = jobs.len()))]
    pub async fn submit_batch(
        &self,
        batch: NewBatch,
        jobs: Vec<NewJob>,
    ) -> Result<Snapshot, Error> {
        let this = self.clone();
        super::detach::detached(async move { this.submit_batch_now(batch, jobs).await }).await
    }

    /// [`Jobs::submit_batch`], bound to the caller's future.
    async fn submit_batch_now(
        &self,
        batch: NewBatch,
        jobs: Vec<NewJob>,
    ) -> Result<Snapshot, Error> {
        self.queue.ping().await?;
        let inserted = self.store.insert_batch(&batch, &jobs).await?;
        if inserted.created {
            for job in &jobs {
                self.metrics.submitted(&job.queue, 1);
            }
            // One enqueue time for all: equal scores are claimed in id order, which is request
            // order.
            let at = chrono::Utc::now();
            // Built up front: a stream closure over `&NewJob` trips the `Send` check of
            // handler futures (a higher-ranked lifetime the compiler cannot prove general).
            let publishes: Vec<_> = jobs
                .iter()
                .map(|job| self.publish(job, at, None, false))
                .collect();
            let failed = stream::iter(publishes)
                .buffer_unordered(PUBLISH_CONCURRENCY)
                .filter(|r| std::future::ready(r.is_err()))
                .count()
                .await;
            if failed > 0 {
                warn!(
                    failed,
                    "jobs of the batch could not be enqueued; the reconciler will enqueue them \
                     once Redis answers"
                );
            }
            info!("batch submitted");
            return self.get_batch(inserted.id).await;
        }
        let earlier = self.get_batch(inserted.id).await?;
        if !self.same_batch(&earlier, &batch, &jobs).await? {
            return Err(Error::AlreadyExists {
                reason: format!(
                    "idempotency_key {:?} was used for a different batch ({}) within the last \
                     24 h; send the same request to get that batch, or use a new key",
                    batch.idempotency_key.as_deref().unwrap_or_default(),
                    earlier.batch.id
                ),
            });
        }
        Ok(earlier)
    }

    /// Whether `batch` with `jobs` asks for what `earlier` (stored under the same idempotency
    /// key) was asked: same name, metadata and jobs, in order (see [`NewJob::same_request_as`]).
    async fn same_batch(
        &self,
        earlier: &Snapshot,
        batch: &NewBatch,
        jobs: &[NewJob],
    ) -> Result<bool, Error> {
        if earlier.batch.display_name != batch.display_name
            || earlier.batch.metadata != batch.metadata
            || earlier.members.len() != jobs.len()
        {
            return Ok(false);
        }
        for (member, job) in earlier.members.iter().zip(jobs) {
            match self.store.get_job(member.id).await? {
                Some(stored) if job.same_request_as(&stored) => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// The batch and its jobs now. Errors: `NotFound`, `Store`.
    pub async fn get_batch(&self, id: BatchId) -> Result<Snapshot, Error> {
        self.store
            .get_batch(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("batch {id}")))
    }

    /// Cancels every unfinished job of the batch as [`Jobs::cancel`] does,
    /// [`CANCEL_CONCURRENCY`] at a time, and returns the batch afterwards. Jobs that end or
    /// vanish meanwhile are skipped. Errors: `NotFound`; the first `Store`/`Queue`/`Events`
    /// failure once every job was tried (calling again is safe).
    #[instrument(skip_all, fields(batch_id = %id))]
    pub async fn cancel_batch(&self, id: BatchId, reason: &str) -> Result<Snapshot, Error> {
        let before = self.get_batch(id).await?;
        let reason = if reason.is_empty() {
            DEFAULT_BATCH_CANCEL_REASON
        } else {
            reason
        };
        let unfinished: Vec<JobId> = before
            .members
            .iter()
            .filter(|m| !m.status.is_terminal())
            .map(|m| m.id)
            .collect();
        let n = unfinished.len();
        let results: Vec<Result<_, Error>> = stream::iter(unfinished)
            .map(|job| self.cancel(job, reason))
            .buffer_unordered(CANCEL_CONCURRENCY)
            .collect()
            .await;
        if let Some(e) = results
            .into_iter()
            .filter_map(Result::err)
            .find(|e| !matches!(e, Error::NotFound { .. }))
        {
            return Err(e);
        }
        info!(jobs = n, "batch cancelled");
        self.get_batch(id).await
    }
}
