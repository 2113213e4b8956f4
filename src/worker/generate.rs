//! Generating one attempt: stream from the provider, enforce the timeouts, publish token
//! deltas (coalesced in BUFFERED mode), and report how generation ended.

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{
    FINISH_GRACE, Running, StopReason, Worker,
    deltas::{MAX_APPEND_DELTAS, Unpublished},
    tracker::Tracker,
};
use crate::{
    events::{Appended, CancelCheck, Fence, event},
    job::{Job, JobError, Outcome, StreamingMode, Usage},
    proto::v1::{self, Stage, job_event::Kind},
    provider,
    ratelimit::upstream::Budget,
};

/// How generation ended.
pub(super) enum End {
    Completed,
    Failed(AttemptError),
    Stopped(StopReason),
}

impl End {
    /// The `error.type` of the upstream call that ended so (`None`: it completed): the
    /// failure's stable code, or why the attempt stopped.
    pub(super) fn error_type(&self) -> Option<&'static str> {
        match self {
            End::Completed => None,
            End::Failed(AttemptError::Provider(e)) => Some(e.code()),
            End::Failed(AttemptError::Timeout) => Some("timeout"),
            End::Failed(AttemptError::FirstTokenTimeout) => Some("first_token_timeout"),
            End::Failed(AttemptError::Shutdown) | End::Stopped(StopReason::Shutdown) => {
                Some("worker_shutdown")
            }
            End::Stopped(StopReason::Cancelled) => Some("cancelled"),
            End::Stopped(StopReason::LeaseLost) => Some("lease_lost"),
        }
    }
}

/// An attempt failure: the provider's, or a timeout of ours.
pub(super) enum AttemptError {
    Provider(provider::Error),
    Timeout,
    FirstTokenTimeout,
    /// The worker shut down before the attempt ended; never counts against the job.
    Shutdown,
}

impl AttemptError {
    pub(super) fn to_job_error(&self) -> JobError {
        match self {
            AttemptError::Provider(e) => JobError {
                code: e.code().to_owned(),
                message: e.to_string(),
            },
            AttemptError::Timeout => JobError {
                code: "timeout".to_owned(),
                message: "the attempt exceeded the job timeout".to_owned(),
            },
            AttemptError::Shutdown => JobError {
                code: "worker_shutdown".to_owned(),
                message: "the worker shut down during the attempt; the job goes back to its queue"
                    .to_owned(),
            },
            AttemptError::FirstTokenTimeout => JobError {
                code: "first_token_timeout".to_owned(),
                message: "no token arrived within the first-token timeout".to_owned(),
            },
        }
    }

    pub(super) fn is_retryable(&self) -> bool {
        match self {
            AttemptError::Provider(e) => e.is_retryable(),
            AttemptError::Timeout | AttemptError::FirstTokenTimeout | AttemptError::Shutdown => {
                true
            }
        }
    }

    pub(super) fn retry_after(&self) -> Option<Duration> {
        match self {
            AttemptError::Provider(e) => e.retry_after(),
            AttemptError::Timeout | AttemptError::FirstTokenTimeout | AttemptError::Shutdown => {
                None
            }
        }
    }
}

