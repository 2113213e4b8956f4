//! What live watchers of a job get: its events as published, each encoded once and shared,
//! through a [`Subscription`].

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::broadcast;

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

/// A live feed of one job's events; unsubscribes when dropped.
pub struct Subscription {
    rx: broadcast::Receiver<Live>,
    _guard: Box<dyn Send + Sync>,
}

impl Subscription {
    /// A feed from a broadcast receiver; `guard` is dropped with it.
    pub fn new(rx: broadcast::Receiver<Live>, guard: Box<dyn Send + Sync>) -> Subscription {
        Subscription { rx, _guard: guard }
    }

    /// The next live item; `Resync` after a lag. `None` when the feed ended (shutdown).
    pub async fn recv(&mut self) -> Option<Live> {
        match self.rx.recv().await {
            Ok(live) => Some(live),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Live::Resync),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}
