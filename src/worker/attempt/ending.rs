//! Ending an attempt exactly once: its result, retry or failure stored, then its terminal
//! events published, and its claim settled.

use std::time::Duration;

use chrono::Utc;
use tracing::{info, warn};

use super::store_transient;
use crate::{
    events::{
        Event, EventKind as Kind, Fence, event,
        event::{AttemptFailed, Cancelled, Completed, Failed},
    },
    job::{Job, JobError, JobId, Outcome},
    progress::Stage,
    store::Finish,
    worker::{
        Running, StopReason, Worker,
        generate::{AttemptError, End, Progress},
        retry::backoff,
    },
};

/// What storing an attempt's end answered (see [`Worker::persist`]).
type Stored = Result<Option<Job>, Option<crate::store::Error>>;

/// The terminal events of a stored end, to publish after it.
struct Ending {
    events: Vec<Event>,
    /// The sequence the store has for the terminal event.
    expected: Option<u64>,
    /// Whether the store has the whole log with the end.
    stored_log: bool,
}

impl Worker {
    /// Ends the attempt as `end` says, once: a cancel asked meanwhile wins; a failure retries
    /// or fails the job; a completion or a cancel is stored, then published, then settled.
    pub(in crate::worker) async fn end(
        &self,
        job: Job,
        running: &Running,
        mut end: End,
        mut progress: Progress,
    ) {
        self.measure_call(&progress, &end);
        // A cancel asked before the end wins over a failure too: a final one claims the end
        // as a completion does; a retry that finds the flag ends the job instead of waiting
        // out its backoff (a flag set just after the read stops the next attempt's start).
        let cancelled = match &end {
            End::Failed(err) if Self::will_retry(&job, err) => {
                self.cancel_asked(&job, running).await
            }
            End::Failed(err) => match self.claim_failure(&job, running, err, &mut progress).await {
                Some(claimed) => !claimed,
                None => return,
            },
            End::Stopped(StopReason::Shutdown) => self.cancel_asked(&job, running).await,
            _ => false,
        };
        if cancelled {
            end = End::Stopped(StopReason::Cancelled);
        }
        let finish = match end {
            End::Stopped(StopReason::LeaseLost) => {
                // Another worker owns the job now: write nothing.
                return;
            }
            End::Stopped(StopReason::Shutdown) => {
                let err = AttemptError::Shutdown;
                let handback = Some(Duration::ZERO);
                self.retry_or_fail(&job, running, err, progress, handback)
                    .await;
                return;
            }
            End::Failed(err) => {
                // The job did not complete: no finish reason in its result.
                progress.outcome.finish_reason.clear();
                self.retry_or_fail(&job, running, err, progress, None).await;
                return;
            }
            End::Completed => Finish::Completed(progress.outcome.clone()),
            End::Stopped(StopReason::Cancelled) => Finish::Cancelled {
                partial: progress.outcome.clone(),
            },
        };
        self.finish(&job, running, finish, progress).await;
    }

