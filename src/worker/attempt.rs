//! Running one attempt of a job: start it in the store, stream from the provider, publish
//! token deltas, and end it exactly once (completed, retry, failed, cancelled, or handed back).

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use futures::StreamExt;
use tokio::time::Instant;
use tracing::{Instrument, info, info_span, warn};

use super::{FINISH_GRACE, Running, StopReason, Worker, retry::backoff};
use crate::{
    events::{Fence, event},
    job::{Job, JobError, JobId, Outcome, StreamingMode, Usage},
    proto::v1::{self, job_event::Kind},
    provider,
    store::Finish,
};

/// How generation ended.
enum End {
    Completed,
    Failed(AttemptError),
    Stopped(StopReason),
}

/// An attempt failure: the provider's, or a timeout of ours.
enum AttemptError {
    Provider(provider::Error),
    Timeout,
    FirstTokenTimeout,
    /// The worker shut down before the attempt ended; never counts against the job.
    Shutdown,
}

impl AttemptError {
    fn to_job_error(&self) -> JobError {
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

    fn is_retryable(&self) -> bool {
        match self {
            AttemptError::Provider(e) => e.is_retryable(),
            AttemptError::Timeout | AttemptError::FirstTokenTimeout | AttemptError::Shutdown => {
                true
            }
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            AttemptError::Provider(e) => e.retry_after(),
            AttemptError::Timeout | AttemptError::FirstTokenTimeout | AttemptError::Shutdown => {
                None
            }
        }
    }
}

/// What the attempt has produced so far.
struct Progress {
    outcome: Outcome,
    output_tokens: u64,
    reported_usage: Option<Usage>,
    sent_at: Instant,
    first_token_at: Option<Instant>,
    last_token_at: Option<Instant>,
    /// BUFFERED mode: text not yet published.
    pending: String,
    pending_reasoning: String,
}

impl Progress {
    fn finish(&mut self) {
        let now = Instant::now();
        let o = &mut self.outcome;
        o.duration_ms = ms(now - self.sent_at);
        o.time_to_first_token_ms = self.first_token_at.map(|t| ms(t - self.sent_at));
        o.usage = self.reported_usage.unwrap_or(Usage {
            input_tokens: 0,
            output_tokens: self.output_tokens,
            total_tokens: self.output_tokens,
            estimated: true,
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
    }
}

/// Largest text of one token delta event (bytes).
pub const MAX_DELTA_BYTES: usize = 64 * 1024;

/// Removes and returns the longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary (at least one character, so progress is always made).
fn take_prefix(s: &mut String, max: usize) -> String {
    if s.len() <= max {
        return std::mem::take(s);
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    if cut == 0 {
        cut = s.chars().next().map_or(s.len(), char::len_utf8);
    }
    let rest = s.split_off(cut);
    std::mem::replace(s, rest)
}

fn events_transient(e: &crate::events::Error) -> bool {
    matches!(e, crate::events::Error::Unavailable(_))
}

fn store_transient(e: &crate::store::Error) -> bool {
    e.is_transient()
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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

    /// Runs one claimed job to the end of this attempt.
    pub(super) async fn run_attempt(self: Arc<Self>, job_id: JobId, running: Arc<Running>) {
        let span = info_span!("job.run", job_id = %job_id, job_type = tracing::field::Empty,
            model = tracing::field::Empty, attempt = tracing::field::Empty);
        async {
            // A worker that cannot reach Postgres gives the claim back for a later try.
            let job = match self.deps.store.start_attempt(job_id).await {
                Ok(Some(job)) => job,
                Ok(None) => {
                    // Terminal or unknown in the store: nothing to run.
                    self.settle(job_id, &running.owner, None).await;
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "cannot start the attempt; handing the job back");
                    let later = Utc::now() + chrono::Duration::seconds(2);
                    self.settle(job_id, &running.owner, Some(later)).await;
                    return;
                }
            };
            let span = tracing::Span::current();
            span.record("job_type", job.job_type.as_str());
            span.record("model", job.params.model.as_str());
            span.record("attempt", job.attempts);
            self.attempt(job, running).await;
        }
        .instrument(span)
        .await;
    }

    async fn attempt(&self, job: Job, running: Arc<Running>) {
        let attempt = job.attempts;
        let started = event(Kind::Started(v1::JobStarted {
            attempt,
            worker_id: self.id.clone(),
            model: job.params.model.clone(),
        }));
        let published = self
            .persist(
                &running,
                "publishing the started event",
                events_transient,
                || {
                    self.deps
                        .events
                        .append(job.id, &started, Fence::Start(attempt))
                },
            )
            .await;
        match published {
            Ok(Some(_)) => {}
            Ok(None) => {
                // The log is closed (the job ended meanwhile) or a newer attempt started.
                self.settle(job.id, &running.owner, None).await;
                return;
            }
            // Lease lost, or shutting down: another attempt will run it.
            Err(_) => return,
        }
        if let Ok(Some(_)) = self.deps.queue.cancel_requested(job.id).await {
            running.stop(StopReason::Cancelled);
        }

        let provider = self.deps.providers.for_model(&job.params.model).clone();
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
            first_token_at: None,
            last_token_at: None,
            pending: String::new(),
            pending_reasoning: String::new(),
        };
        let end = self
            .generate(&job, &*provider, &running, &mut progress)
            .await;
        progress.finish();
        self.end(job, &running, end, progress.outcome).await;
    }

    async fn generate(
        &self,
        job: &Job,
        provider: &dyn provider::Provider,
        running: &Running,
        progress: &mut Progress,
    ) -> End {
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
        let stopped = || End::Stopped(*running.reason.get().unwrap_or(&StopReason::Cancelled));
        let request = provider::Request {
            messages: job.messages.clone(),
            params: job.params.clone(),
        };
        progress.sent_at = Instant::now();
        let mut stream = tokio::select! {
            biased;
            _ = stop.cancelled() => return stopped(),
            _ = tokio::time::sleep_until(limit(progress).0) => return End::Failed(limit(progress).1),
            s = provider.stream(&request) => match s {
                Ok(s) => s,
                Err(e) => return End::Failed(AttemptError::Provider(e)),
            },
        };
        let buffered = job.streaming_mode == StreamingMode::Buffered;
        let flush_every = Duration::from_millis(self.cfg.buffer_flush_ms.max(1));
        let mut next_flush = Instant::now() + flush_every;
        let mut finished = false;
        // After the finish, wait this long for the usage chunk and the end of the stream
        // (some servers never send `[DONE]` nor close).
        let mut finish_deadline = Instant::now();
        loop {
            let has_pending =
                !progress.pending.is_empty() || !progress.pending_reasoning.is_empty();
            let item = tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    self.flush_all(job, running, progress).await;
                    return stopped();
                }
                _ = tokio::time::sleep_until(limit(progress).0) => return End::Failed(limit(progress).1),
                _ = tokio::time::sleep_until(next_flush), if has_pending => {
                    self.flush(job, progress).await;
                    next_flush = Instant::now() + flush_every;
                    continue;
                }
                _ = tokio::time::sleep_until(finish_deadline), if finished => break,
                item = stream.next() => item,
            };
            let mut chunk = match item {
                None => break,
                Some(Err(e)) => return End::Failed(AttemptError::Provider(e)),
                Some(Ok(chunk)) => chunk,
            };
            // NUL cannot be stored in Postgres text (nor shown usefully): it is dropped here,
            // so the streamed and the stored text stay identical.
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
            if chunk.finish_reason.is_some() {
                if !finished {
                    finish_deadline = Instant::now() + FINISH_GRACE;
                }
                finished = true;
                progress.outcome.finish_reason = chunk.finish_reason.unwrap_or_default();
            }
            if chunk.content.is_empty() && chunk.reasoning.is_empty() {
                continue;
            }
            let now = Instant::now();
            progress.first_token_at.get_or_insert(now);
            progress.last_token_at = Some(now);
            progress.output_tokens += 1;
            progress.outcome.content.push_str(&chunk.content);
            progress
                .outcome
                .reasoning_content
                .push_str(&chunk.reasoning);
            progress.pending.push_str(&chunk.content);
            progress.pending_reasoning.push_str(&chunk.reasoning);
            if !buffered
                || progress.pending.len() + progress.pending_reasoning.len()
                    >= self.cfg.buffer_max_bytes
            {
                self.flush(job, progress).await;
                next_flush = Instant::now() + flush_every;
            }
        }
        if !self.flush_all(job, running, progress).await {
            // Lease lost or shutting down: `end` hands the job on.
            return stopped();
        }
        let o = &progress.outcome;
        if finished && o.content.trim().is_empty() && !o.reasoning_content.is_empty() {
            // A reasoning model that spent its budget thinking, or a server whose reasoning
            // parser took the whole answer: not a silent success.
            End::Failed(AttemptError::Provider(provider::Error::EmptyAnswer {
                finish_reason: o.finish_reason.clone(),
                reasoning_chars: o.reasoning_content.chars().count(),
            }))
        } else if finished {
            End::Completed
        } else {
            End::Failed(AttemptError::Provider(provider::Error::Truncated))
        }
    }

