//! Running one attempt of a job: start it in the store, have [`super::generate`] stream it,
//! and end it exactly once (completed, retry, failed, cancelled, or handed back), retrying
//! writes through dependency outages while the lease holds.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use tokio::time::Instant;
use tracing::{Instrument, info, warn};

use super::{
    Running, StopReason, Worker,
    generate::{AttemptError, End, Progress},
    retry::backoff,
    tracker::Tracker,
};
use crate::{
    events::{CancelCheck, Fence, event},
    job::{Job, JobError, JobId, Outcome},
    proto::v1::{self, MilestoneKind, Stage, job_event::Kind},
    store::Finish,
};

mod abandon;
mod lost;
mod measured;

/// The attempt's copy of the log after its start's append: the events before it (`earlier`,
/// with their sequences), then its own (`own`), the last of which got `sequence`. `None` when
/// the sequences do not run on by one.
fn start_log(
    earlier: &[v1::JobEvent],
    own: &[v1::JobEvent],
    sequence: Option<u64>,
) -> Option<crate::events::archive::Builder> {
    let last = sequence?;
    let first = match earlier.first() {
        Some(e) => e.sequence,
        None => (last + 1).checked_sub(own.len() as u64)?,
    };
    let mut log = crate::events::archive::Builder::new(first);
    for e in earlier {
        if log.next_sequence() != Some(e.sequence) {
            return None;
        }
        log.push(e);
    }
    own.iter().for_each(|e| log.push(e));
    (log.next_sequence() == Some(last + 1)).then_some(log)
}

fn events_transient(e: &crate::events::Error) -> bool {
    matches!(e, crate::events::Error::Unavailable(_))
}

fn store_transient(e: &crate::store::Error) -> bool {
    e.is_transient()
}