/// What the attempt has produced so far.
pub(super) struct Progress {
    pub(super) outcome: Outcome,
    pub(super) output_tokens: u64,
    pub(super) reported_usage: Option<Usage>,
    pub(super) sent_at: Instant,
    /// When the attempt started (its runtime runs from here).
    pub(super) began: Instant,
    /// The upstream request went out (at [`Progress::sent_at`]).
    pub(super) called: bool,
    /// The attribute sets its metrics are recorded with.
    pub(super) call: crate::metrics::Call,
    pub(super) first_token_at: Option<Instant>,
    pub(super) last_token_at: Option<Instant>,
    /// Text not yet published.
    pub(super) unpublished: Unpublished,
    /// How the job's deltas are published.
    pub(super) mode: StreamingMode,
    /// Stages, milestones and progress updates of the attempt.
    pub(super) tracker: Tracker,
    /// Gaps between consecutive text chunks (ms).
    pub(super) gaps_ms: Vec<f64>,
    /// Stage changes and milestones to publish with the next text (the first token's), so
    /// the first delta costs no extra round trip.
    pub(super) before_text: Vec<Kind>,
    /// Sequence of the last event this attempt appended, as the log answered (the attempt
    /// is the log's only writer while it runs, so its terminal event's sequence is known
    /// ahead: see [`Progress::terminal_sequence`]).
    pub(super) log_head: Option<u64>,
    /// The highest sequence the job's log may have reached through the attempt's appends:
    /// every answered sequence, and for an append whose answer never came, the sequence it
    /// would have ended at. Watchers may have seen up to here (and no further), so when the
    /// log is lost this is where the stored end follows on (see [`Progress::log_lost`]).
    pub(super) published: u64,
    /// The job's log was lost (Redis lost its keys) while the attempt ran
    /// ([`crate::events::Appended::lost`]): its appends are refused, nobody can read what
    /// it publishes, and its end goes to the store alone, as a snapshot at `published + 1`
    /// and the terminal event at `published + 2` (see [`Progress::end_sequence`]).
    pub(super) log_lost: bool,
    /// The attempt's copy of the job's whole log so far (the events before its start, read
    /// by the start's append, then every event it appended), so that the log goes to the store
    /// with the result at no extra round trip; `None` once it is not known exactly (an append
    /// without an answer, or one whose sequence did not follow).
    pub(super) log: Option<crate::events::archive::Builder>,
    /// Events that open the attempt's end (the finalizing stage and the answer's milestones,
    /// or the `attempt_failed` of a final failure): they go out after the last text, in the
    /// append that claims the end (see [`Progress::seal`]).
    pub(super) closing: Vec<Kind>,
    /// The next flush's last append claims the job's end for this attempt
    /// ([`crate::events::CancelCheck::Seal`]): it reads the cancel flag one last time, and
    /// unless it is set, a cancel from then on can no longer stop the attempt.
    pub(super) seal: bool,
    /// The end is claimed: the attempt ends the job as it decided, whatever cancel comes.
    pub(super) sealed: bool,
    /// Whether someone followed the job live at the last append (see
    /// [`crate::events::Appended::watched`]). A REALTIME job nobody follows is published as
    /// BUFFERED is (the first token at once, then at most every flush interval), each token
    /// still its own delta: the log a later watcher replays is the same, in fewer appends.
    pub(super) watched: bool,
    /// An append whose answer never came (a timeout: Redis may still run it), kept as sent
    /// with the log's last sequence before it and its cancel check: the next flush sends
    /// exactly it again under [`Fence::At`], which adds it only if the first try did not, and
    /// no other append goes out before, so a slow Redis cannot duplicate or reorder events.
    pub(super) in_doubt: Option<(u64, Vec<v1::JobEvent>, CancelCheck)>,
    /// Failed flushes, logged at WARN once per [`FLUSH_WARN_EVERY`]: a flush is tried
    /// again every few milliseconds while Redis is away, so the rest go to DEBUG.
    pub(super) flush_failures: LogEvery,
}

/// Least time between two WARN lines about one attempt's failed flushes.
pub(super) const FLUSH_WARN_EVERY: Duration = Duration::from_secs(5);

/// Lets one line of a run of repeated log lines through per period, counting the others.
#[derive(Debug)]
pub(super) struct LogEvery {
    every: Duration,
    last: Option<Instant>,
    held: u64,
}