    /// Publishes the text not yet published as token deltas of at most [`MAX_DELTA_BYTES`]
    /// each (split on character boundaries), so no single log entry grows without bound.
    /// Text that cannot be published (Redis unavailable) stays pending for the next flush, so
    /// an outage delays deltas but loses none. Returns whether nothing is left pending.
    async fn flush(&self, job: &Job, progress: &mut Progress) -> bool {
        while !progress.pending.is_empty() || !progress.pending_reasoning.is_empty() {
            let mut text = progress.pending.clone();
            let mut reasoning = progress.pending_reasoning.clone();
            let (text_part, reasoning_part) = (
                take_prefix(&mut text, MAX_DELTA_BYTES),
                take_prefix(&mut reasoning, MAX_DELTA_BYTES),
            );
            let delta = event(Kind::TokenDelta(v1::TokenDelta {
                text: text_part,
                output_tokens: progress.output_tokens,
                reasoning_text: reasoning_part,
            }));
            match self
                .deps
                .events
                .append(job.id, &delta, Fence::Attempt(job.attempts))
                .await
            {
                // Published, or refused because a newer attempt owns the log: either way done.
                Ok(_) => (progress.pending, progress.pending_reasoning) = (text, reasoning),
                Err(e) => {
                    warn!(error = %e, "cannot publish a token delta yet; keeping it");
                    return false;
                }
            }
        }
        true
    }