impl Worker {
    /// Runs a write until it succeeds, retrying while `transient` says the backend is only
    /// unavailable and this worker still holds the job's lease (the heartbeat keeps it alive
    /// meanwhile), so an outage delays a result instead of losing it. `Err(Some(e))` for a
    /// permanent error; `Err(None)` when it gave up: the lease was lost or the drain ended.
    async fn persist<T, E, F, Fut>(
        &self,
        running: &Running,
        what: &str,
        transient: impl Fn(&E) -> bool,
        mut op: F,
    ) -> Result<T, Option<E>>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let mut delay = Duration::from_millis(200);
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if transient(&e) => {
                    if running.reason.get() == Some(&StopReason::LeaseLost) {
                        warn!(error = %e, "{what}: backend unavailable and the lease is lost; giving up");
                        return Err(None);
                    }
                    warn!(error = %e, "{what}: backend unavailable; retrying in {delay:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.hard_stop.cancelled() => return Err(None),
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    tracing::error!(error = %e, "{what} failed");
                    return Err(Some(e));
                }
            }
        }
    }

    /// Runs one claimed job to the end of this attempt, in its `job.attempt` span (see
    /// [`crate::trace::attempt_span`]: it continues the trace of the call that submitted it).
    pub(super) async fn run_attempt(self: Arc<Self>, job_id: JobId, running: Arc<Running>) {
        // A worker that cannot reach Postgres gives the claim back for a later try.
        let job = match self.deps.store.start_attempt(job_id).await {
            Ok(Some(job)) => job,
            Ok(None) => {
                // Terminal or unknown in the store: nothing to run.
                self.settle(job_id, &running.owner, None);
                return;
            }
            Err(e) => {
                warn!(job_id = %job_id, error = %e, "cannot start the attempt; handing the job back");
                let later = Utc::now() + chrono::Duration::seconds(2);
                self.settle(job_id, &running.owner, Some(later));
                return;
            }
        };
        let span = crate::trace::attempt_span(&job);
        async {
            let earlier = self.earlier_attempts(&job).await;
            if job.attempts > job.max_attempts
                && let Some(earlier) = &earlier
                && self.attempts_exhausted(&job, earlier, &running).await
            {
                return;
            }
            let lost = earlier.map(|e| e.lost_events(true)).unwrap_or_default();
            self.attempt(job, running, lost).await;
        }
        .instrument(span)
        .await;
    }

    /// Runs attempt `job.attempts`; `lost` (the `attempt_failed` events of earlier attempts
    /// whose worker was lost) go out with its `started` event.
    async fn attempt(&self, job: Job, running: Arc<Running>, lost: Vec<Kind>) {
        let attempt = job.attempts;
        let provider = self.deps.providers.for_model(&job.params.model).clone();
        let mut tracker = Tracker::new(
            &job,
            self.estimate(&job).await,
            Duration::from_millis(self.cfg.progress_interval_ms),
        );
        tracker.set_worker(self.latest_resources());
        // The started event and the dispatched stage go out together: one round trip.
        let mut opening: Vec<v1::JobEvent> = lost.into_iter().map(event).collect();
        opening.push(event(Kind::Started(v1::JobStarted {
            attempt,
            worker_id: self.id.clone(),
            model: job.params.model.clone(),
        })));
        opening.push(event(tracker.advance(Stage::Dispatched)));
        let snapshot = tracker.snapshot();
        // It also reads the job's cancel flag: a cancel requested before this worker held the
        // job sent its signal to nobody, and stops the attempt here as the signal would have.
        let published = self
            .persist(
                &running,
                "publishing the started event",
                events_transient,
                || {
                    self.deps.events.append_events(
                        job.id,
                        &opening,
                        Fence::Start(attempt),
                        Some(&snapshot),
                        CancelCheck::Read,
                    )
                },
            )
            .await;
        let (log_head, watched, log) = match published {
            Ok(appended) if appended.sequence.is_some() => {
                self.deps.metrics.published(opening.len());
                if appended.cancel_requested {
                    running.stop(StopReason::Cancelled);
                }
                let log = start_log(&appended.earlier, &opening, appended.sequence);
                (appended.sequence, appended.watched, log)
            }
            Ok(_) => {
                // The log is closed (the job ended meanwhile) or a newer attempt started.
                self.settle(job.id, &running.owner, None);
                return;
            }
            // Lease lost, or shutting down: another attempt will run it.
            Err(_) => return,
        };
        // Tests make an attempt's task die here, once it is RUNNING and its start is
        // published, for jobs of the model the point is armed with (`return(<model>)`): the
        // drop guard of `spawn_attempt` must end it as a failed attempt.
        #[cfg(feature = "failpoints")]
        (|| {
            fail::fail_point!("worker-attempt-started", |model: Option<String>| {
                if model.as_deref() == Some(job.params.model.as_str()) {
                    panic!("fault point worker-attempt-started armed for this model");
                }
            })
        })();
        if let Some(started) = job.started_at {
            let waited = (started - job.enqueued_at).to_std().unwrap_or_default();
            self.deps.metrics.started(&job.queue, waited);
        }

        let mut progress = Progress {
            outcome: Outcome {
                model: job.params.model.clone(),
                provider: provider.name().to_owned(),
                simulated: provider.simulated(),
                queue_wait_ms: job
                    .started_at
                    .map(|s| u64::try_from((s - job.enqueued_at).num_milliseconds()).unwrap_or(0))
                    .unwrap_or(0),
                ..Outcome::default()
            },
            output_tokens: 0,
            reported_usage: None,
            sent_at: Instant::now(),
            began: Instant::now(),
            called: false,
            call: self.deps.metrics.call(provider.name(), &job.params.model),
            first_token_at: None,
            last_token_at: None,
            unpublished: Default::default(),
            mode: job.streaming_mode,
            tracker,
            gaps_ms: Vec::new(),
            before_text: Vec::new(),
            log_head,
            published: log_head.unwrap_or(0),
            log_lost: false,
            log,
            closing: Vec::new(),
            seal: false,
            sealed: false,
            flush_failures: super::generate::LogEvery::new(super::generate::FLUSH_WARN_EVERY),
            watched,
            in_doubt: None,
        };
        // The start append read the cancel flag just now.
        progress.unpublished.cancel_read(Instant::now());
        let chat = crate::trace::chat_span(provider.name(), &job.params.model);
        let end = self
            .generate(&job, &*provider, &running, &mut progress)
            .instrument(chat.clone())
            .await;
        progress.finish();
        crate::trace::end_chat(
            &chat,
            &progress.outcome.model,
            &progress.outcome.usage,
            end.error_type(),
        );
        drop(chat);
        let o = &mut progress.outcome;
        o.cost_usd = if o.simulated {
            None
        } else {
            self.deps.pricing.cost(&o.model, &o.usage)
        };
        self.end(job, &running, end, progress).await;
    }

    /// Finalizes a completed attempt: parses structured output and notes the milestones of
    /// the answer (cut by max_tokens, structured output valid or not). Returns the events
    /// that say so; they go out with the last flush, which claims the job's end.
    pub(super) fn finalize(job: &Job, progress: &mut Progress) -> Vec<Kind> {
        let mut kinds = vec![progress.tracker.advance(Stage::Finalizing)];
        let structured = crate::structured::evaluate(
            job.params.response_format.as_ref(),
            &progress.outcome.content,
        );
        let o = &progress.outcome;
        if o.content.trim().is_empty() && !o.reasoning_content.is_empty() {
            let detail = format!("finish_reason {:?}", o.finish_reason);
            kinds.push(
                progress
                    .tracker
                    .milestone(MilestoneKind::ReasoningOnly, &detail),
            );
        }
        if progress.outcome.finish_reason == "length" {
            kinds.push(
                progress
                    .tracker
                    .milestone(MilestoneKind::MaxTokensReached, ""),
            );
        }
        if let Some(so) = &structured {
            let (kind, detail) = if so.valid {
                (MilestoneKind::StructuredOutputValid, String::new())
            } else {
                let first = so.errors.first().map_or_else(String::new, |(path, msg)| {
                    if path.is_empty() {
                        msg.clone()
                    } else {
                        format!("{path}: {msg}")
                    }
                });
                (MilestoneKind::StructuredOutputInvalid, first)
            };
            kinds.push(progress.tracker.milestone(kind, &detail));
        }
        progress.outcome.structured = structured;
        kinds
    }

    /// Whether the attempt's failure `err` sends the job back to its queue.
    fn will_retry(job: &Job, err: &AttemptError) -> bool {
        // A shutdown hands the job back whatever its attempt count: it did not fail.
        matches!(err, AttemptError::Shutdown)
            || (err.is_retryable() && job.attempts < job.max_attempts)
    }

    /// Whether a cancel was asked for the job: its signal reached the attempt, or its flag
    /// is set (one read; unknown counts as no: then the next attempt's start reads it).
    async fn cancel_asked(&self, job: &Job, running: &Running) -> bool {
        running.reason.get() == Some(&StopReason::Cancelled)
            || matches!(self.deps.queue.cancel_requested(job.id).await, Ok(Some(_)))
    }

    /// Claims the end of an attempt that fails its job for good, with its `attempt_failed`
    /// event (and any text still waiting), as a completing attempt's last flush does.
    /// `Some(true)`: claimed, or the log refused the attempt as stale (the store's fence
    /// then refuses it too); `Some(false)`: the cancel flag was set first, so the job ends
    /// cancelled; `None`: gave up (lease lost, or shutting down).
    async fn claim_failure(
        &self,
        job: &Job,
        running: &Running,
        err: &AttemptError,
        progress: &mut Progress,
    ) -> Option<bool> {
        progress
            .closing
            .push(Kind::AttemptFailed(v1::AttemptFailed {
                attempt: job.attempts,
                error: Some(crate::api::convert::job_error(&err.to_job_error())),
                will_retry: false,
                retry_time: None,
            }));
        progress.seal = true;
        progress.unpublished.read_cancel_next();
        if !self.flush_all(job, running, progress).await {
            return None;
        }
        Some(progress.sealed || running.reason.get() != Some(&StopReason::Cancelled))
    }

    async fn end(&self, job: Job, running: &Running, mut end: End, mut progress: Progress) {
        let attempt = job.attempts;
        let store = &self.deps.store;
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
                self.retry_or_fail(
                    &job,
                    running,
                    AttemptError::Shutdown,
                    progress,
                    Some(Duration::ZERO),
                )
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
        let outcome = progress.outcome.clone();
        let stage_end = progress.tracker.end(match finish {
            Finish::Completed(_) => Stage::Completed,
            _ => Stage::Cancelled,
        });
        let history = progress.tracker.take_history();
        let terminal = match &finish {
            Finish::Completed(o) => Kind::Completed(v1::JobCompleted {
                finish_reason: o.finish_reason.clone(),
                usage: Some(crate::api::convert::usage(&o.usage)),
            }),
            _ => Kind::Cancelled(v1::JobCancelled {
                reason: self
                    .deps
                    .queue
                    .cancel_requested(job.id)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| crate::gateway::DEFAULT_CANCEL_REASON.to_owned()),
            }),
        };
        // The finalizing events went out with the last flush, which claimed the end.
        let events: Vec<v1::JobEvent> = [stage_end, terminal].into_iter().map(event).collect();
        let expected = progress.end_sequence(events.len());
        let log = progress.final_log(&events, expected);
        let stored = self
            .persist(running, "storing the result", store_transient, || {
                store.finish_attempt(
                    job.id,
                    attempt,
                    finish.clone(),
                    &history,
                    expected,
                    log.as_ref(),
                )
            })
            .await;
        match stored {
            Ok(Some(_)) => {
                if matches!(finish, Finish::Completed(_)) {
                    self.completed_for_estimates(&job);
                    self.measure_end(&job, &progress, crate::metrics::Outcome::Completed);
                } else {
                    self.measure_end(&job, &progress, crate::metrics::Outcome::Cancelled);
                }
                // A lost log takes no more events: the store has the end (see
                // `Progress::end_sequence`).
                if !progress.log_lost {
                    let snapshot = progress.tracker.snapshot();
                    self.publish_terminal(
                        job.id,
                        Fence::Attempt(attempt),
                        events,
                        Some(&snapshot),
                        expected,
                        log.is_some(),
                    )
                    .await;
                }
                info!(output_tokens = outcome.usage.output_tokens, "attempt ended");
            }
            Ok(None) => info!("attempt was superseded; result discarded"),
            // The store will never take this result (it should not happen: text is cleaned
            // first); fail the job rather than run it again and again.
            Err(Some(e)) => {
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
                if let Ok(Some(_)) = store
                    .finish_attempt(job.id, attempt, finish, &[], expected, None)
                    .await
                {
                    self.measure_end(&job, &progress, crate::metrics::Outcome::Failed);
                    let terminal = Kind::Failed(v1::JobFailed {
                        error: Some(crate::api::convert::job_error(&error)),
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
            // The lease expires and another attempt runs the job again.
            Err(None) => return,
        }
        self.settle(job.id, &running.owner, None);
    }

    async fn retry_or_fail(
        &self,
        job: &Job,
        running: &Running,
        err: AttemptError,
        mut progress: Progress,
        delay: Option<Duration>,
    ) {
        let attempt = job.attempts;
        let partial = progress.outcome.clone();
        let error = err.to_job_error();
        let will_retry = Self::will_retry(job, &err);
        warn!(code = %error.code, will_retry, "attempt failed: {}", error.message);
        if will_retry {
            let delay = delay.unwrap_or_else(|| {
                backoff(
                    attempt,
                    Duration::from_millis(self.cfg.retry_base_ms),
                    Duration::from_millis(self.cfg.retry_cap_ms),
                    err.retry_after(),
                )
            });
            let retry_at = super::retry::retry_time(Utc::now(), delay);
            let retry_events = progress.tracker.retry(&error.code, retry_at);
            let history = progress.tracker.take_history();
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
                    let failed = Kind::AttemptFailed(v1::AttemptFailed {
                        attempt,
                        error: Some(crate::api::convert::job_error(&error)),
                        will_retry: true,
                        retry_time: Some(crate::api::convert::timestamp(retry_at)),
                    });
                    let [milestone, change] = retry_events;
                    self.publish_tracked(job, &mut progress, vec![failed, milestone, change])
                        .await;
                    self.settle(job.id, &running.owner, Some(retry_at));
                }
                Ok(false) => self.settle(job.id, &running.owner, None),
                Err(_) => {}
            }
            return;
        }
        let finish = Finish::Failed {
            error: error.clone(),
            retryable: err.is_retryable(),
            partial,
        };
        let stage_end = progress.tracker.end(Stage::Failed);
        let history = progress.tracker.take_history();
        // Its `attempt_failed` went out with the append that claimed the end.
        let terminal = Kind::Failed(v1::JobFailed {
            error: Some(crate::api::convert::job_error(&error)),
            attempts: attempt,
        });
        let events: Vec<v1::JobEvent> = [stage_end, terminal].into_iter().map(event).collect();
        let expected = progress.end_sequence(events.len());
        let log = progress.final_log(&events, expected);
        let stored = self
            .persist(running, "storing the failure", store_transient, || {
                self.deps.store.finish_attempt(
                    job.id,
                    attempt,
                    finish.clone(),
                    &history,
                    expected,
                    log.as_ref(),
                )
            })
            .await;
        match stored {
            Ok(Some(_)) => {
                self.measure_end(job, &progress, crate::metrics::Outcome::Failed);
                if !progress.log_lost {
                    let snapshot = progress.tracker.snapshot();
                    self.publish_terminal(
                        job.id,
                        Fence::Attempt(attempt),
                        events,
                        Some(&snapshot),
                        expected,
                        log.is_some(),
                    )
                    .await;
                }
            }
            Ok(None) => {}
            Err(_) => return,
        }
        self.settle(job.id, &running.owner, None);
    }

    /// Appends `events`, whose last is the terminal event, in one step under `fence` (with
    /// the final progress snapshot when given), which starts the expiry of the job's live
    /// keys. The store has `expected` as the terminal sequence and, when `stored_log`, the
    /// whole log ending there (written with the result). When the log gave the event another
    /// sequence (an append whose answer was lost, a log restarted meanwhile, another writer
    /// came first), none was known, or the log was not stored, the append returns the log as
    /// it is and it goes to the batched writer with its last sequence. A log lost with Redis
    /// takes nothing: it is said in a warning, and the store's end stands.
    async fn publish_terminal(
        &self,
        job_id: JobId,
        fence: Fence,
        events: Vec<v1::JobEvent>,
        snapshot: Option<&v1::JobProgress>,
        expected: Option<u64>,
        stored_log: bool,
    ) {
        let wanted = if stored_log { expected } else { None };
        let closed = self
            .deps
            .events
            .close(job_id, &events, fence, snapshot, wanted)
            .await;
        if closed.as_ref().is_ok_and(|c| c.sequence.is_some()) {
            self.deps.metrics.published(events.len());
        }
        match closed {
            Ok(closed) if closed.lost => warn!(
                "the job's event log was lost (Redis lost its keys) before its terminal event; \
                 watchers get its stored result as a snapshot"
            ),
            Ok(closed) => match crate::events::archive::of_events(&closed.log) {
                Some(log) => self.sequences.record_log(job_id, log).await,
                None => {
                    if let Some(seq) = closed.sequence
                        && Some(seq) != expected
                    {
                        self.sequences.record(job_id, seq).await;
                    }
                }
            },
            // Watchers notice the terminal status in the store and repair the log.
            Err(e) => warn!(error = %e, "cannot publish the terminal event"),
        }
    }

    /// Ends the job's claim: done for good, or delayed until `retry_at`. The slot's next
    /// claim call does it (no round trip of its own); the attempt's task ends right after,
    /// which wakes the claim loop. Until then the lease stays, no longer renewed.
    fn settle(&self, job_id: JobId, owner: &str, retry_at: Option<chrono::DateTime<Utc>>) {
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
