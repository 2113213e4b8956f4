//! A watcher's live tail, lent to its stream: once caught up, the watcher hands its live
//! subscription to the stream's receiving half ([`outbox::Outbox::lend`]), and the task that
//! writes the client's HTTP/2 stream takes each next event straight from the job's shared
//! feed. No task of the watcher's wakes per event and nothing is queued or copied between
//! (issue 14: the hop through the watcher's task was most of its cost per delivery).
//!
//! The tail yields only the next event in sequence. Anything else (a gap, a lag, a resync,
//! the end of the feed) and the terminal event hand it back to the watcher, which catches up
//! from the log, or ends the stream, and lends it again.

use std::task::{Context, Poll};

use bytes::Bytes;

use super::outbox::Source;
use crate::events::{Live, Subscription, is_terminal};

/// Why a tail handed itself back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stop {
    /// It yielded the terminal event: the stream ends.
    Terminal,
    /// Something other than the next event came: the log has what was missed.
    Behind,
    /// The live feed ended (the hub shut down).
    Closed,
}

/// The live subscription, with the sequence of the last event the stream has.
pub struct Tail {
    live: Subscription,
    /// The sequence of the last event queued or yielded to the client.
    pub(super) last: u64,
    /// Why it handed itself back; `None` while it yields.
    pub(super) stop: Option<Stop>,
}

impl Tail {
    /// A tail following `live` after `last`.
    pub(super) fn new(live: Subscription, last: u64) -> Tail {
        Tail {
            live,
            last,
            stop: None,
        }
    }
}

impl Source<Bytes> for Tail {
    fn poll_pull(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.stop.is_some() {
            return Poll::Ready(None);
        }
        loop {
            let Some(live) = std::task::ready!(self.live.poll_recv(cx)) else {
                self.stop = Some(Stop::Closed);
                return Poll::Ready(None);
            };
            match live {
                // Already sent from the log.
                Live::Event(p) if p.event().sequence <= self.last => {}
                Live::Event(p) if p.event().sequence == self.last + 1 => {
                    self.last += 1;
                    if is_terminal(p.event()) {
                        self.stop = Some(Stop::Terminal);
                    }
                    return Poll::Ready(Some(p.encoded()));
                }
                // A gap (a missed message) or a resync request.
                _ => {
                    self.stop = Some(Stop::Behind);
                    return Poll::Ready(None);
                }
            }
        }
    }
}
