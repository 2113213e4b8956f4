//! Text received from the upstream but not yet published, and how it is cut into token
//! delta events.
//!
//! REALTIME keeps one piece per upstream chunk, so each chunk becomes its own delta even when
//! several go out in one append (chunks that arrived while the previous append was in flight
//! share its successor's round trip). BUFFERED grows one piece until it is flushed.
//!
//! It also keeps when a flush last read the job's cancel flag: flushes read it at most every
//! [`CANCEL_CHECK_EVERY`], so a cancel whose signal was lost lands within that (plus one
//! flush) at one Redis command per interval instead of one per flush.

use std::{collections::VecDeque, time::Duration};

use tokio::time::Instant;

use crate::events::event::TokenDelta;

/// Largest text of one token delta event (bytes).
pub const MAX_DELTA_BYTES: usize = 64 * 1024;
/// Most text carried by one append (bytes), so one Redis call stays around 1 MiB.
pub const MAX_APPEND_BYTES: usize = 16 * MAX_DELTA_BYTES;
/// Most token deltas carried by one append.
pub const MAX_APPEND_DELTAS: usize = 256;
/// Least time between two flushes that read the job's cancel flag.
pub const CANCEL_CHECK_EVERY: Duration = Duration::from_millis(100);

/// One chunk's text (REALTIME) or the text coalesced since the last flush (BUFFERED).
#[derive(Clone, Debug, Default, PartialEq)]
struct Piece {
    text: String,
    reasoning: String,
    /// Output tokens generated up to the end of this piece.
    output_tokens: u64,
}

/// Text waiting to be published, in order, and when a flush last read the cancel flag.
#[derive(Clone, Debug, Default)]
pub(super) struct Unpublished {
    pieces: VecDeque<Piece>,
    bytes: usize,
    /// When a flush last read the job's cancel flag; `None` before the first, or when the
    /// next flush must read it.
    cancel_read_at: Option<Instant>,
}

impl Unpublished {
    /// Adds a chunk's text; `separate` keeps it as its own delta (REALTIME), otherwise it
    /// joins the last waiting piece (BUFFERED). `output_tokens` counts this chunk.
    pub(super) fn push(&mut self, text: &str, reasoning: &str, output_tokens: u64, separate: bool) {
        self.bytes += text.len() + reasoning.len();
        match self.pieces.back_mut() {
            Some(last) if !separate => {
                last.text.push_str(text);
                last.reasoning.push_str(reasoning);
                last.output_tokens = output_tokens;
            }
            _ => self.pieces.push_back(Piece {
                text: text.to_owned(),
                reasoning: reasoning.to_owned(),
                output_tokens,
            }),
        }
    }

    /// Whether a flush at `now` reads the job's cancel flag: one at most every
    /// [`CANCEL_CHECK_EVERY`] after the last read (the first flush does when nothing read it
    /// before, see [`Unpublished::cancel_read`]). A `true` answer counts as the read.
    pub(super) fn cancel_read_due(&mut self, now: Instant) -> bool {
        let due = self
            .cancel_read_at
            .is_none_or(|at| now.duration_since(at) >= CANCEL_CHECK_EVERY);
        if due {
            self.cancel_read_at = Some(now);
        }
        due
    }

    /// Records that the cancel flag was read at `at` by another append (the attempt's
    /// start): flushes read it next one interval after that, not at once.
    pub(super) fn cancel_read(&mut self, at: Instant) {
        self.cancel_read_at = Some(at);
    }

    /// Makes the next flush read the cancel flag (the attempt's last one: a cancel asked
    /// before the end wins).
    pub(super) fn read_cancel_next(&mut self) {
        self.cancel_read_at = None;
    }

    /// True when nothing waits.
    pub(super) fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Bytes of text waiting.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Pieces waiting (one per chunk in REALTIME).
    pub(super) fn pieces(&self) -> usize {
        self.pieces.len()
    }

    /// Removes the deltas of one append from the front: each piece in order, cut into deltas
    /// of at most [`MAX_DELTA_BYTES`] of text and of reasoning on character boundaries, until
    /// [`MAX_APPEND_DELTAS`] deltas or [`MAX_APPEND_BYTES`] bytes.
    pub(super) fn take_append(&mut self) -> Vec<TokenDelta> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while out.len() < MAX_APPEND_DELTAS && bytes < MAX_APPEND_BYTES {
            let Some(front) = self.pieces.front_mut() else {
                break;
            };
            let text = take_prefix(&mut front.text, MAX_DELTA_BYTES);
            let reasoning = take_prefix(&mut front.reasoning, MAX_DELTA_BYTES);
            bytes += text.len() + reasoning.len();
            out.push(TokenDelta {
                text,
                output_tokens: front.output_tokens,
                reasoning_text: reasoning,
            });
            if front.text.is_empty() && front.reasoning.is_empty() {
                self.pieces.pop_front();
            }
        }
        self.bytes -= bytes;
        out
    }

    /// Puts deltas taken by [`Unpublished::take_append`] back at the front, in order (their
    /// append failed), each as a piece of its own.
    pub(super) fn restore(&mut self, deltas: Vec<TokenDelta>) {
        for d in deltas.into_iter().rev() {
            self.bytes += d.text.len() + d.reasoning_text.len();
            self.pieces.push_front(Piece {
                text: d.text,
                reasoning: d.reasoning_text,
                output_tokens: d.output_tokens,
            });
        }
    }
}

/// Removes and returns the longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary (at least one character, so progress is always made).
fn take_prefix(s: &mut String, max: usize) -> String {
    if s.len() <= max {
        return std::mem::take(s);
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    if cut == 0 {
        cut = s.chars().next().map_or(s.len(), char::len_utf8);
    }
    let rest = s.split_off(cut);
    std::mem::replace(s, rest)
}

#[cfg(test)]
mod tests;
