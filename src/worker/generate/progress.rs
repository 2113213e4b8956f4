//! What one attempt knows while it generates: its outcome so far, the text not yet published,
//! its copy of the event log, where the log ends, and the appends whose answer never came.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, warn};

use super::{ms, percentile};
use crate::{
    events::{Appended, CancelCheck, Codec, Event, EventKind as Kind},
    job::{Job, Outcome, StreamingMode, Usage},
    provider::Provider,
    worker::{deltas::Unpublished, tracker::Tracker},
};

/// What the attempt has produced so far.
pub(in crate::worker) struct Progress {
    pub(in crate::worker) outcome: Outcome,
    pub(in crate::worker) output_tokens: u64,
    pub(in crate::worker) reported_usage: Option<Usage>,
    pub(in crate::worker) sent_at: Instant,
    /// When the attempt started (its runtime runs from here).
    pub(in crate::worker) began: Instant,
    /// The upstream request went out (at [`Progress::sent_at`]).
    pub(in crate::worker) called: bool,
    /// The attribute sets its metrics are recorded with.
    pub(in crate::worker) call: crate::metrics::Call,
    pub(in crate::worker) first_token_at: Option<Instant>,
    pub(in crate::worker) last_token_at: Option<Instant>,
    /// Text not yet published.
    pub(in crate::worker) unpublished: Unpublished,
    /// How the job's deltas are published.
    pub(in crate::worker) mode: StreamingMode,
    /// Stages, milestones and progress updates of the attempt.
    pub(in crate::worker) tracker: Tracker,
    /// Gaps between consecutive text chunks (ms).
    pub(in crate::worker) gaps_ms: Vec<f64>,
    /// Stage changes and milestones to publish with the next text (the first token's), so
    /// the first delta costs no extra round trip.
    pub(in crate::worker) before_text: Vec<Kind>,
    /// Sequence of the last event this attempt appended, as the log answered (the attempt
    /// is the log's only writer while it runs, so its terminal event's sequence is known
    /// ahead: see [`Progress::terminal_sequence`]).
    pub(in crate::worker) log_head: Option<u64>,
    /// The highest sequence the job's log may have reached through the attempt's appends:
    /// every answered sequence, and for an append whose answer never came, the sequence it
    /// would have ended at. Watchers may have seen up to here (and no further), so when the
    /// log is lost this is where the stored end follows on (see [`Progress::log_lost`]).
    pub(in crate::worker) published: u64,
    /// The job's log was lost (Redis lost its keys) while the attempt ran
    /// ([`crate::events::Appended::lost`]): its appends are refused, nobody can read what
    /// it publishes, and its end goes to the store alone, as a snapshot at `published + 1`
    /// and the terminal event at `published + 2` (see [`Progress::end_sequence`]).
    pub(in crate::worker) log_lost: bool,
    /// The attempt's copy of the job's whole log so far (the events before its start, read
    /// by the start's append, then every event it appended), so that the log goes to the store
    /// with the result at no extra round trip; `None` once it is not known exactly (an append
    /// without an answer, or one whose sequence did not follow).
    pub(in crate::worker) log: Option<crate::events::archive::Builder>,
    /// Events that open the attempt's end (the finalizing stage and the answer's milestones,
    /// or the `attempt_failed` of a final failure): they go out after the last text, in the
    /// append that claims the end (see [`Progress::seal`]).
    pub(in crate::worker) closing: Vec<Kind>,
    /// The next flush's last append claims the job's end for this attempt
    /// ([`crate::events::CancelCheck::Seal`]): it reads the cancel flag one last time, and
    /// unless it is set, a cancel from then on can no longer stop the attempt.
    pub(in crate::worker) seal: bool,
    /// The end is claimed: the attempt ends the job as it decided, whatever cancel comes.
    pub(in crate::worker) sealed: bool,
    /// Whether someone followed the job live at the last append (see
    /// [`crate::events::Appended::watched`]). A REALTIME job nobody follows is published as
    /// BUFFERED is (the first token at once, then at most every flush interval), each token
    /// still its own delta: the log a later watcher replays is the same, in fewer appends.
    pub(in crate::worker) watched: bool,
    /// An append whose answer never came (a timeout: Redis may still run it), kept as sent
    /// with the log's last sequence before it and its cancel check: the next flush sends
    /// exactly it again under [`Fence::At`](crate::events::Fence::At), which adds it only if the first try did not, and
    /// no other append goes out before, so a slow Redis cannot duplicate or reorder events.
    pub(in crate::worker) in_doubt: Option<(u64, Vec<Event>, CancelCheck)>,
    /// Failed flushes, logged at WARN once per [`FLUSH_WARN_EVERY`]: a flush is tried
    /// again every few milliseconds while Redis is away, so the rest go to DEBUG.
    pub(in crate::worker) flush_failures: LogEvery,
}

