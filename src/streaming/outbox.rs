//! A watcher's queue towards its client, bounded in bytes rather than in items.
//!
//! The watcher task pushes events; tonic pulls them when the client's HTTP/2 flow-control
//! window has room. Each queued item holds permits of a per-watcher semaphore for its encoded
//! size (plus the item's own footprint), released when tonic takes it, so a client that stops
//! reading pins at most [`Outbox::budget`] bytes here (HTTP/2 adds at most the client's
//! window). When no room frees up for the caller's patience, [`Outbox::send`] gives up with
//! [`Refused::Stalled`]; the watcher then [`Outbox::abandon`]s the queue, which drops what
//! waits in it at once and ends the watcher (its subscription, its reads, its key's slot).
//!
//! The stream's final status travels beside the queue, not in it: a stream that ends because
//! its queue is full can still end with a status instead of a silent OK, as soon as the
//! client reads again.
//!
//! The sender may also lend the receiver a [`Source`] to pull from itself while nothing is
//! queued ([`Outbox::lend`]): a live feed then reaches the client with no task of the
//! sender's woken and no queue between. Items queued always go first, and a source that
//! needs its sender hands itself back ([`Outbox::handed_back`]).

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
    time::Duration,
};

use futures::Stream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// Why [`Outbox::send`] did not queue an item.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The client went away (the stream was dropped).
    Gone,
    /// The queue stayed full for the whole patience: the client is not reading.
    Stalled,
}

/// Items the receiving half pulls itself while nothing is queued (see [`Outbox::lend`]).
pub trait Source<T>: Send {
    /// The next item; `Ready(None)` once the source needs its sender (it is then not polled
    /// again until lent anew); `Pending` registers `cx`'s waker.
    fn poll_pull(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>>;
}

/// No source: the outbox is a plain queue.
pub enum NoSource {}

impl<T> Source<T> for NoSource {
    fn poll_pull(&mut self, _: &mut Context<'_>) -> Poll<Option<T>> {
        match *self {}
    }
}

/// What the two halves share.
struct State<T, S> {
    queue: VecDeque<(T, OwnedSemaphorePermit)>,
    /// The status that ends the stream, once the sender has ended it.
    end: Option<Status>,
    /// The sender has ended (or dropped) its half.
    done: bool,
    /// The receiver waiting for the next item.
    waker: Option<Waker>,
    /// The source lent to the receiver, until the sender takes it back.
    source: Option<S>,
    /// The lent source asked for its sender.
    handed_back: bool,
    /// Items the receiver has pulled from sources.
    pulled: u64,
}

struct Shared<T, S> {
    state: Mutex<State<T, S>>,
    /// Cancelled when the receiving half is dropped (the client went away).
    gone: CancellationToken,
    /// Notified when the lent source hands itself back.
    back: Arc<Notify>,
}

impl<T, S> Shared<T, S> {
    fn lock(&self) -> MutexGuard<'_, State<T, S>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the sending side with `status` (after the queued items, or instead of them with
    /// `drop_queued`), drops the lent source, and wakes the receiver.
    fn finish(&self, status: Option<Status>, drop_queued: bool) {
        let (waker, _source) = {
            let mut state = self.lock();
            if drop_queued {
                state.queue.clear();
            }
            if status.is_some() {
                state.end = status;
            }
            state.done = true;
            (state.waker.take(), state.source.take())
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The sending half: owned by the watcher task.
pub struct Outbox<T, S: Source<T> = NoSource> {
    shared: Arc<Shared<T, S>>,
    room: Arc<Semaphore>,
    budget: u32,
}

/// The receiving half, handed to tonic as the response stream: yields the queued items (and
/// while none are queued, those of the lent source), then the final status when one was set.
pub struct Drain<T, S: Source<T> = NoSource> {
    shared: Arc<Shared<T, S>>,
    finished: bool,
}

/// A queue of at most `budget_bytes` (clamped to 1..=`u32::MAX`) bytes of items.
pub fn outbox<T>(budget_bytes: usize) -> (Outbox<T>, Drain<T>) {
    with_source(budget_bytes)
}

/// [`outbox`], whose sender may lend its receiver a source of type `S` (see
/// [`Outbox::lend`]).
pub fn with_source<T, S: Source<T>>(budget_bytes: usize) -> (Outbox<T, S>, Drain<T, S>) {
    let budget = u32::try_from(budget_bytes).unwrap_or(u32::MAX).max(1);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            end: None,
            done: false,
            waker: None,
            source: None,
            handed_back: false,
            pulled: 0,
        }),
        gone: CancellationToken::new(),
        back: Arc::new(Notify::new()),
    });
    (
        Outbox {
            shared: shared.clone(),
            room: Arc::new(Semaphore::new(budget as usize)),
            budget,
        },
        Drain {
            shared,
            finished: false,
        },
    )
}

