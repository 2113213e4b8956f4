//! What live watchers of a job get: its events as published, each encoded once and shared,
//! through a [`Subscription`].

use std::{
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};

use super::{Codec, Event};

/// What a live subscription delivers.
#[derive(Clone, Debug)]
pub enum Live {
    /// An event as published, with its sequence set.
    Event(Published),
    /// Events may have been missed (lag, reconnect): re-read the log from the last sequence.
    Resync,
}

/// An event as published, shared by every watcher of its job in this process: a clone copies
/// one pointer, and its protobuf encoding (what each watcher's client is sent) is made once,
/// not once per watcher (issue 14, item 5).
#[derive(Clone, Debug)]
pub struct Published(Arc<(Event, Bytes)>);

impl Published {
    /// `event` (its sequence and job id set) with its encoding by `codec`.
    pub fn new(codec: &dyn Codec, event: Event) -> Published {
        let encoded = codec.encode(&event);
        Published(Arc::new((event, encoded)))
    }

    /// The event.
    pub fn event(&self) -> &Event {
        &self.0.0
    }

    /// The event's protobuf encoding (`llmjobs.v1.Event`), shared, not copied.
    pub fn encoded(&self) -> Bytes {
        self.0.1.clone()
    }
}

/// What the live watchers of one job in this process share besides the feed: the turn of
/// the job's periodic check (see [`JobTurn::take_turn`]). Each hub keeps one per watched
/// job and hands it to every subscription of that job.
#[derive(Debug, Default)]
pub struct JobTurn {
    /// When a watcher last took the turn.
    taken: Mutex<Option<Instant>>,
}

impl JobTurn {
    /// Whether the caller should do the job's periodic check now: `true` for the first of
    /// the job's watchers in this process to ask within each `every`, `false` for the others,
    /// which rely on that one's check (what it finds reaches them through the log). A hundred
    /// watchers of a quiet job cost one check per `every`, not a hundred.
    pub fn take_turn(&self, every: Duration) -> bool {
        let mut taken = self
            .taken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if taken.is_some_and(|t| now.duration_since(t) < every) {
            return false;
        }
        *taken = Some(now);
        true
    }
}

/// A live feed of one job's events; unsubscribes when dropped.
pub struct Subscription {
    rx: BroadcastStream<Live>,
    turn: Arc<JobTurn>,
    _guard: Box<dyn Send + Sync>,
}

impl Subscription {
    /// A feed from a broadcast receiver, sharing `turn` with the job's other watchers in this
    /// process; `guard` is dropped with it.
    pub fn new(
        rx: broadcast::Receiver<Live>,
        turn: Arc<JobTurn>,
        guard: Box<dyn Send + Sync>,
    ) -> Subscription {
        Subscription {
            rx: BroadcastStream::new(rx),
            turn,
            _guard: guard,
        }
    }

    /// The job's turn, shared with its other watchers in this process.
    pub fn turn(&self) -> Arc<JobTurn> {
        self.turn.clone()
    }

    /// The next live item; `Resync` after a lag. `None` when the feed ended (shutdown).
    pub async fn recv(&mut self) -> Option<Live> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`Subscription::recv`] for a caller that polls: the next live item, `Resync` after a
    /// lag, `None` when the feed ended; `Pending` registers `cx`'s waker.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Live>> {
        std::pin::Pin::new(&mut self.rx)
            .poll_next(cx)
            .map(|item| match item? {
                Ok(live) => Some(live),
                Err(BroadcastStreamRecvError::Lagged(_)) => Some(Live::Resync),
            })
    }
}

#[cfg(test)]
mod tests;