/// Where an attempt's start left the job's log: its last sequence, whether someone watches
/// the job, and the attempt's copy of the whole log (see [`Progress::log`]).
pub(in crate::worker) struct Start {
    pub(in crate::worker) log_head: Option<u64>,
    pub(in crate::worker) watched: bool,
    pub(in crate::worker) log: Option<crate::events::archive::Builder>,
}

impl Progress {
    /// The progress of attempt `job.attempts` of `job` on `provider`, started as `start`
    /// says, before anything was generated; its metrics are recorded with `call`.
    pub(in crate::worker) fn new(
        job: &Job,
        provider: &dyn Provider,
        tracker: Tracker,
        start: Start,
        call: crate::metrics::Call,
    ) -> Progress {
        let queue_wait_ms = job
            .started_at
            .map(|s| u64::try_from((s - job.enqueued_at).num_milliseconds()).unwrap_or(0))
            .unwrap_or(0);
        Progress {
            outcome: Outcome {
                model: job.params.model.clone(),
                provider: provider.name().to_owned(),
                simulated: provider.simulated(),
                queue_wait_ms,
                ..Outcome::default()
            },
            output_tokens: 0,
            reported_usage: None,
            sent_at: Instant::now(),
            began: Instant::now(),
            called: false,
            call,
            first_token_at: None,
            last_token_at: None,
            unpublished: Unpublished::default(),
            mode: job.streaming_mode,
            tracker,
            gaps_ms: Vec::new(),
            before_text: Vec::new(),
            log_head: start.log_head,
            published: start.log_head.unwrap_or(0),
            log_lost: false,
            log: start.log,
            closing: Vec::new(),
            seal: false,
            sealed: false,
            flush_failures: LogEvery::new(FLUSH_WARN_EVERY),
            watched: start.watched,
            in_doubt: None,
        }
    }
}

/// Least time between two WARN lines about one attempt's failed flushes.
pub(in crate::worker) const FLUSH_WARN_EVERY: Duration = Duration::from_secs(5);

/// Lets one line of a run of repeated log lines through per period, counting the others.
#[derive(Debug)]
pub(in crate::worker) struct LogEvery {
    every: Duration,
    last: Option<Instant>,
    held: u64,
}

impl LogEvery {
    /// One line per `every`.
    pub(in crate::worker) fn new(every: Duration) -> LogEvery {
        LogEvery {
            every,
            last: None,
            held: 0,
        }
    }