impl<T, S: Source<T>> Outbox<T, S> {
    /// Bytes the queue may hold.
    pub fn budget(&self) -> usize {
        self.budget as usize
    }

    /// Queues `item`, whose encoded size is `bytes`, waiting up to `patience` for room. An
    /// item larger than the whole budget waits for an empty queue. Errors: [`Refused`].
    pub async fn send(&self, item: T, bytes: usize, patience: Duration) -> Result<(), Refused> {
        let cost = bytes
            .saturating_add(std::mem::size_of::<T>())
            .min(self.budget as usize) as u32;
        if self.shared.gone.is_cancelled() {
            return Err(Refused::Gone);
        }
        // Room at once (a client that keeps up): no timer, no wait.
        if let Ok(permit) = self.room.clone().try_acquire_many_owned(cost) {
            self.push(item, permit);
            return Ok(());
        }
        let permit = tokio::select! {
            biased;
            _ = self.shared.gone.cancelled() => return Err(Refused::Gone),
            got = tokio::time::timeout(patience, self.room.clone().acquire_many_owned(cost)) => {
                match got {
                    Ok(Ok(permit)) => permit,
                    // The semaphore is never closed; treat it as the end of the stream.
                    Ok(Err(_)) => return Err(Refused::Gone),
                    Err(_) => return Err(Refused::Stalled),
                }
            }
        };
        self.push(item, permit);
        Ok(())
    }

    /// Queues `item`, which holds `permit`'s room, and wakes the receiver.
    fn push(&self, item: T, permit: OwnedSemaphorePermit) {
        let waker = {
            let mut state = self.shared.lock();
            state.queue.push_back((item, permit));
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Lends `source` to the receiver, which pulls from it whenever nothing is queued, until
    /// the source hands itself back or the sender [`Outbox::reclaim`]s it.
    pub fn lend(&self, source: S) {
        let waker = {
            let mut state = self.shared.lock();
            state.source = Some(source);
            state.handed_back = false;
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Takes the lent source back (`None` when none is lent): the receiver pulls nothing
    /// more from it.
    pub fn reclaim(&self) -> Option<S> {
        let mut state = self.shared.lock();
        state.handed_back = false;
        state.source.take()
    }

    /// Notified when the lent source hands itself back (see [`Source::poll_pull`]); a
    /// notification may also be stale (the source was reclaimed meanwhile).
    pub fn handed_back(&self) -> Arc<Notify> {
        self.shared.back.clone()
    }

    /// How many items the receiver has pulled from lent sources.
    pub fn pulled(&self) -> u64 {
        self.shared.lock().pulled
    }

    /// Resolves when the client has gone away.
    pub async fn closed(&self) {
        self.shared.gone.cancelled().await
    }

    /// Cancelled when the client has gone away (what [`Outbox::closed`] waits for), for a
    /// caller that waits for it while it uses the outbox.
    pub fn gone(&self) -> CancellationToken {
        self.shared.gone.clone()
    }

    /// Ends the stream with `status` once the queued items are taken (they are still
    /// delivered first).
    pub fn end(self, status: Status) {
        self.shared.finish(Some(status), false);
    }

    /// Ends the stream with `status` at once, dropping the items still queued (a client that
    /// stopped reading): they are freed now, not when the client reads or leaves.
    pub fn abandon(self, status: Status) {
        self.shared.finish(Some(status), true);
    }
}

impl<T, S: Source<T>> Drop for Outbox<T, S> {
    fn drop(&mut self) {
        // Ended without a status (after the terminal event, or the client left): the stream
        // ends quietly once the queue is drained. A status set before stays.
        self.shared.finish(None, false);
    }
}

impl<T, S: Source<T>> Drop for Drain<T, S> {
    fn drop(&mut self) {
        self.shared.gone.cancel();
    }
}

impl<T, S: Source<T>> Stream for Drain<T, S> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let mut state = self.shared.lock();
        // The permit drops here: the item has left this queue for tonic's.
        if let Some((item, _permit)) = state.queue.pop_front() {
            return Poll::Ready(Some(Ok(item)));
        }
        if state.done {
            let status = state.end.take();
            drop(state);
            self.finished = true;
            return Poll::Ready(status.map(Err));
        }
        // Nothing queued: the lent source's next item, under the same lock, so that nothing
        // the sender queued before lending it can come after.
        let mut ask = false;
        if !state.handed_back
            && let Some(source) = state.source.as_mut()
        {
            match source.poll_pull(cx) {
                Poll::Ready(Some(item)) => {
                    state.pulled += 1;
                    return Poll::Ready(Some(Ok(item)));
                }
                Poll::Ready(None) => {
                    state.handed_back = true;
                    ask = true;
                }
                Poll::Pending => {}
            }
        }
        if !state
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.waker = Some(cx.waker().clone());
        }
        drop(state);
        if ask {
            self.shared.back.notify_one();
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests;
