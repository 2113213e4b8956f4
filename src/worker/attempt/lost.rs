//! Attempts lost with their worker (killed, crashed, or cut off past its lease): they record
//! no outcome of their own, so the next attempt finds them, records them as failed
//! (`worker_lost`), reports them in the event log, and counts them against `max_attempts`.

use super::store_transient;
use crate::{
    events::{
        EventKind as Kind, Fence, event,
        event::{AttemptFailed, Failed},
    },
    job::{Job, JobError, Outcome},
    store::Finish,
    worker::{Running, Worker},
};
use tracing::warn;

impl Worker {
    /// The failures of the attempts before `job`'s current one. An earlier attempt with no
    /// recorded outcome ended with its worker lost (killed, crashed, or cut off past its
    /// lease): it is recorded now as failed with `worker_lost`, so the job's attempt errors
    /// and event log show it. `None` (after a warning) when the store cannot be read; the
    /// attempt then runs as if nothing were known.
    pub(super) async fn earlier_attempts(&self, job: &Job) -> Option<Earlier> {
        if job.attempts <= 1 {
            return Some(Earlier::default());
        }
        let mut failures = match self.deps.store.attempt_failures(job.id).await {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "cannot read earlier attempts; running this one");
                return None;
            }
        };
        let mut lost = Vec::new();
        for attempt in 1..job.attempts {
            if failures.iter().any(|(n, _)| *n == attempt) {
                continue;
            }
            let error = JobError {
                code: "worker_lost".to_owned(),
                message: format!(
                    "attempt {attempt} ended with its worker lost (killed, crashed or cut off \
                     past its lease) before it recorded an outcome"
                ),
            };
            warn!(attempt, "{}", error.message);
            self.deps.metrics.reclaimed(&job.queue);
            if let Err(e) = self
                .deps
                .store
                .record_attempt_failure(job.id, attempt, &error)
                .await
            {
                warn!(error = %e, "cannot record the lost attempt");
            }
            failures.push((attempt, error.clone()));
            lost.push((attempt, error));
        }
        Some(Earlier { failures, lost })
    }

    /// Attempts whose worker was lost record no outcome of their own, so only
    /// [`Worker::earlier_attempts`] counts them: a job that kills its worker every time would
    /// otherwise run for ever, each time a paid upstream call. They count against
    /// `max_attempts` as failed attempts do (Horizon counts them too); graceful shutdown
    /// handbacks (`worker_shutdown`) do not. When this attempt would be one too many, the job
    /// fails for good with `attempts_exhausted`. Returns whether it did (or gave up writing:
    /// the lease decides).
    pub(super) async fn attempts_exhausted(
        &self,
        job: &Job,
        earlier: &Earlier,
        running: &Running,
    ) -> bool {
        let failures = &earlier.failures;
        let handbacks = failures
            .iter()
            .filter(|(_, e)| e.code == "worker_shutdown")
            .count();
        let counted = u64::from(job.attempts).saturating_sub(handbacks as u64);
        if counted <= u64::from(job.max_attempts) {
            return false;
        }
        // A cancel asked before this end wins: the attempt runs instead and stops at its
        // start, which reads the flag (a flag set after this read is the rare loser).
        if matches!(self.deps.queue.cancel_requested(job.id).await, Ok(Some(_))) {
            return false;
        }
        let lost = failures
            .iter()
            .filter(|(_, e)| e.code == "worker_lost")
            .count();
        let error = JobError {
            code: "attempts_exhausted".to_owned(),
            message: format!(
                "attempt {} would exceed max_attempts {}: {lost} earlier attempt(s) ended with \
                 their worker lost (killed or crashed) before recording an outcome",
                job.attempts, job.max_attempts
            ),
        };
        warn!(code = %error.code, "not running the job again: {}", error.message);
        let finish = Finish::Failed {
            error: error.clone(),
            retryable: false,
            partial: Outcome::default(),
        };
        let stored = self
            .persist(running, "storing the failure", store_transient, || {
                self.deps.store.finish_attempt(
                    job.id,
                    job.attempts,
                    finish.clone(),
                    &[],
                    None,
                    None,
                )
            })
            .await;
        match stored {
            Ok(Some(_)) => {
                self.deps
                    .metrics
                    .ended(&job.queue, crate::metrics::Ended::Failed);
                let mut kinds = earlier.lost_events(false);
                kinds.push(Kind::Failed(Failed {
                    error: Some(error.clone()),
                    attempts: job.attempts,
                }));
                // The log's current attempt is a lost one: this attempt takes it over to end it.
                let events = kinds.into_iter().map(event).collect();
                let fence = Fence::Start(job.attempts);
                self.publish_terminal(job.id, fence, events, None, None, false)
                    .await;
            }
            Ok(None) => {}
            Err(_) => return true,
        }
        self.settle(job.id, &running.owner, None);
        true
    }
}

/// What the attempts before the current one left: every recorded failure (lost attempts
/// included, as `worker_lost`), and the lost attempts recorded just now.
#[derive(Default)]
pub(super) struct Earlier {
    failures: Vec<(u32, JobError)>,
    lost: Vec<(u32, JobError)>,
}

impl Earlier {
    /// An `attempt_failed` event for each attempt found lost just now.
    pub(super) fn lost_events(&self, will_retry: bool) -> Vec<Kind> {
        self.lost
            .iter()
            .map(|(attempt, error)| {
                Kind::AttemptFailed(AttemptFailed {
                    attempt: *attempt,
                    error: Some(error.clone()),
                    will_retry,
                    retry_time: None,
                })
            })
            .collect()
    }
}
