//! Output estimates of the jobs a worker runs: recent completed outputs per job type and
//! model, read from the store at most every few seconds.

use std::time::Duration;

use tracing::warn;

use super::Worker;

/// When recent output sizes were read, and the sizes (output tokens, newest first).
pub(super) type RecentOutputs = (tokio::time::Instant, Vec<u64>);

/// How long recent output sizes are reused before they are read again.
const ESTIMATE_CACHE: Duration = Duration::from_secs(30);
/// The same, while there are too few to estimate from (a completion here also ends it).
const ESTIMATE_CACHE_THIN: Duration = Duration::from_secs(2);

impl Worker {
    /// The estimate of `job`'s output, from recent completed jobs of its job type and model
    /// (read at most every [`ESTIMATE_CACHE`] per pair, or [`ESTIMATE_CACHE_THIN`] while
    /// there are too few) or its `max_tokens`.
    pub(super) async fn estimate(&self, job: &crate::job::Job) -> crate::progress::Estimate {
        let key = (job.job_type.clone(), job.params.model.clone());
        let cached = self
            .estimates
            .get(&key)
            .filter(|(at, recent)| {
                at.elapsed()
                    < if recent.len() < crate::progress::MIN_ESTIMATE_SAMPLE {
                        ESTIMATE_CACHE_THIN
                    } else {
                        ESTIMATE_CACHE
                    }
            })
            .map(|(_, recent)| recent);
        let recent = match cached {
            Some(recent) => recent,
            None => match self
                .deps
                .store
                .recent_output_tokens(&key.0, &key.1, crate::progress::ESTIMATE_WINDOW)
                .await
            {
                Ok(recent) => {
                    self.estimates
                        .insert(key, (tokio::time::Instant::now(), recent.clone()));
                    recent
                }
                Err(e) => {
                    warn!(error = %e, "cannot read recent output sizes; estimating without them");
                    Vec::new()
                }
            },
        };
        crate::progress::estimate(&recent, job.params.max_tokens)
    }

    /// Forgets recent output sizes of `job`'s job type and model that were too few to
    /// estimate from, now that one more job of them completed.
    pub(super) fn completed_for_estimates(&self, job: &crate::job::Job) {
        let key = (job.job_type.clone(), job.params.model.clone());
        self.estimates.remove_if(&key, |(_, recent)| {
            recent.len() < crate::progress::MIN_ESTIMATE_SAMPLE
        });
    }
}
