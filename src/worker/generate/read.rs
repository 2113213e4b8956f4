//! Reading an attempt's upstream stream into its [`Progress`] and feeding the publisher
//! ([`Worker::flush`]) as it goes: the first token at once, REALTIME text as soon as it is
//! here, BUFFERED text (and REALTIME text nobody watches) by size or the flush timer.

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::time::Instant;

use super::{AttemptError, End, Limits, Progress, stopped};
use crate::{
    job::{Job, StreamingMode},
    provider,
    worker::{FINISH_GRACE, Running, Worker, deltas::MAX_APPEND_DELTAS},
};

/// The upstream stream being read, with the attempt's limits and the reader's timers.
pub(super) struct Reader {
    stream: provider::ChunkStream,
    limits: Limits,
    flush_every: Duration,
    buffered: bool,
    /// When the flush timer fires (while anything waits to go out).
    next_flush: Instant,
    /// The finish reason came.
    finished: bool,
    /// After the finish, wait this long for the usage chunk and the end of the stream
    /// (some servers never send `[DONE]` nor close).
    finish_deadline: Instant,
}

impl Reader {
    /// Reads `stream` for `job` within `limits`, flushing gathered text every `flush_every`.
    pub(super) fn new(
        job: &Job,
        stream: provider::ChunkStream,
        limits: Limits,
        flush_every: Duration,
    ) -> Reader {
        let buffered = job.streaming_mode == StreamingMode::Buffered;
        let next_flush = Instant::now() + flush_every;
        Reader {
            stream,
            limits,
            flush_every,
            buffered,
            next_flush,
            finished: false,
            finish_deadline: Instant::now(),
        }
    }
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

/// What the reader does next.
enum Flow {
    /// Goes round again.
    Again,
    /// Waits for the stream, a timer or a stop.
    Wait,
    /// The stream ended: the attempt concludes.
    Done,
    /// The attempt ends so.
    Ended(End),
}

impl Worker {
    /// Reads the stream to its end, publishing as it goes. `Ok`: whether the finish reason
    /// came (the stream ended, or its grace after the finish ran out); `Err`: how the attempt
    /// ended before (stopped, failed, timed out), what arrived published on a best-effort
    /// basis.
    pub(super) async fn read(
        &self,
        job: &Job,
        running: &Running,
        progress: &mut Progress,
        r: &mut Reader,
    ) -> Result<bool, End> {
        loop {
            // A flush may have found the job's cancel flag (the REALTIME path below can go
            // round without reaching the wait).
            if running.stop.is_cancelled() {
                self.flush_all(job, running, progress).await;
                return Err(stopped(running));
            }
            let has_text = !progress.unpublished.is_empty();
            let has_pending =
                has_text || !progress.before_text.is_empty() || progress.in_doubt.is_some();
            // Gathered into timed flushes: BUFFERED, and REALTIME while nobody watches.
            let gathered = r.buffered || !progress.watched;
            let flow = if !gathered && has_text {
                self.publish_arrived(job, running, progress, r).await
            } else {
                Flow::Wait
            };
            let flow = match flow {
                Flow::Wait => {
                    self.wait(job, running, progress, r, has_pending, gathered)
                        .await
                }
                flow => flow,
            };
            match flow {
                Flow::Again | Flow::Wait => {}
                Flow::Done => return Ok(r.finished),
                Flow::Ended(end) => return Err(end),
            }
        }
    }

    /// REALTIME: chunks already here join the waiting ones before they go out, each as its
    /// own delta, so a slow append is followed by one carrying all that arrived meanwhile
    /// instead of one round trip per chunk. Stage changes without text wait for the flush
    /// timer.
    async fn publish_arrived(
        &self,
        job: &Job,
        running: &Running,
        progress: &mut Progress,
        r: &mut Reader,
    ) -> Flow {
        let ready = if progress.unpublished.pieces() < MAX_APPEND_DELTAS {
            r.stream.next().now_or_never()
        } else {
            None
        };
        match ready {
            Some(item) => match absorb(item, progress, &mut r.finished, &mut r.finish_deadline) {
                Absorbed::Text | Absorbed::Other => Flow::Again,
                Absorbed::End(Some(end)) => {
                    self.flush(job, running, progress).await;
                    Flow::Ended(end)
                }
                Absorbed::End(None) => Flow::Done,
            },
            None => {
                if self.flush(job, running, progress).await {
                    return Flow::Again;
                }
                // Redis is unavailable: the flush timer below retries, or the next chunk
                // does.
                r.next_flush = Instant::now() + r.flush_every;
                Flow::Wait
            }
        }
    }

    /// Waits for the next stream item, the flush timer (when `has_pending`), the end of the
    /// finish's grace, the attempt's limit or a stop, and publishes as the mode says
    /// (`gathered`: by size or timer; the first token goes out at once in both modes).
    async fn wait(
        &self,
        job: &Job,
        running: &Running,
        progress: &mut Progress,
        r: &mut Reader,
        has_pending: bool,
        gathered: bool,
    ) -> Flow {
        let item = tokio::select! {
            biased;
            _ = running.stop.cancelled() => {
                self.flush_all(job, running, progress).await;
                return Flow::Ended(stopped(running));
            }
            _ = tokio::time::sleep_until(r.limits.current(progress).0) => {
                return Flow::Ended(End::Failed(r.limits.current(progress).1));
            }
            _ = tokio::time::sleep_until(r.next_flush), if has_pending => {
                self.flush(job, running, progress).await;
                r.next_flush = Instant::now() + r.flush_every;
                return Flow::Again;
            }
            _ = tokio::time::sleep_until(r.finish_deadline), if r.finished => return Flow::Done,
            item = r.stream.next() => item,
        };
        match absorb(item, progress, &mut r.finished, &mut r.finish_deadline) {
            Absorbed::End(Some(end)) => {
                // Best effort: what arrived before the failure reaches the watchers.
                self.flush(job, running, progress).await;
                Flow::Ended(end)
            }
            Absorbed::End(None) => Flow::Done,
            Absorbed::Other => Flow::Again,
            // The first token goes out at once in both modes (it is the time to first token
            // users feel); watched REALTIME text is published by `publish_arrived`.
            Absorbed::Text => {
                if gathered
                    && (progress.output_tokens == 1
                        || progress.unpublished.bytes() >= self.cfg.buffer_max_bytes
                        || progress.unpublished.pieces() >= MAX_APPEND_DELTAS)
                {
                    self.flush(job, running, progress).await;
                    r.next_flush = Instant::now() + r.flush_every;
                }
                Flow::Again
            }
        }
    }
}

/// Takes one upstream stream item into `progress`: text (NUL dropped), model, usage,
/// request id, finish reason (which starts the [`FINISH_GRACE`] for the usage chunk).
fn absorb(
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