    /// Flushes until everything is published, retrying through a Redis outage while the
    /// lease holds. Returns false when it gave up.
    async fn flush_all(&self, job: &Job, running: &Running, progress: &mut Progress) -> bool {
        let mut delay = Duration::from_millis(200);
        loop {
            if self.flush(job, progress).await {
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

    async fn end(&self, job: Job, running: &Running, end: End, outcome: Outcome) {
        let attempt = job.attempts;
        let store = &self.deps.store;
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
                    outcome,
                    Some(Duration::ZERO),
                )
                .await;
                return;
            }
            End::Failed(err) => {
                let mut outcome = outcome;
                // The job did not complete: no finish reason in its result.
                outcome.finish_reason.clear();
                self.retry_or_fail(&job, running, err, outcome, None).await;
                return;
            }
            End::Completed => Finish::Completed(outcome.clone()),
            End::Stopped(StopReason::Cancelled) => Finish::Cancelled {
                partial: outcome.clone(),
            },
        };
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
        let stored = self
            .persist(running, "storing the result", store_transient, || {
                store.finish_attempt(job.id, attempt, finish.clone())
            })
            .await;
        match stored {
            Ok(Some(_)) => {
                self.publish_terminal(job.id, attempt, terminal).await;
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
                if let Ok(Some(_)) = store.finish_attempt(job.id, attempt, finish).await {
                    let terminal = Kind::Failed(v1::JobFailed {
                        error: Some(crate::api::convert::job_error(&error)),
                        attempts: attempt,
                    });
                    self.publish_terminal(job.id, attempt, terminal).await;
                }
            }
            // The lease expires and another attempt runs the job again.
            Err(None) => return,
        }
        self.settle(job.id, &running.owner, None).await;
    }