    /// Counts one occurrence at `now`; `Some(n)` when it is to be logged, `n` being the
    /// occurrences since the last logged one, this one included.
    fn hit(&mut self, now: Instant) -> Option<u64> {
        self.held += 1;
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

impl Progress {
    /// Logs a failed flush: at WARN once per [`FLUSH_WARN_EVERY`] (with how many failed
    /// since the last WARN line, this one included), at DEBUG otherwise.
    pub(in crate::worker) fn flush_failed(&mut self, e: &dyn std::fmt::Display) {
        match self.flush_failures.hit(Instant::now()) {
            Some(failed) => warn!(
                error = %e,
                failed_flushes = failed,
                "cannot publish token deltas yet; keeping them"
            ),
            None => debug!(error = %e, "cannot publish token deltas yet; keeping them"),
        }
    }

    /// The sequence the last of `events` more events will have when appended next, if
    /// every append of the attempt so far answered.
    pub(in crate::worker) fn terminal_sequence(&self, events: usize) -> Option<u64> {
        self.log_head.map(|head| head + events as u64)
    }

    /// The terminal sequence the store gets with the attempt's end, which then appends
    /// `events` more events: [`Progress::terminal_sequence`], or, when the log was lost, the
    /// fixed place of the stored end: a snapshot just after everything the lost log may have
    /// published, then the terminal event (see `streaming::Watcher::snapshot`).
    pub(in crate::worker) fn end_sequence(&self, events: usize) -> Option<u64> {
        if self.log_lost {
            Some(self.published + 2)
        } else {
            self.terminal_sequence(events)
        }
    }

    /// Notes an append's answer: the sequence its last event got, if accepted; whether it was
    /// refused for a lost log (said once, as a warning: the rest of the attempt reaches no
    /// watcher until its end is stored).
    pub(in crate::worker) fn answered(&mut self, appended: &Appended) {
        if let Some(seq) = appended.sequence {
            self.published = self.published.max(seq);
        }
        if appended.lost && !self.log_lost {
            self.log_lost = true;
            warn!(
                last_published = self.published,
                "the job's event log was lost (Redis lost its keys) while the attempt ran; \
                 the attempt goes on, and watchers get its stored result as a snapshot after \
                 sequence {}",
                self.published
            );
        }
    }

    /// Notes an append of `events` after sequence `head` whose answer never came: it may
    /// have gone in (see [`Progress::published`]).
    pub(in crate::worker) fn in_doubt(
        &mut self,
        head: u64,
        events: Vec<Event>,
        cancel: CancelCheck,
    ) {
        self.published = self.published.max(head + events.len() as u64);
        self.in_doubt = Some((head, events, cancel));
    }

    /// Notes an append's answer in [`Progress::log`]: `events` went in, the last with
    /// `sequence`. No answer (`None`), or a sequence that does not follow the copy, makes the
    /// copy unknown.
    pub(in crate::worker) fn logged(
        &mut self,
        codec: &dyn Codec,
        events: &[Event],
        sequence: Option<u64>,
    ) {
        let Some(log) = &mut self.log else { return };
        let follows = log
            .next_sequence()
            .zip(sequence)
            .is_some_and(|(next, seq)| next + events.len() as u64 == seq + 1);
        if follows {
            events.iter().for_each(|e| log.push(codec, e));
        } else {
            self.log = None;
        }
    }

    /// The whole log with `terminal` (the events that end it) appended, when the copy is
    /// known and they would end at `expected`.
    pub(in crate::worker) fn final_log(
        &self,
        codec: &dyn Codec,
        terminal: &[Event],
        expected: Option<u64>,
    ) -> Option<crate::events::archive::Archive> {
        let mut log = self.log.clone()?;
        if log.next_sequence()? + terminal.len() as u64 != expected? + 1 {
            return None;
        }
        terminal.iter().for_each(|e| log.push(codec, e));
        log.finish()
    }

    pub(in crate::worker) fn finish(&mut self) {
        let now = Instant::now();
        let o = &mut self.outcome;
        o.duration_ms = ms(now - self.sent_at);
        o.time_to_first_token_ms = self.first_token_at.map(|t| ms(t - self.sent_at));
        o.usage = self.reported_usage.unwrap_or(Usage {
            input_tokens: 0,
            output_tokens: self.output_tokens,
            total_tokens: self.output_tokens,
            estimated: true,
            cached_input_tokens: None,
            reasoning_tokens: None,
        });
        let generating = match (self.first_token_at, self.last_token_at) {
            (Some(first), Some(last)) if last > first => (last - first).as_secs_f64(),
            _ => 0.0,
        };
        o.output_tokens_per_second = if generating > 0.0 {
            o.usage.output_tokens as f64 / generating
        } else {
            0.0
        };
        o.streaming.chunks = self.output_tokens;
        o.streaming.bytes = (o.content.len() + o.reasoning_content.len()) as u64;
        o.streaming.inter_token_p50_ms = percentile(&mut self.gaps_ms, 0.50);
        o.streaming.inter_token_p95_ms = percentile(&mut self.gaps_ms, 0.95);
    }

    /// Output tokens per second since the first token (0 before the second).
    pub(in crate::worker) fn rate(&self) -> f64 {
        match (self.first_token_at, self.last_token_at) {
            (Some(first), Some(last)) if last > first => {
                self.output_tokens.saturating_sub(1) as f64 / (last - first).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_failures_is_logged_once_per_period_with_its_count() {
        let mut every = LogEvery::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(every.hit(t0), Some(1), "the first is logged");
        for ms in (25..5000).step_by(25) {
            assert_eq!(
                every.hit(t0 + Duration::from_millis(ms)),
                None,
                "at {ms} ms"
            );
        }
        // 199 held back, then this one.
        assert_eq!(every.hit(t0 + Duration::from_secs(5)), Some(200));
        assert_eq!(every.hit(t0 + Duration::from_secs(6)), None);
        assert_eq!(every.hit(t0 + Duration::from_secs(60)), Some(2));
    }
}
