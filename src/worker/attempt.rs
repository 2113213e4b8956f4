//! Running one attempt of a job: start it in the store, have [`super::generate`] stream it,
//! and end it exactly once (completed, retry, failed, cancelled, or handed back), retrying
//! writes through dependency outages while the lease holds.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use tokio::time::Instant;
use tracing::{Instrument, warn};

use super::{
    Running, StopReason, Worker,
    generate::{AttemptError, End, Progress, Start},
    tracker::Tracker,
};
use crate::{
    events::{
        CancelCheck, Codec, Event, EventKind as Kind, Fence, event,
        event::{AttemptFailed, Started},
    },
    job::{Job, JobId},
    progress::{JobProgress, MilestoneKind, Stage},
};

mod abandon;
mod ending;
mod lost;
mod measured;

/// The attempt's copy of the log after its start's append: the events before it (`earlier`,
/// with their sequences), then its own (`own`), the last of which got `sequence`. `None` when
/// the sequences do not run on by one.
fn start_log(
    codec: &dyn Codec,
    earlier: &[Event],
    own: &[Event],
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
        log.push(codec, e);
    }
    own.iter().for_each(|e| log.push(codec, e));
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
        let provider = self.deps.providers.for_model(&job.params.model).clone();
        let mut tracker = Tracker::new(
            &job,
            self.estimate(&job).await,
            Duration::from_millis(self.cfg.progress_interval_ms),
        );
        tracker.set_worker(self.latest_resources());
        let Some(start) = self.start(&job, &running, &mut tracker, lost).await else {
            return;
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
        let call = self.deps.metrics.call(provider.name(), &job.params.model);
        let mut progress = Progress::new(&job, &*provider, tracker, start, call);
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

    /// Publishes the attempt's start: `lost`, the `started` event and the dispatched stage in
    /// one append, which also reads the job's cancel flag (a cancel requested before this
    /// worker held the job sent its signal to nobody, and stops the attempt here as the
    /// signal would have). `None` when the attempt must not run: the log is closed or a
    /// newer attempt started (settled), or the lease is lost or the worker shuts down.
    async fn start(
        &self,
        job: &Job,
        running: &Running,
        tracker: &mut Tracker,
        lost: Vec<Kind>,
    ) -> Option<Start> {
        let attempt = job.attempts;
        let mut opening: Vec<Event> = lost.into_iter().map(event).collect();
        opening.push(event(Kind::Started(Started {
            attempt,
            worker_id: self.id.clone(),
            model: job.params.model.clone(),
        })));
        opening.push(event(tracker.advance(Stage::Dispatched)));
        let snapshot = tracker.snapshot();
        let what = "publishing the started event";
        let published = self
            .persist(running, what, events_transient, || {
                self.deps.events.append_events(
                    job.id,
                    &opening,
                    Fence::Start(attempt),
                    Some(&snapshot),
                    CancelCheck::Read,
                )
            })
            .await;
        match published {
            Ok(appended) if appended.sequence.is_some() => {
                self.deps.metrics.published(opening.len());
                if appended.cancel_requested {
                    running.stop(StopReason::Cancelled);
                }
                let codec = self.deps.events.codec();
                let log = start_log(codec, &appended.earlier, &opening, appended.sequence);
                Some(Start {
                    log_head: appended.sequence,
                    watched: appended.watched,
                    log,
                })
            }
            Ok(_) => {
                // The log is closed (the job ended meanwhile) or a newer attempt started.
                self.settle(job.id, &running.owner, None);
                None
            }
            // Lease lost, or shutting down: another attempt will run it.
            Err(_) => None,
        }
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
        progress.closing.push(Kind::AttemptFailed(AttemptFailed {
            attempt: job.attempts,
            error: Some(err.to_job_error()),
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

    /// Appends `events`, whose last is the terminal event, in one step under `fence` (with
    /// the final progress snapshot when given), which starts the expiry of the job's live
    /// keys. The store has `expected` as the terminal sequence and, when `stored_log`, the
    /// whole log ending there (written with the result). When the log gave the event another
    /// sequence (an append whose answer was lost, a log restarted meanwhile, another writer
    /// came first), none was known, or the log was not stored, the append returns the log as
    /// it is and it goes to the batched writer with its last sequence. A log lost with Redis
    /// takes nothing: it is said in a warning, and the store's end stands.
    pub(in crate::worker) async fn publish_terminal(
        &self,
        job_id: JobId,
        fence: Fence,
        events: Vec<Event>,
        snapshot: Option<&JobProgress>,
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
            Ok(closed) => {
                match crate::events::archive::of_events(self.deps.events.codec(), &closed.log) {
                    Some(log) => self.sequences.record_log(job_id, log).await,
                    None => {
                        if let Some(seq) = closed.sequence
                            && Some(seq) != expected
                        {
                            self.sequences.record(job_id, seq).await;
                        }
                    }
                }
            }
            // Watchers notice the terminal status in the store and repair the log.
            Err(e) => warn!(error = %e, "cannot publish the terminal event"),
        }
    }
}
