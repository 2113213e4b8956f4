//! Serving one `StreamBatch` watcher: progress snapshots and each job's terminal event, until
//! every job of the batch has ended.
//!
//! The watcher polls Postgres every [`POLL`] (one statement reads the states of all the
//! batch's jobs) rather than subscribing to each job's live feed: a batch of 1,000 jobs costs
//! one query per poll, not 1,000 subscriptions. A job's terminal event comes from its Redis log
//! (exactly as `StreamJob` sends it); when the log is gone or Redis fails, it is rebuilt from
//! the store.
//!
//! Its queue towards the client is an [`Outbox`] of [`super::WATCHER_BUFFER_BYTES`], as a job
//! watcher's, counted in the messages' encoded bytes. Making and sizing the messages is the
//! wire's business: the caller hands in an [`Encoder`] (the API's encodes `BatchEvent`s). A
//! client that reads nothing for [`Pace::stall_patience`] loses its stream
//! (RESOURCE_EXHAUSTED; calling StreamBatch again starts over with the batch's progress) and
//! frees the watcher and its key's slot.

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::debug;

use super::{
    Pace,
    outbox::{self, Outbox, Refused},
};
use crate::{
    batch::{BatchId, Member, Progress, Snapshot},
    events::{Event, EventLog, is_terminal},
    store::Store,
};

/// How often a watcher reads the batch's job states.
pub const POLL: Duration = Duration::from_millis(500);

/// What a batch watcher stream yields: its [`Encoder`]'s messages (progress and terminal
/// events), then the status that ended it, if any.
pub type BatchEventStream<M> = outbox::Drain<M>;

/// Makes and sizes the messages of a batch stream, for the wire they go out on.
pub trait Encoder: Send + Sync + 'static {
    /// One message of the stream.
    type Message: Send + 'static;
    /// The batch's progress: `snap`'s batch with `progress`, without its job ids.
    fn progress(&self, snap: &Snapshot, progress: &Progress) -> Self::Message;
    /// A job's terminal event (whole: with its sequence and job id).
    fn job_finished(&self, event: &Event) -> Self::Message;
    /// Bytes of `message` once encoded: what the watcher's queue budget counts.
    fn encoded_len(&self, message: &Self::Message) -> usize;
}

/// Starts following batch `batch_id` and returns the stream at once. It ends after a final
/// progress message once every job's terminal event was sent; with UNAVAILABLE when Postgres
/// fails or `shutdown` is cancelled; with NOT_FOUND when the batch vanishes (cleanup); with
/// RESOURCE_EXHAUSTED when the client reads nothing for `pace.stall_patience` while its queue
/// is full. The work stops when the client goes away. A quiet stream gets a progress message
/// every `pace.heartbeat`. `keep` (a key's open-stream slot) is held until the watcher ends,
/// which for a client that stopped reading is before its stream does. `encoder` makes and
/// sizes the messages.
pub fn follow<E: Encoder, K: Send + 'static>(
    store: Arc<dyn Store>,
    events: Arc<dyn EventLog>,
    batch_id: BatchId,
    pace: Pace,
    shutdown: CancellationToken,
    keep: K,
    encoder: E,
) -> BatchEventStream<E::Message> {
    let (tx, rx) = outbox::outbox(super::WATCHER_BUFFER_BYTES);
    tokio::spawn(async move {
        let _keep = keep;
        let mut w = Watcher {
            encoder,
            store,
            events,
            batch_id,
            tx,
            sent: HashSet::new(),
            last_progress: None,
            last_sent: tokio::time::Instant::now(),
            heartbeat: pace.heartbeat.max(POLL),
            stall_patience: pace.stall_patience,
        };
        let result = tokio::select! {
            r = w.run() => r,
            _ = shutdown.cancelled() => Err(Stop::Status(Status::unavailable(
                "the server is shutting down; call StreamBatch again",
            ))),
        };
        match result {
            Ok(()) | Err(Stop::Gone) => {}
            Err(Stop::Status(status)) => w.tx.end(status),
            Err(Stop::Stalled(status)) => w.tx.abandon(status),
        }
    });
    rx
}

enum Stop {
    /// The client went away.
    Gone,
    /// End the stream with this status, after what is queued.
    Status(Status),
    /// The client stopped reading: drop what is queued and end with this status.
    Stalled(Status),
}

fn unavailable(e: impl std::fmt::Display) -> Stop {
    tracing::warn!(error = %e, "batch watcher: dependency failed");
    Stop::Status(Status::unavailable(
        "a dependency of the batch stream is unavailable; call StreamBatch again",
    ))
}

