//! Publishing an attempt's events: flushes of token deltas with the stage changes, progress
//! and closing events that go with them, appends in doubt sent again at the same head, and
//! what each append's answer tells the attempt.

use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use super::Progress;
use crate::{
    events::{Appended, CancelCheck, Codec, Event, EventKind as Kind, Fence, event},
    job::Job,
    worker::{Running, StopReason, Worker},
};

impl Worker {
    /// Publishes the text not yet published (see [`Unpublished::take_append`] for how it is
    /// cut into deltas). Text that cannot be published (Redis unavailable) stays waiting for
    /// the next flush, so an outage delays deltas but loses none. Returns whether nothing is
    /// left waiting.
    ///
    /// Each append carries, in order, the stage changes and milestones waiting to go out
    /// before the text (the first token's), the deltas, and, once the text is all out, the
    /// progress update it allows and the closing events ([`Progress::closing`]): one round
    /// trip per flush. The progress snapshot is replaced only by appends that carry more than
    /// deltas (the live token count is read from the log). The attempt's last flush (when
    /// anything is left for it: a completing attempt always has its closing events) and one
    /// at most every [`super::deltas::CANCEL_CHECK_EVERY`] after the start's read also read
    /// the job's cancel flag: when it is set, the attempt stops as cancelled, as the cancel
    /// signal would have stopped it, so a lost signal is made up for within that interval.
    /// With [`Progress::seal`], the last append claims the job's end instead of just reading
    /// the flag ([`Progress::sealed`] says whether it did).
    pub(in crate::worker) async fn flush(
        &self,
        job: &Job,
        running: &Running,
        progress: &mut Progress,
    ) -> bool {
        if !self.settle_in_doubt(job, running, progress).await {
            return false;
        }
        loop {
            let Some(batch) = next_append(progress) else {
                return true;
            };
            let snapshot = batch
                .kinds
                .iter()
                .any(|k| !matches!(k, Kind::TokenDelta(_)))
                .then(|| {
                    progress.tracker.set_worker(self.latest_resources());
                    progress.tracker.snapshot()
                });
            let cancel = if batch.seal {
                CancelCheck::Seal
            } else if progress.unpublished.cancel_read_due(Instant::now()) {
                CancelCheck::Read
            } else {
                CancelCheck::Skip
            };
            let events: Vec<Event> = batch.kinds.into_iter().map(event).collect();
            match self
                .deps
                .events
                .append_events(
                    job.id,
                    &events,
                    fence(job, progress),
                    snapshot.as_ref(),
                    cancel,
                )
                .await
            {
                // Published, or refused because a newer attempt owns the log: either way done.
                Ok(appended) => {
                    if appended.sequence.is_some() {
                        self.deps.metrics.published(events.len());
                    }
                    let codec = self.deps.events.codec();
                    noted(codec, progress, running, &events, &appended, cancel)
                }
                Err(e) => {
                    progress.flush_failed(&e);
                    // Whether they went in is unknown (the append may still run): the next
                    // flush sends exactly them again, at the same head, which cannot add
                    // them twice.
                    if let Some(head) = progress.log_head {
                        progress.in_doubt(head, events, cancel);
                        return false;
                    }
                    // No head to fence on: the log is read back at the end.
                    progress.log = None;
                    keep_for_next(progress, events, batch.prefix_len, batch.closing_len);
                    return false;
                }
            }
            if batch.all_out {
                return true;
            }
        }
    }

    /// Sends again the append in doubt, if any (see [`Progress::in_doubt`]). Returns whether
    /// none is left in doubt.
    async fn settle_in_doubt(&self, job: &Job, running: &Running, progress: &mut Progress) -> bool {
        let Some((head, events, cancel)) = progress.in_doubt.take() else {
            return true;
        };
        let fence = Fence::At {
            attempt: job.attempts,
            head,
        };
        match self
            .deps
            .events
            .append_events(job.id, &events, fence, None, cancel)
            .await
        {
            // In now (by this try or the first), or refused (a newer attempt owns the log):
            // either way no longer in doubt.
            Ok(appended) => {
                if appended.sequence.is_some() {
                    self.deps.metrics.published(events.len());
                }
                noted(
                    self.deps.events.codec(),
                    progress,
                    running,
                    &events,
                    &appended,
                    cancel,
                );
                true
            }
            Err(e) => {
                progress.flush_failed(&e);
                progress.in_doubt(head, events, cancel);
                false
            }
        }
    }

