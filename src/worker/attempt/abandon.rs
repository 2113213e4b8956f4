//! Attempts whose task died before they ended (a panic anywhere in them): ended here as a
//! failed attempt would be, so no bug leaves its job RUNNING behind a lease this worker keeps
//! alive.

use std::time::Duration;

use chrono::Utc;
use tracing::warn;

use crate::{
    events::{
        EventKind as Kind, Fence, event,
        event::{AttemptFailed, Failed},
    },
    job::{Job, JobError, JobId, JobStatus, Outcome},
    store::Finish,
    worker::{Running, Worker, retry},
};

impl Worker {
    /// Ends the attempt of `job_id` that `running` stands for, after its task died: while
    /// the job is RUNNING, the attempt is recorded as failed (`internal_error`, retryable)
    /// and retried after the usual backoff, or, with no attempt left, the job fails; a job
    /// still QUEUED (the task died before starting it) goes back to its queue; a finished
    /// one is left alone. When the store cannot say, the job goes back to its queue, and the
    /// next attempt counts this one as lost.
    pub(in crate::worker) async fn abandon(&self, job_id: JobId, running: &Running) {
        let job = match self.deps.store.get_job(job_id).await {
            Ok(Some(job)) => job,
            Ok(None) => return self.settle(job_id, &running.owner, None),
            Err(e) => {
                warn!(job_id = %job_id, error = %e, "cannot read the job of a dead attempt; handing it back");
                return self.settle(job_id, &running.owner, hand_back());
            }
        };
        match job.status {
            JobStatus::Running => {}
            JobStatus::Queued => return self.settle(job_id, &running.owner, hand_back()),
            _ => return self.settle(job_id, &running.owner, None),
        }
        let attempt = job.attempts;
        let error = JobError {
            code: "internal_error".to_owned(),
            message: format!(
                "attempt {attempt} ended abnormally (a bug in the worker; its log has the \
                 panic)"
            ),
        };
        if attempt < job.max_attempts {
            self.abandon_for_retry(&job, running, error).await;
        } else {
            self.abandon_for_good(&job, running, error).await;
        }
    }

    /// Records the dead attempt of `job` as failed with `error` and retries the job after the
    /// usual backoff.
    async fn abandon_for_retry(&self, job: &Job, running: &Running, error: JobError) {
        let (job_id, attempt) = (job.id, job.attempts);
        let delay = retry::backoff(
            attempt,
            Duration::from_millis(self.cfg.retry_base_ms),
            Duration::from_millis(self.cfg.retry_cap_ms),
            None,
        );
        let retry_at = retry::retry_time(Utc::now(), delay);
        match self
            .deps
            .store
            .retry_attempt(job_id, attempt, &error, &[])
            .await
        {
            Ok(true) => {
                self.deps.metrics.retried(&job.queue);
                let ev = event(failed(attempt, error, true, Some(retry_at)));
                if let Err(e) = self
                    .deps
                    .events
                    .append(job_id, &ev, Fence::Attempt(attempt))
                    .await
                {
                    warn!(job_id = %job_id, error = %e, "cannot publish the failed attempt");
                }
                self.settle(job_id, &running.owner, Some(retry_at));
            }
            // Another attempt owns the job now.
            Ok(false) => self.settle(job_id, &running.owner, None),
            Err(e) => {
                warn!(job_id = %job_id, error = %e, "cannot record the failed attempt; handing the job back");
                self.settle(job_id, &running.owner, hand_back());
            }
        }
    }

    /// Records the dead last attempt of `job` as failed with `error`, and the job with it.
    async fn abandon_for_good(&self, job: &Job, running: &Running, error: JobError) {
        let (job_id, attempt) = (job.id, job.attempts);
        let finish = Finish::Failed {
            error: error.clone(),
            retryable: true,
            partial: Outcome::default(),
        };
        match self
            .deps
            .store
            .finish_attempt(job_id, attempt, finish, &[], None, None)
            .await
        {
            Ok(Some(_)) => {
                self.deps
                    .metrics
                    .ended(&job.queue, crate::metrics::Ended::Failed);
                let terminal = Kind::Failed(Failed {
                    error: Some(error.clone()),
                    attempts: attempt,
                });
                let events = vec![event(failed(attempt, error, false, None)), event(terminal)];
                self.publish_terminal(job_id, Fence::Attempt(attempt), events, None, None, false)
                    .await;
                self.settle(job_id, &running.owner, None);
            }
            Ok(None) => self.settle(job_id, &running.owner, None),
            Err(e) => {
                warn!(job_id = %job_id, error = %e, "cannot record the failed job; handing it back");
                self.settle(job_id, &running.owner, hand_back());
            }
        }
    }
}

/// When a job whose state is unknown goes back to its queue: shortly.
fn hand_back() -> Option<chrono::DateTime<Utc>> {
    Some(Utc::now() + chrono::Duration::seconds(2))
}

/// The `attempt_failed` event of a dead attempt.
fn failed(
    attempt: u32,
    error: JobError,
    will_retry: bool,
    retry_time: Option<chrono::DateTime<Utc>>,
) -> Kind {
    Kind::AttemptFailed(AttemptFailed {
        attempt,
        error: Some(error),
        will_retry,
        retry_time,
    })
}