    /// Stores a completed or cancelled attempt's end, publishes its terminal events and
    /// settles its claim.
    async fn finish(&self, job: &Job, running: &Running, finish: Finish, mut progress: Progress) {
        let completed = matches!(finish, Finish::Completed(_));
        let (stage, terminal) = match &finish {
            Finish::Completed(o) => (
                Stage::Completed,
                Kind::Completed(Completed {
                    finish_reason: o.finish_reason.clone(),
                    usage: Some(o.usage),
                }),
            ),
            _ => (
                Stage::Cancelled,
                Kind::Cancelled(Cancelled {
                    reason: self
                        .deps
                        .queue
                        .cancel_requested(job.id)
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| crate::jobs::DEFAULT_CANCEL_REASON.to_owned()),
                }),
            ),
        };
        // The finalizing events went out with the last flush, which claimed the end.
        let what = "storing the result";
        let (stored, ending) = self
            .store_end(
                job,
                running,
                what,
                &finish,
                (stage, terminal),
                &mut progress,
            )
            .await;
        match stored {
            Ok(Some(_)) => {
                if completed {
                    self.completed_for_estimates(job);
                    self.measure_end(job, &progress, crate::metrics::Outcome::Completed);
                } else {
                    self.measure_end(job, &progress, crate::metrics::Outcome::Cancelled);
                }
                self.publish_end(job, &progress, ending).await;
                let output_tokens = progress.outcome.usage.output_tokens;
                info!(output_tokens, "attempt ended");
            }
            Ok(None) => info!("attempt was superseded; result discarded"),
            // The store will never take this result (it should not happen: text is cleaned
            // first); fail the job rather than run it again and again.
            Err(Some(e)) => self.unstorable(job, &progress, &e).await,
            // The lease expires and another attempt runs the job again.
            Err(None) => return,
        }
        self.settle(job.id, &running.owner, None);
    }

    /// Fails the job whose result the store refused for good (`e`), without its result.
    async fn unstorable(&self, job: &Job, progress: &Progress, e: &crate::store::Error) {
        let attempt = job.attempts;
        let error = JobError {
            code: "result_not_storable".to_owned(),
            message: format!("the store rejected the result: {e}"),
        };
        let finish = Finish::Failed {
            error: error.clone(),
            retryable: false,
            partial: Outcome::default(),
        };
        let expected = progress.end_sequence(1);
        if let Ok(Some(_)) = self
            .deps
            .store
            .finish_attempt(job.id, attempt, finish, &[], expected, None)
            .await
        {
            self.measure_end(job, progress, crate::metrics::Outcome::Failed);
            let terminal = Kind::Failed(Failed {
                error: Some(error),
                attempts: attempt,
            });
            if !progress.log_lost {
                let events = vec![event(terminal)];
                let fence = Fence::Attempt(attempt);
                self.publish_terminal(job.id, fence, events, None, expected, false)
                    .await;
            }
        }
    }

    /// Stores the attempt's end (`finish`, with its progress history and, when the attempt's
    /// copy of the log is whole, the log ending with its terminal events: the stage `end`
    /// reaches and the terminal event). Returns what the store answered (as
    /// [`Worker::persist`] does) and the terminal events to publish once it is stored.
    async fn store_end(
        &self,
        job: &Job,
        running: &Running,
        what: &str,
        finish: &Finish,
        (stage, terminal): (Stage, Kind),
        progress: &mut Progress,
    ) -> (Stored, Ending) {
        let stage_end = progress.tracker.end(stage);
        let codec = self.deps.events.codec();
        let history = codec.progress_records(progress.tracker.take_history());
        let events: Vec<Event> = [stage_end, terminal].into_iter().map(event).collect();
        let expected = progress.end_sequence(events.len());
        let log = progress.final_log(codec, &events, expected);
        let stored = self
            .persist(running, what, store_transient, || {
                self.deps.store.finish_attempt(
                    job.id,
                    job.attempts,
                    finish.clone(),
                    &history,
                    expected,
                    log.as_ref(),
                )
            })
            .await;
        let ending = Ending {
            events,
            expected,
            stored_log: log.is_some(),
        };
        (stored, ending)
    }

    /// Publishes a stored end's terminal events with the final snapshot; a lost log takes
    /// no more events: the store has the end (see `Progress::end_sequence`).
    async fn publish_end(&self, job: &Job, progress: &Progress, ending: Ending) {
        if progress.log_lost {
            return;
        }
        let snapshot = progress.tracker.snapshot();
        let Ending {
            events,
            expected,
            stored_log,
        } = ending;
        let fence = Fence::Attempt(job.attempts);
        self.publish_terminal(job.id, fence, events, Some(&snapshot), expected, stored_log)
            .await;
    }

    /// Records a failed attempt: retried after a backoff (or `delay`) while attempts are
    /// left, else the job fails; either is stored, then published, then settled.
    pub(in crate::worker) async fn retry_or_fail(
        &self,
        job: &Job,
        running: &Running,
        err: AttemptError,
        mut progress: Progress,
        delay: Option<Duration>,
    ) {
        let error = err.to_job_error();
        let will_retry = Self::will_retry(job, &err);
        warn!(code = %error.code, will_retry, "attempt failed: {}", error.message);
        if will_retry {
            return self.retry(job, running, &err, error, progress, delay).await;
        }
        let finish = Finish::Failed {
            error: error.clone(),
            retryable: err.is_retryable(),
            partial: progress.outcome.clone(),
        };
        // Its `attempt_failed` went out with the append that claimed the end.
        let terminal = Kind::Failed(Failed {
            error: Some(error),
            attempts: job.attempts,
        });
        let what = "storing the failure";
        let end = (Stage::Failed, terminal);
        let (stored, ending) = self
            .store_end(job, running, what, &finish, end, &mut progress)
            .await;
        match stored {
            Ok(Some(_)) => {
                self.measure_end(job, &progress, crate::metrics::Outcome::Failed);
                self.publish_end(job, &progress, ending).await;
            }
            Ok(None) => {}
            Err(_) => return,
        }
        self.settle(job.id, &running.owner, None);
    }

    /// Records that the job retries after `delay` (or a backoff): stored, then published
    /// (the attempt's failure, the retry milestone and the next attempt's queued stage),
    /// then settled until the retry time.
    async fn retry(
        &self,
        job: &Job,
        running: &Running,
        err: &AttemptError,
        error: JobError,
        mut progress: Progress,
        delay: Option<Duration>,
    ) {
        let attempt = job.attempts;
        let delay = delay.unwrap_or_else(|| {
            backoff(
                attempt,
                Duration::from_millis(self.cfg.retry_base_ms),
                Duration::from_millis(self.cfg.retry_cap_ms),
                err.retry_after(),
            )
        });
        let retry_at = crate::worker::retry::retry_time(Utc::now(), delay);
        let retry_events = progress.tracker.retry(&error.code, retry_at);
        let history = self
            .deps
            .events
            .codec()
            .progress_records(progress.tracker.take_history());
        let recorded = self
            .persist(running, "recording the retry", store_transient, || {
                self.deps
                    .store
                    .retry_attempt(job.id, attempt, &error, &history)
            })
            .await;
        match recorded {
            Ok(true) => {
                // A shutdown's handback is no failure: not counted as a retry.
                if !matches!(err, AttemptError::Shutdown) {
                    self.measure_end(job, &progress, crate::metrics::Outcome::Retried);
                }
                let failed = Kind::AttemptFailed(AttemptFailed {
                    attempt,
                    error: Some(error),
                    will_retry: true,
                    retry_time: Some(retry_at),
                });
                let [milestone, change] = retry_events;
                self.publish_tracked(job, &mut progress, vec![failed, milestone, change])
                    .await;
                self.settle(job.id, &running.owner, Some(retry_at));
            }
            Ok(false) => self.settle(job.id, &running.owner, None),
            Err(_) => {}
        }
    }

    /// Ends the job's claim: done for good, or delayed until `retry_at`. The slot's next
    /// claim call does it (no round trip of its own); the attempt's task ends right after,
    /// which wakes the claim loop. Until then the lease stays, no longer renewed.
    pub(in crate::worker) fn settle(
        &self,
        job_id: JobId,
        owner: &str,
        retry_at: Option<chrono::DateTime<Utc>>,
    ) {
        if let Some(r) = self.running().get(&job_id) {
            r.settled.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(crate::queue::Settle {
                job_id,
                owner: owner.to_owned(),
                retry_at,
            });
    }
}