    async fn retry_or_fail(
        &self,
        job: &Job,
        running: &Running,
        err: AttemptError,
        partial: Outcome,
        delay: Option<Duration>,
    ) {
        let attempt = job.attempts;
        let error = err.to_job_error();
        // A shutdown hands the job back whatever its attempt count: it did not fail.
        let will_retry = matches!(err, AttemptError::Shutdown)
            || (err.is_retryable() && attempt < job.max_attempts);
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
            let retry_at =
                Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
            let recorded = self
                .persist(running, "recording the retry", store_transient, || {
                    self.deps.store.retry_attempt(job.id, attempt, &error)
                })
                .await;
            match recorded {
                Ok(true) => {
                    let failed = event(Kind::AttemptFailed(v1::AttemptFailed {
                        attempt,
                        error: Some(crate::api::convert::job_error(&error)),
                        will_retry: true,
                        retry_time: Some(crate::api::convert::timestamp(retry_at)),
                    }));
                    if let Err(e) = self
                        .deps
                        .events
                        .append(job.id, &failed, Fence::Attempt(attempt))
                        .await
                    {
                        warn!(error = %e, "cannot publish the attempt-failed event");
                    }
                    self.settle(job.id, &running.owner, Some(retry_at)).await;
                }
                Ok(false) => self.settle(job.id, &running.owner, None).await,
                Err(_) => {}
            }
            return;
        }
        let finish = Finish::Failed {
            error: error.clone(),
            retryable: err.is_retryable(),
            partial,
        };
        let stored = self
            .persist(running, "storing the failure", store_transient, || {
                self.deps
                    .store
                    .finish_attempt(job.id, attempt, finish.clone())
            })
            .await;
        match stored {
            Ok(Some(_)) => {
                let failed = event(Kind::AttemptFailed(v1::AttemptFailed {
                    attempt,
                    error: Some(crate::api::convert::job_error(&error)),
                    will_retry: false,
                    retry_time: None,
                }));
                let _ = self
                    .deps
                    .events
                    .append(job.id, &failed, Fence::Attempt(attempt))
                    .await;
                let terminal = Kind::Failed(v1::JobFailed {
                    error: Some(crate::api::convert::job_error(&error)),
                    attempts: attempt,
                });
                self.publish_terminal(job.id, attempt, terminal).await;
            }
            Ok(None) => {}
            Err(_) => return,
        }
        self.settle(job.id, &running.owner, None).await;
    }

    /// Appends the terminal event and remembers its sequence in the store.
    async fn publish_terminal(&self, job_id: JobId, attempt: u32, kind: Kind) {
        match self
            .deps
            .events
            .append(job_id, &event(kind), Fence::Attempt(attempt))
            .await
        {
            Ok(Some(seq)) => {
                if let Err(e) = self.deps.store.set_last_sequence(job_id, seq).await {
                    warn!(error = %e, "cannot store the terminal sequence");
                }
            }
            Ok(None) => {}
            // Watchers notice the terminal status in the store and repair the log.
            Err(e) => warn!(error = %e, "cannot publish the terminal event"),
        }
    }

    async fn settle(&self, job_id: JobId, owner: &str, retry_at: Option<chrono::DateTime<Utc>>) {
        if let Err(e) = self.deps.queue.settle(job_id, owner, retry_at).await {
            warn!(error = %e, "cannot settle the claim; its lease will expire");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::take_prefix;

    #[test]
    fn deltas_split_on_character_boundaries() {
        let mut s = "aé👋b".to_owned(); // 1 + 2 + 4 + 1 bytes
        assert_eq!(take_prefix(&mut s, 2), "a");
        assert_eq!(take_prefix(&mut s, 2), "é");
        assert_eq!(
            take_prefix(&mut s, 2),
            "👋",
            "one character even when wider than max"
        );
        assert_eq!(take_prefix(&mut s, 2), "b");
        assert!(s.is_empty());
    }
}