/// The figures a progress message is re-sent for when they change (the estimate moves with
/// the clock, so it does not count).
type Figures = (crate::batch::Counts, u64, u64, Option<f64>);

fn figures(p: &Progress) -> Figures {
    (p.counts, p.input_tokens, p.output_tokens, p.cost_usd)
}

struct Watcher<E: Encoder> {
    encoder: E,
    store: Arc<dyn Store>,
    events: Arc<dyn EventLog>,
    batch_id: BatchId,
    tx: Outbox<E::Message>,
    /// Jobs whose terminal event was sent.
    sent: HashSet<uuid::Uuid>,
    /// Figures of the last progress message.
    last_progress: Option<Figures>,
    /// When the client last got anything.
    last_sent: tokio::time::Instant,
    /// Longest silence towards the client.
    heartbeat: Duration,
    /// See [`Pace::stall_patience`].
    stall_patience: Duration,
}

impl<E: Encoder> Watcher<E> {
    async fn run(&mut self) -> Result<(), Stop> {
        loop {
            let snap = self
                .store
                .get_batch(self.batch_id)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| {
                    Stop::Status(Status::not_found(format!(
                        "batch {} not found",
                        self.batch_id
                    )))
                })?;
            let now = Utc::now();
            let progress = Progress::of(snap.batch.created_at, &snap.members, now);
            if self.last_progress.is_none() {
                self.progress(&snap, &progress).await?;
            }
            let mut ended: Vec<&Member> = snap
                .members
                .iter()
                .filter(|m| m.status.is_terminal() && !self.sent.contains(&m.id))
                .collect();
            ended.sort_by_key(|m| m.finished_at);
            for m in ended {
                if let Some(ev) = self.terminal_event(m, now).await? {
                    let message = self.encoder.job_finished(&ev);
                    self.send(message).await?;
                    self.sent.insert(m.id);
                }
            }
            let done = snap.members.iter().all(|m| self.sent.contains(&m.id));
            if done
                || self.last_progress != Some(figures(&progress))
                || self.last_sent.elapsed() >= self.heartbeat
            {
                self.progress(&snap, &progress).await?;
            }
            if done {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = self.tx.closed() => return Err(Stop::Gone),
            }
        }
    }

    async fn progress(&mut self, snap: &Snapshot, progress: &Progress) -> Result<(), Stop> {
        let message = self.encoder.progress(snap, progress);
        self.send(message).await?;
        self.last_progress = Some(figures(progress));
        Ok(())
    }

    async fn send(&mut self, message: E::Message) -> Result<(), Stop> {
        let bytes = self.encoder.encoded_len(&message);
        match self.tx.send(message, bytes, self.stall_patience).await {
            Ok(()) => {
                self.last_sent = tokio::time::Instant::now();
                Ok(())
            }
            Err(Refused::Gone) => Err(Stop::Gone),
            Err(Refused::Stalled) => {
                debug!(batch_id = %self.batch_id, "batch watcher: the client stopped reading");
                Err(Stop::Stalled(Status::resource_exhausted(format!(
                    "the client read nothing for {} s while {} KiB of batch events waited for \
                     it; call StreamBatch again (it starts with the batch's progress)",
                    self.stall_patience.as_secs(),
                    self.tx.budget() / 1024
                ))))
            }
        }
    }

    /// The job's terminal event from its log; rebuilt from the store when the log has none
    /// (expired, lost, Redis failing) and the job ended long enough ago that its writer should
    /// have appended it (as `StreamJob` repairs). `None`: look again at the next poll.
    async fn terminal_event(
        &self,
        m: &Member,
        now: chrono::DateTime<Utc>,
    ) -> Result<Option<Event>, Stop> {
        if m.last_sequence > 0 {
            match self.events.read_page(m.id, m.last_sequence - 1, 1).await {
                Ok(Some(read)) => {
                    if let Some(mut ev) = read.events.into_iter().find(is_terminal) {
                        ev.job_id = m.id;
                        return Ok(Some(ev));
                    }
                }
                Ok(None) => {}
                Err(e) => debug!(job_id = %m.id, error = %e, "cannot read the job's log"),
            }
        }
        let settle = chrono::Duration::from_std(super::IDLE_CHECK).unwrap_or_default();
        if m.finished_at.is_none_or(|t| now - t < settle) {
            return Ok(None);
        }
        let Some(job) = self.store.get_job(m.id).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let kind = super::terminal_kind(self.store.as_ref(), &job)
            .await
            .map_err(unavailable)?;
        Ok(Some(Event {
            sequence: m.last_sequence,
            time: job.finished_at.unwrap_or_default(),
            job_id: m.id,
            kind,
        }))
    }
}
