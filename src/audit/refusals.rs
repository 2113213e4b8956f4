//! Refusals (bad keys, missing roles) on their way to the audit log, coalesced so that a flood
//! of them costs a bounded number of rows and no task per request.
//!
//! Per peer host, action and reason, the first refusal of a window is written at once; the
//! ones after it within the window are only counted, and the count goes in one more row once
//! the window has passed (`detail` starts with `N more: `). Rows reach the store through one
//! bounded queue and one writer task; when the queue is full a row is dropped, counted and
//! logged instead of waited for, so a slow audit log never slows refusals down.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Auditor, Event};

/// Rows waiting for the writer; more are dropped (and counted).
const QUEUE: usize = 1024;
/// Most (peer host, action, reason) windows tracked at once; past that, refusals from new
/// peers are queued without coalescing (the queue still bounds them).
const MAX_WINDOWS: usize = 10_000;

/// Coalesces refusals and writes them to the audit log. Cloning shares the same windows and
/// writer.
#[derive(Clone)]
pub struct Refusals(Arc<Inner>);

struct Inner {
    window: Duration,
    open: Mutex<HashMap<Key, Window>>,
    tx: mpsc::Sender<Event>,
    dropped: AtomicU64,
}

/// What refusals are coalesced by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    host: String,
    action: String,
    detail: String,
}

/// Refusals of one key since `started`: the first was written, `more` were not yet.
struct Window {
    started: Instant,
    more: u64,
    last: Event,
}

impl Window {
    /// The row that reports the refusals counted in this window (`None`: there were none).
    fn summary(self) -> Option<Event> {
        (self.more > 0).then(|| Event {
            detail: format!("{} more: {}", self.more, self.last.detail),
            ..self.last
        })
    }
}

/// The host part of a peer address (`1.2.3.4:5678` → `1.2.3.4`): a flood comes over many
/// connections from one host.
fn host(peer: &str) -> String {
    peer.parse::<std::net::SocketAddr>()
        .map_or_else(|_| peer.to_owned(), |a| a.ip().to_string())
}

impl Refusals {
    /// Starts the writer task, which writes rows through `auditor`, reports each window's
    /// count once `window` has passed since its first refusal, and ends when `shutdown` is
    /// cancelled (after writing what it holds).
    pub fn start(auditor: Auditor, window: Duration, shutdown: CancellationToken) -> Refusals {
        let (tx, rx) = mpsc::channel(QUEUE);
        let refusals = Refusals(Arc::new(Inner {
            window: window.max(Duration::from_millis(1)),
            open: Mutex::new(HashMap::new()),
            tx,
            dropped: AtomicU64::new(0),
        }));
        tokio::spawn(refusals.clone().write(auditor, rx, shutdown));
        refusals
    }

    /// Records a refusal; never waits.
    pub fn record(&self, event: Event) {
        let key = Key {
            host: host(&event.peer),
            action: event.action.clone(),
            detail: event.detail.clone(),
        };
        let mut open = self.0.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = open.get_mut(&key)
            && w.started.elapsed() < self.0.window
        {
            w.more += 1;
            w.last = event;
            return;
        }
        if let Some(summary) = open.remove(&key).and_then(Window::summary) {
            self.queue(summary);
        }
        if open.len() >= MAX_WINDOWS {
            for summary in self.expired(&mut open) {
                self.queue(summary);
            }
        }
        if open.len() < MAX_WINDOWS {
            open.insert(
                key,
                Window {
                    started: Instant::now(),
                    more: 0,
                    last: event.clone(),
                },
            );
        }
        drop(open);
        self.queue(event);
    }

    /// Removes the windows that have passed; returns their summaries.
    fn expired(&self, open: &mut HashMap<Key, Window>) -> Vec<Event> {
        let window = self.0.window;
        let done: Vec<Key> = open
            .iter()
            .filter(|(_, w)| w.started.elapsed() >= window)
            .map(|(k, _)| k.clone())
            .collect();
        done.into_iter()
            .filter_map(|k| open.remove(&k).and_then(Window::summary))
            .collect()
    }

    fn queue(&self, event: Event) {
        if self.0.tx.try_send(event).is_err() {
            let n = self.0.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    "audit log queue full: refusals dropped from the audit log"
                );
            }
        }
    }

    /// Refusal rows dropped so far because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    /// The writer task.
    async fn write(
        self,
        auditor: Auditor,
        mut rx: mpsc::Receiver<Event>,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.0.window.max(Duration::from_millis(100)));
        loop {
            tokio::select! {
                event = rx.recv() => match event {
                    Some(event) => auditor.write(event).await,
                    None => return,
                },
                _ = tick.tick() => {
                    let summaries = {
                        let mut open = self.0.open.lock().unwrap_or_else(PoisonError::into_inner);
                        self.expired(&mut open)
                    };
                    for summary in summaries {
                        auditor.write(summary).await;
                    }
                }
                _ = shutdown.cancelled() => break,
            }
        }
        // What is still held: queued rows, then every window's count.
        while let Ok(event) = rx.try_recv() {
            auditor.write(event).await;
        }
        let open = std::mem::take(&mut *self.0.open.lock().unwrap_or_else(PoisonError::into_inner));
        for summary in open.into_values().filter_map(Window::summary) {
            auditor.write(summary).await;
        }
    }
}

#[cfg(test)]
mod tests;
