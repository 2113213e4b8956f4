//! A watcher's queue towards its client, bounded in bytes rather than in items.
//!
//! The watcher task pushes events; tonic pulls them when the client's HTTP/2 flow-control
//! window has room. Each queued item holds permits of a per-watcher semaphore for its encoded
//! size (plus the item's own footprint), released when tonic takes it, so a client that stops
//! reading pins at most [`Outbox::budget`] bytes here (HTTP/2 adds at most the client's
//! window). When no room frees up for the caller's patience, [`Outbox::send`] gives up with
//! [`Refused::Stalled`] and the watcher ends the stream, releasing its subscription and reads.
//!
//! The stream's final status travels beside the queue, not in it: a stream that ends because
//! its queue is full can still end with a status instead of a silent OK.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::Status;

/// Why [`Outbox::send`] did not queue an item.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The client went away (the stream was dropped).
    Gone,
    /// The queue stayed full for the whole patience: the client is not reading.
    Stalled,
}

/// The sending half: owned by the watcher task.
pub struct Outbox<T> {
    tx: mpsc::UnboundedSender<(T, OwnedSemaphorePermit)>,
    room: Arc<Semaphore>,
    budget: u32,
    end: Arc<Mutex<Option<Status>>>,
}

/// The receiving half, handed to tonic as the response stream: yields the queued items, then
/// the final status when one was set.
pub struct Drain<T> {
    rx: mpsc::UnboundedReceiver<(T, OwnedSemaphorePermit)>,
    end: Arc<Mutex<Option<Status>>>,
    finished: bool,
}

/// A queue of at most `budget_bytes` (clamped to 1..=`u32::MAX`) bytes of items.
pub fn outbox<T>(budget_bytes: usize) -> (Outbox<T>, Drain<T>) {
    let budget = u32::try_from(budget_bytes).unwrap_or(u32::MAX).max(1);
    let (tx, rx) = mpsc::unbounded_channel();
    let end = Arc::new(Mutex::new(None));
    (
        Outbox {
            tx,
            room: Arc::new(Semaphore::new(budget as usize)),
            budget,
            end: end.clone(),
        },
        Drain {
            rx,
            end,
            finished: false,
        },
    )
}

impl<T> Outbox<T> {
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
        let permit = tokio::select! {
            got = tokio::time::timeout(patience, self.room.clone().acquire_many_owned(cost)) => {
                match got {
                    Ok(Ok(permit)) => permit,
                    // The semaphore is never closed; treat it as the end of the stream.
                    Ok(Err(_)) => return Err(Refused::Gone),
                    Err(_) => return Err(Refused::Stalled),
                }
            }
            _ = self.tx.closed() => return Err(Refused::Gone),
        };
        self.tx.send((item, permit)).map_err(|_| Refused::Gone)
    }

    /// Resolves when the client has gone away.
    pub async fn closed(&self) {
        self.tx.closed().await
    }

    /// Ends the stream with `status` once the queued items are taken (they are still
    /// delivered first).
    pub fn end(self, status: Status) {
        if let Ok(mut end) = self.end.lock() {
            *end = Some(status);
        }
    }
}

impl<T> Stream for Drain<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            // The permit drops here: the item has left this queue for tonic's.
            Poll::Ready(Some((item, _permit))) => Poll::Ready(Some(Ok(item))),
            Poll::Ready(None) => {
                self.finished = true;
                let status = self.end.lock().ok().and_then(|mut end| end.take());
                Poll::Ready(status.map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn items_then_the_final_status_arrive_in_order() {
        let (tx, mut rx) = outbox::<u32>(1024);
        tx.send(1, 10, Duration::from_secs(1)).await.expect("sent");
        tx.send(2, 10, Duration::from_secs(1)).await.expect("sent");
        tx.end(Status::resource_exhausted("stalled"));
        assert_eq!(rx.next().await.expect("an item").expect("not an error"), 1);
        assert_eq!(rx.next().await.expect("an item").expect("not an error"), 2);
        let status = rx.next().await.expect("an item").expect_err("an error");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(rx.next().await.is_none());
    }

    #[tokio::test]
    async fn a_queue_without_a_status_ends_quietly() {
        let (tx, mut rx) = outbox::<u32>(1024);
        tx.send(7, 1, Duration::from_secs(1)).await.expect("sent");
        drop(tx);
        assert_eq!(rx.next().await.expect("an item").expect("not an error"), 7);
        assert!(rx.next().await.is_none());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_after_the_patience_and_frees_room_when_read() {
        let short = Duration::from_millis(100);
        let budget = 100 + std::mem::size_of::<u32>() * 2;
        let (tx, mut rx) = outbox::<u32>(budget);
        tx.send(1, 50, Duration::from_secs(1)).await.expect("sent");
        tx.send(2, 50, Duration::from_secs(1)).await.expect("sent");
        assert_eq!(tx.send(3, 50, short).await, Err(Refused::Stalled));
        // Taking one item makes room for the next.
        assert_eq!(rx.next().await.expect("an item").expect("not an error"), 1);
        tx.send(3, 50, short).await.expect("sent");
        // An item bigger than the budget waits for an empty queue, then goes.
        let big = tokio::spawn(async move {
            let sent = tx.send(4, 10 * budget, Duration::from_secs(60)).await;
            (tx, sent)
        });
        tokio::time::sleep(short).await;
        assert!(!big.is_finished(), "the big item waits for an empty queue");
        assert_eq!(rx.next().await.expect("an item").expect("not an error"), 2);
        assert_eq!(rx.next().await.expect("an item").expect("not an error"), 3);
        let (_tx, sent) = big.await.expect("joined");
        assert_eq!(sent, Ok(()));
        assert_eq!(rx.next().await.expect("an item").expect("not an error"), 4);
    }

    #[tokio::test]
    async fn a_dropped_stream_refuses_at_once() {
        let (tx, rx) = outbox::<u32>(8);
        drop(rx);
        assert_eq!(
            tx.send(1, 1, Duration::from_secs(60)).await,
            Err(Refused::Gone)
        );
    }
}