    /// Publishes `kinds` with the tracker's fresh snapshot. Best effort: progress must never
    /// hold up or fail generation, so a Redis error is logged and the events dropped.
    pub(in crate::worker) async fn publish_tracked(
        &self,
        job: &Job,
        progress: &mut Progress,
        kinds: Vec<Kind>,
    ) {
        if kinds.is_empty() {
            return;
        }
        if progress.in_doubt.is_some() {
            // Nothing may overtake an append in doubt; the next flush settles it.
            return;
        }
        progress.tracker.set_worker(self.latest_resources());
        let snapshot = progress.tracker.snapshot();
        let events: Vec<Event> = kinds.into_iter().map(event).collect();
        match self
            .deps
            .events
            .append_events(
                job.id,
                &events,
                fence(job, progress),
                Some(&snapshot),
                CancelCheck::Skip,
            )
            .await
        {
            Ok(appended) => {
                if appended.sequence.is_some() {
                    self.deps.metrics.published(events.len());
                }
                progress.logged(self.deps.events.codec(), &events, appended.sequence);
                progress.log_head = appended.sequence;
                progress.answered(&appended);
            }
            Err(e) => {
                warn!(error = %e, "cannot publish progress events yet; keeping them");
                match progress.log_head {
                    // As a flush's: sent again, at the same head, by the next flush.
                    Some(head) => progress.in_doubt(head, events, CancelCheck::Skip),
                    None => progress.log = None,
                }
            }
        }
    }

    /// Flushes until everything is published, retrying through a Redis outage while the
    /// lease holds. Returns false when it gave up.
    pub(in crate::worker) async fn flush_all(
        &self,
        job: &Job,
        running: &Running,
        progress: &mut Progress,
    ) -> bool {
        let mut delay = Duration::from_millis(200);
        loop {
            if self.flush(job, running, progress).await {
                return true;
            }
            if running.reason.get() == Some(&StopReason::LeaseLost) {
                return false;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.hard_stop.cancelled() => return false,
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

/// What one append of a flush carries (see [`Worker::flush`]).
struct Batch {
    /// In order: the stage changes and milestones before the text, the deltas, then (when
    /// the text is all out) the progress update and the closing events.
    kinds: Vec<Kind>,
    /// How many of `kinds` go before the text.
    prefix_len: usize,
    /// How many of `kinds` are closing events (at the end).
    closing_len: usize,
    /// The text is all out with this append.
    all_out: bool,
    /// This append claims the job's end.
    seal: bool,
}

/// The next append of a flush; `None` when nothing waits.
fn next_append(progress: &mut Progress) -> Option<Batch> {
    let mut kinds = std::mem::take(&mut progress.before_text);
    let prefix_len = kinds.len();
    kinds.extend(
        progress
            .unpublished
            .take_append()
            .into_iter()
            .map(Kind::TokenDelta),
    );
    let all_out = progress.unpublished.is_empty();
    let mut closing_len = 0;
    if all_out {
        // Progress counts only delivered tokens: it goes out with the last deltas.
        let (tokens, rate) = (progress.output_tokens, progress.rate());
        kinds.extend(progress.tracker.tokens(tokens, rate));
        closing_len = progress.closing.len();
        kinds.append(&mut progress.closing);
    }
    (!kinds.is_empty()).then_some(Batch {
        kinds,
        prefix_len,
        closing_len,
        all_out,
        seal: all_out && progress.seal,
    })
}

/// Puts the events of a failed append with no head to fence on back where they waited: the
/// stage changes and milestones before the text, the deltas, the closing events (a progress
/// update is made afresh by the next flush).
fn keep_for_next(
    progress: &mut Progress,
    events: Vec<Event>,
    prefix_len: usize,
    closing_len: usize,
) {
    let mut kinds: Vec<Kind> = events.into_iter().map(|e| e.kind).collect();
    progress.closing = kinds.split_off(kinds.len() - closing_len);
    let mut kinds = kinds.into_iter();
    progress.before_text = kinds.by_ref().take(prefix_len).collect();
    let deltas = kinds
        .filter_map(|k| match k {
            Kind::TokenDelta(d) => Some(d),
            _ => None,
        })
        .collect();
    progress.unpublished.restore(deltas);
}

/// The fence of the attempt's next append: at the log's end when the attempt knows it (so
/// that a resent append cannot go in twice), else the attempt alone.
fn fence(job: &Job, progress: &Progress) -> Fence {
    match progress.log_head {
        Some(head) => Fence::At {
            attempt: job.attempts,
            head,
        },
        None => Fence::Attempt(job.attempts),
    }
}

/// Notes what an append of `events` (with its `cancel` check) answered: the attempt's copy of
/// the log, where the log ends (unknown after a refusal), who watches, the end's claim, and
/// a cancel it found.
fn noted(
    codec: &dyn Codec,
    progress: &mut Progress,
    running: &Running,
    events: &[Event],
    appended: &Appended,
    cancel: CancelCheck,
) {
    progress.logged(codec, events, appended.sequence);
    progress.log_head = appended.sequence;
    progress.answered(appended);
    progress.watched = appended.watched;
    if cancel == CancelCheck::Seal {
        // Claimed, refused for the flag, or refused as stale: asked once.
        progress.seal = false;
        progress.sealed = appended.sealed;
    }
    if appended.cancel_requested {
        running.stop(StopReason::Cancelled);
    }
}