impl LogEvery {
    /// One line per `every`.
    pub(super) fn new(every: Duration) -> LogEvery {
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
    fn flush_failed(&mut self, e: &dyn std::fmt::Display) {
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
    pub(super) fn terminal_sequence(&self, events: usize) -> Option<u64> {
        self.log_head.map(|head| head + events as u64)
    }

    /// The terminal sequence the store gets with the attempt's end, which then appends
    /// `events` more events: [`Progress::terminal_sequence`], or, when the log was lost, the
    /// fixed place of the stored end: a snapshot just after everything the lost log may have
    /// published, then the terminal event (see `streaming::Watcher::snapshot`).
    pub(super) fn end_sequence(&self, events: usize) -> Option<u64> {
        if self.log_lost {
            Some(self.published + 2)
        } else {
            self.terminal_sequence(events)
        }
    }

    /// Notes an append's answer: the sequence its last event got, if accepted; whether it was
    /// refused for a lost log (said once, as a warning: the rest of the attempt reaches no
    /// watcher until its end is stored).
    pub(super) fn answered(&mut self, appended: &Appended) {
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
    pub(super) fn in_doubt(&mut self, head: u64, events: Vec<v1::JobEvent>, cancel: CancelCheck) {
        self.published = self.published.max(head + events.len() as u64);
        self.in_doubt = Some((head, events, cancel));
    }

    /// Notes an append's answer in [`Progress::log`]: `events` went in, the last with
    /// `sequence`. No answer (`None`), or a sequence that does not follow the copy, makes the
    /// copy unknown.
    pub(super) fn logged(&mut self, events: &[v1::JobEvent], sequence: Option<u64>) {
        let Some(log) = &mut self.log else { return };
        let follows = log
            .next_sequence()
            .zip(sequence)
            .is_some_and(|(next, seq)| next + events.len() as u64 == seq + 1);
        if follows {
            events.iter().for_each(|e| log.push(e));
        } else {
            self.log = None;
        }
    }

    /// The whole log with `terminal` (the events that end it) appended, when the copy is
    /// known and they would end at `expected`.
    pub(super) fn final_log(
        &self,
        terminal: &[v1::JobEvent],
        expected: Option<u64>,
    ) -> Option<crate::events::archive::Archive> {
        let mut log = self.log.clone()?;
        if log.next_sequence()? + terminal.len() as u64 != expected? + 1 {
            return None;
        }
        terminal.iter().for_each(|e| log.push(e));
        log.finish()
    }

    pub(super) fn finish(&mut self) {
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
    fn rate(&self) -> f64 {
        match (self.first_token_at, self.last_token_at) {
            (Some(first), Some(last)) if last > first => {
                self.output_tokens.saturating_sub(1) as f64 / (last - first).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// The `q` quantile (0..=1, nearest rank) of `values`; `None` when empty. Sorts in place.
fn percentile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

/// What one item of the upstream stream did to the attempt.
enum Absorbed {
    /// Text arrived (and waits in `unpublished`).
    Text,
    /// Usage, finish reason or an empty chunk.
    Other,
    /// The stream ended (`None`) or failed.
    End(Option<End>),
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Worker {
    pub(super) async fn generate(
        &self,
        job: &Job,
        provider: &dyn provider::Provider,
        running: &Running,
        progress: &mut Progress,
    ) -> End {
        let stopped = || End::Stopped(*running.reason.get().unwrap_or(&StopReason::Cancelled));
        // The fleet's turn first; the wait does not count against the attempt's timeouts.
        if !provider.simulated() {
            let prompt_bytes = job.messages.iter().map(|m| m.content.len()).sum();
            let tokens = Budget::cost(prompt_bytes, job.params.max_tokens);
            let budget = &self.deps.budget;
            if budget
                .acquire(&job.params.model, tokens, &running.stop)
                .await
                .is_err()
            {
                return stopped();
            }
        }
        let timeout = job
            .timeout
            .unwrap_or(Duration::from_secs(self.cfg.job_timeout_secs.max(1)));
        let deadline = Instant::now() + timeout;
        let first_token_deadline =
            Instant::now() + Duration::from_secs(self.cfg.first_token_timeout_secs.max(1));
        // While no token has arrived, whichever limit comes first applies.
        let limit = |p: &Progress| {
            if p.first_token_at.is_none() && first_token_deadline < deadline {
                (first_token_deadline, AttemptError::FirstTokenTimeout)
            } else {
                (deadline, AttemptError::Timeout)
            }
        };
        let stop = running.stop.clone();
        let request = provider::Request {
            messages: job.messages.clone(),
            params: job.params.clone(),
            // This runs in the call's `chat` span (see `Worker::attempt`).
            traceparent: crate::trace::traceparent(&tracing::Span::current()),
        };
        let connecting = progress.tracker.advance(Stage::Connecting);
        let connect_until = limit(progress).0;
        let flush_every = Duration::from_millis(self.cfg.buffer_flush_ms.max(1));
        progress.sent_at = Instant::now();
        progress.called = true;
        // The connecting stage goes out with the first token when the upstream answers within
        // a flush interval (one append instead of two); else once that interval has passed,
        // while the request waits, so it stays off the path to the first token.
        let opened = {
            let connect = provider.stream(&request);
            tokio::pin!(connect);
            let quick = tokio::select! {
                biased;
                _ = stop.cancelled() => Some(None),
                _ = tokio::time::sleep_until(connect_until) => Some(Some(Err(None))),
                s = &mut connect => Some(Some(s.map_err(Some))),
                _ = tokio::time::sleep(flush_every) => None,
            };
            match quick {
                Some(opened) => {
                    if matches!(opened, Some(Ok(_))) {
                        progress.before_text.push(connecting);
                    } else {
                        // The attempt ends here: its history keeps every stage it went through.
                        self.publish_tracked(job, progress, vec![connecting]).await;
                    }
                    opened
                }
                None => {
                    let slow = async {
                        tokio::join!(
                            self.publish_tracked(job, progress, vec![connecting]),
                            &mut connect
                        )
                        .1
                    };
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => None,
                        _ = tokio::time::sleep_until(connect_until) => Some(Err(None)),
                        s = slow => Some(s.map_err(Some)),
                    }
                }
            }
        };
        let mut stream = match opened {
            None => return stopped(),
            Some(Ok(s)) => s,
            Some(Err(Some(e))) => {
                if let provider::Error::RateLimited { retry_after, .. } = &e {
                    // The hint is capped as the retry's wait is: a 429 asking for a day
                    // does not halve the model's budget for a day.
                    let cap = Duration::from_millis(self.cfg.retry_cap_ms.max(1));
                    self.deps
                        .budget
                        .penalize(&job.params.model, retry_after.map(|d| d.min(cap)))
                        .await;
                }
                return End::Failed(AttemptError::Provider(e));
            }
            Some(Err(None)) => return End::Failed(limit(progress).1),
        };
        // The stage goes out with the first token when that comes within a flush interval
        // (one append instead of two), else by the flush timer below.
        let awaiting = progress.tracker.advance(Stage::AwaitingFirstToken);
        progress.before_text.push(awaiting);
        let buffered = job.streaming_mode == StreamingMode::Buffered;
        let mut next_flush = Instant::now() + flush_every;
        let mut finished = false;
        // After the finish, wait this long for the usage chunk and the end of the stream
        // (some servers never send `[DONE]` nor close).
        let mut finish_deadline = Instant::now();
        loop {
            // A flush may have found the job's cancel flag (the REALTIME path below can go
            // round without reaching the `select!`).
            if stop.is_cancelled() {
                self.flush_all(job, running, progress).await;
                return stopped();
            }
            let has_text = !progress.unpublished.is_empty();
            let has_pending =
                has_text || !progress.before_text.is_empty() || progress.in_doubt.is_some();
            // Gathered into timed flushes: BUFFERED, and REALTIME while nobody watches.
            let gathered = buffered || !progress.watched;
            // REALTIME: chunks already here join the waiting ones before they go out, each as
            // its own delta, so a slow append is followed by one carrying all that arrived
            // meanwhile instead of one round trip per chunk. Stage changes without text wait
            // for the flush timer.
            if !gathered && has_text {
                let ready = if progress.unpublished.pieces() < MAX_APPEND_DELTAS {
                    stream.next().now_or_never()
                } else {
                    None
                };
                match ready {
                    Some(item) => {
                        match self.absorb(item, progress, &mut finished, &mut finish_deadline) {
                            Absorbed::Text | Absorbed::Other => continue,
                            Absorbed::End(Some(end)) => {
                                self.flush(job, running, progress).await;
                                return end;
                            }
                            Absorbed::End(None) => break,
                        }
                    }
                    None => {
                        if self.flush(job, running, progress).await {
                            continue;
                        }
                        // Redis is unavailable: the flush timer below retries, or the next
                        // chunk does.
                        next_flush = Instant::now() + flush_every;
                    }
                }
            }
            let item = tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    self.flush_all(job, running, progress).await;
                    return stopped();
                }
                _ = tokio::time::sleep_until(limit(progress).0) => return End::Failed(limit(progress).1),
                _ = tokio::time::sleep_until(next_flush), if has_pending => {
                    self.flush(job, running, progress).await;
                    next_flush = Instant::now() + flush_every;
                    continue;
                }
                _ = tokio::time::sleep_until(finish_deadline), if finished => break,
                item = stream.next() => item,
            };
            match self.absorb(item, progress, &mut finished, &mut finish_deadline) {
                Absorbed::End(Some(end)) => {
                    // Best effort: what arrived before the failure reaches the watchers.
                    self.flush(job, running, progress).await;
                    return end;
                }
                Absorbed::End(None) => break,
                Absorbed::Other => {}
                // The first token goes out at once in both modes (it is the time to first
                // token users feel); watched REALTIME text is published at the top of the
                // loop.
                Absorbed::Text => {
                    if gathered
                        && (progress.output_tokens == 1
                            || progress.unpublished.bytes() >= self.cfg.buffer_max_bytes
                            || progress.unpublished.pieces() >= MAX_APPEND_DELTAS)
                    {
                        self.flush(job, running, progress).await;
                        next_flush = Instant::now() + flush_every;
                    }
                }
            }
        }
        let o = &progress.outcome;
        let end = if finished
            && o.content.trim().is_empty()
            && !o.reasoning_content.is_empty()
            && matches!(o.finish_reason.as_str(), "length" | "content_filter")
        {
            // A reasoning model that spent its budget thinking, or a filtered answer: not a
            // silent success. (Reasoning only with any other finish completes, flagged by a
            // milestone: see `Worker::finalize`.)
            End::Failed(AttemptError::Provider(provider::Error::EmptyAnswer {
                finish_reason: o.finish_reason.clone(),
                reasoning_chars: o.reasoning_content.chars().count(),
            }))
        } else if finished {
            End::Completed
        } else {
            End::Failed(AttemptError::Provider(provider::Error::Truncated))
        };
        if matches!(end, End::Completed) {
            // The last flush claims the end of a completing attempt, with its finalizing
            // events: a cancel that reached the log before it wins, one after it is answered
            // that the job is ending (see `EventLog::request_cancel`). A failing attempt
            // claims its end in `Worker::end` when the failure is final.
            progress.closing = Self::finalize(job, progress);
            progress.seal = true;
        }
        progress.unpublished.read_cancel_next();
        if !self.flush_all(job, running, progress).await
            || (!progress.sealed && running.reason.get() == Some(&StopReason::Cancelled))
        {
            // Lease lost or shutting down: `end` hands the job on. Or the cancel reached the
            // last flush (or its signal came before the end was claimed): it wins.
            return stopped();
        }
        end
    }

    /// Takes one upstream stream item into `progress`: text (NUL dropped), model, usage,
    /// request id, finish reason (which starts the [`FINISH_GRACE`] for the usage chunk).
    fn absorb(
        &self,
        item: Option<Result<provider::Chunk, provider::Error>>,
        progress: &mut Progress,
        finished: &mut bool,
        finish_deadline: &mut Instant,
    ) -> Absorbed {
        let mut chunk = match item {
            None => return Absorbed::End(None),
            Some(Err(e)) => return Absorbed::End(Some(End::Failed(AttemptError::Provider(e)))),
            Some(Ok(chunk)) => chunk,
        };
        // NUL cannot be stored in Postgres text (nor shown usefully): it is dropped here, so
        // the streamed and the stored text stay identical.
        for text in [&mut chunk.content, &mut chunk.reasoning] {
            if text.contains('\0') {
                text.retain(|c| c != '\0');
            }
        }
        if let Some(model) = chunk.model.filter(|m| !m.is_empty()) {
            progress.outcome.model = model;
        }
        if let Some(usage) = chunk.usage {
            progress.reported_usage = Some(usage);
        }
        if let Some(id) = chunk.upstream_request_id.take() {
            progress.outcome.upstream_request_id = Some(id);
        }
        if chunk.finish_reason.is_some() {
            if !*finished {
                *finish_deadline = Instant::now() + FINISH_GRACE;
            }
            *finished = true;
            progress.outcome.finish_reason = chunk.finish_reason.unwrap_or_default();
        }
        if chunk.content.is_empty() && chunk.reasoning.is_empty() {
            return Absorbed::Other;
        }
        let now = Instant::now();
        if progress.first_token_at.is_none() {
            let ttft = now - progress.sent_at;
            let kinds = progress.tracker.first_token(ttft);
            progress.before_text.extend(kinds);
        }
        progress.first_token_at.get_or_insert(now);
        if let Some(last) = progress.last_token_at {
            progress.gaps_ms.push((now - last).as_secs_f64() * 1000.0);
        }
        progress.last_token_at = Some(now);
        progress.output_tokens += 1;
        progress.outcome.content.push_str(&chunk.content);
        progress
            .outcome
            .reasoning_content
            .push_str(&chunk.reasoning);
        let separate = progress.mode == StreamingMode::Realtime;
        progress.unpublished.push(
            &chunk.content,
            &chunk.reasoning,
            progress.output_tokens,
            separate,
        );
        Absorbed::Text
    }

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
    pub(super) async fn flush(
        &self,
        job: &Job,
        running: &Running,
        progress: &mut Progress,
    ) -> bool {
        if !self.settle_in_doubt(job, running, progress).await {
            return false;
        }
        loop {
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
            let seal = all_out && progress.seal;
            if kinds.is_empty() {
                return true;
            }
            let snapshot = kinds
                .iter()
                .any(|k| !matches!(k, Kind::TokenDelta(_)))
                .then(|| {
                    progress.tracker.set_worker(self.latest_resources());
                    progress.tracker.snapshot()
                });
            let cancel = if seal {
                CancelCheck::Seal
            } else if progress.unpublished.cancel_read_due(Instant::now()) {
                CancelCheck::Read
            } else {
                CancelCheck::Skip
            };
            let events: Vec<v1::JobEvent> = kinds.into_iter().map(event).collect();
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
                    noted(progress, running, &events, &appended, cancel)
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
                    // The stage changes, deltas and closing events wait for the next flush; a
                    // progress update is made afresh then.
                    let mut kinds: Vec<Kind> = events.into_iter().filter_map(|e| e.kind).collect();
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
                    return false;
                }
            }
            if all_out {
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
                noted(progress, running, &events, &appended, cancel);
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
    pub(super) async fn publish_tracked(
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
        let events: Vec<v1::JobEvent> = kinds.into_iter().map(event).collect();
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
                progress.logged(&events, appended.sequence);
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
    pub(super) async fn flush_all(
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
    progress: &mut Progress,
    running: &Running,
    events: &[v1::JobEvent],
    appended: &Appended,
    cancel: CancelCheck,
) {
    progress.logged(events, appended.sequence);
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
