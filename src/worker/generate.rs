//! Generating one attempt: take the fleet's turn, open the upstream stream, read it while
//! publishing what arrives (see [`read`]: token deltas, coalesced in BUFFERED mode, with the
//! stage changes and progress that go with them), and report how generation ended.

use std::time::Duration;

use tokio::time::Instant;

mod end;
mod flush;
mod progress;
mod read;

pub(super) use end::{AttemptError, End};
pub(super) use progress::{Progress, Start};

use super::{Running, Settings, StopReason, Worker};
use crate::{job::Job, progress::Stage, provider, ratelimit::upstream::Budget};

/// The `q` quantile (0..=1, nearest rank) of `values`; `None` when empty. Sorts in place.
fn percentile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How an attempt told to stop ends: as its stop's reason says (a cancel when none is set).
fn stopped(running: &Running) -> End {
    End::Stopped(*running.reason.get().unwrap_or(&StopReason::Cancelled))
}

/// An attempt's time limits, counted from when it was set (after the fleet's turn).
struct Limits {
    deadline: Instant,
    first_token_deadline: Instant,
}

impl Limits {
    /// The job's own timeout (else the configured one) and the first-token timeout.
    fn new(job: &Job, cfg: &Settings) -> Limits {
        let timeout = job
            .timeout
            .unwrap_or(Duration::from_secs(cfg.job_timeout_secs.max(1)));
        let deadline = Instant::now() + timeout;
        let first_token_deadline =
            Instant::now() + Duration::from_secs(cfg.first_token_timeout_secs.max(1));
        Limits {
            deadline,
            first_token_deadline,
        }
    }

    /// The limit that applies now, and the failure it ends in: while no token has arrived,
    /// whichever limit comes first.
    fn current(&self, p: &Progress) -> (Instant, AttemptError) {
        if p.first_token_at.is_none() && self.first_token_deadline < self.deadline {
            (self.first_token_deadline, AttemptError::FirstTokenTimeout)
        } else {
            (self.deadline, AttemptError::Timeout)
        }
    }
}

/// How the upstream call went while it was being opened: `None` when the attempt was told to
/// stop; `Err(None)` when the time limit passed first.
type Opened = Option<Result<provider::ChunkStream, Option<provider::Error>>>;

impl Worker {
    /// Generates attempt `job.attempts` of `job` on `provider` into `progress`, publishing
    /// as it goes, and says how it ended (the end of a completing attempt is claimed by the
    /// last flush: see [`Worker::conclude`]).
    pub(super) async fn generate(
        &self,
        job: &Job,
        provider: &dyn provider::Provider,
        running: &Running,
        progress: &mut Progress,
    ) -> End {
        // The fleet's turn first; the wait does not count against the attempt's timeouts.
        if !provider.simulated() && !self.take_turn(job, running).await {
            return stopped(running);
        }
        let limits = Limits::new(job, &self.cfg);
        let flush_every = Duration::from_millis(self.cfg.buffer_flush_ms.max(1));
        let stream = match self
            .open(job, provider, running, progress, &limits, flush_every)
            .await
        {
            Ok(stream) => stream,
            Err(end) => return end,
        };
        // The stage goes out with the first token when that comes within a flush interval
        // (one append instead of two), else by the flush timer of the reader.
        let awaiting = progress.tracker.advance(Stage::AwaitingFirstToken);
        progress.before_text.push(awaiting);
        let mut reader = read::Reader::new(job, stream, limits, flush_every);
        match self.read(job, running, progress, &mut reader).await {
            Ok(finished) => self.conclude(job, running, progress, finished).await,
            Err(end) => end,
        }
    }

    /// Waits for the fleet's upstream budget to cover the job's cost. Returns false when the
    /// attempt was told to stop first.
    async fn take_turn(&self, job: &Job, running: &Running) -> bool {
        let prompt_bytes = job.messages.iter().map(|m| m.content.len()).sum();
        let tokens = Budget::cost(prompt_bytes, job.params.max_tokens);
        let budget = &self.deps.budget;
        budget
            .acquire(&job.params.model, tokens, &running.stop)
            .await
            .is_ok()
    }

    /// Sends the upstream request and waits for its stream within the attempt's limits.
    /// `Err`: how the attempt ended instead (stopped, a provider failure, a timeout); a
    /// rate-limit answer also slows the model's budget down.
    async fn open(
        &self,
        job: &Job,
        provider: &dyn provider::Provider,
        running: &Running,
        progress: &mut Progress,
        limits: &Limits,
        flush_every: Duration,
    ) -> Result<provider::ChunkStream, End> {
        match self
            .connect(job, provider, running, progress, limits, flush_every)
            .await
        {
            None => Err(stopped(running)),
            Some(Ok(s)) => Ok(s),
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
                Err(End::Failed(AttemptError::Provider(e)))
            }
            Some(Err(None)) => Err(End::Failed(limits.current(progress).1)),
        }
    }

    /// Sends the upstream request and waits for its stream, the attempt's limit or a stop.
    /// The connecting stage goes out with the first token when the upstream answers within
    /// a flush interval (one append instead of two); else once that interval has passed,
    /// while the request waits, so it stays off the path to the first token.
    async fn connect(
        &self,
        job: &Job,
        provider: &dyn provider::Provider,
        running: &Running,
        progress: &mut Progress,
        limits: &Limits,
        flush_every: Duration,
    ) -> Opened {
        let stop = &running.stop;
        let request = provider::Request {
            messages: job.messages.clone(),
            params: job.params.clone(),
            // This runs in the call's `chat` span (see `Worker::attempt`).
            traceparent: crate::trace::traceparent(&tracing::Span::current()),
        };
        let connecting = progress.tracker.advance(Stage::Connecting);
        let connect_until = limits.current(progress).0;
        progress.sent_at = Instant::now();
        progress.called = true;
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
    }

    /// Decides how a stream that ended (`finished`: after its finish reason) ends the
    /// attempt, and publishes what is left; a completing attempt's last flush claims the
    /// job's end with its finalizing events.
    async fn conclude(
        &self,
        job: &Job,
        running: &Running,
        progress: &mut Progress,
        finished: bool,
    ) -> End {
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
            return stopped(running);
        }
        end
    }
}
