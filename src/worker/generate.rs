//! Generating one attempt: stream from the provider, enforce the timeouts, publish token
//! deltas (coalesced in BUFFERED mode), and report how generation ended.

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::time::Instant;

mod end;
mod flush;
mod progress;

pub(super) use end::{AttemptError, End};
pub(super) use progress::{Progress, Start};

use super::{FINISH_GRACE, Running, StopReason, Worker, deltas::MAX_APPEND_DELTAS};
use crate::{
    job::{Job, StreamingMode},
    progress::Stage,
    provider,
    ratelimit::upstream::Budget,
};

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
}
