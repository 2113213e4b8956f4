//! A finished job's event log as the store keeps it: every event with its sequence and
//! timestamp, exactly as live watchers saw it, in one compact value.
//!
//! Layout of [`Archive::data`]: one format byte ([`FORMAT_LZ4`]), then an LZ4 block (with its
//! uncompressed size prepended, little-endian `u32`) of the events one after another, each in
//! protobuf's length-delimited form (a varint length, then the `JobEvent` bytes without
//! `sequence` and `job_id`: the event's position and the row carry them, as in Redis), as
//! the log's [`Codec`] writes them. Event `i` (0-based) has sequence `first_sequence + i`.

use super::{
    Error,
    event::{Codec, Event},
};
use crate::job::JobId;

/// Format byte: LZ4 block of length-delimited events.
pub const FORMAT_LZ4: u8 = 1;
/// Largest uncompressed log [`Archive::events`] accepts (a guard against a corrupt size).
const MAX_DECODED: usize = 256 << 20;

/// A job's whole event log in stored form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archive {
    /// Sequence of the first event (1, or above a base after a log was restarted).
    pub first_sequence: u64,
    /// Number of events.
    pub count: u64,
    /// The encoded events (see the module docs).
    pub data: Vec<u8>,
}

impl Archive {
    /// The sequence of the last event (the terminal one in a finished log); `None` when empty.
    pub fn last_sequence(&self) -> Option<u64> {
        (self.count > 0).then(|| self.first_sequence + self.count - 1)
    }

    /// The events with their sequences and `job_id` set, in order, decoded by `codec`.
    ///
    /// Errors: `Corrupt` when the data does not decode or holds another number of events.
    pub fn events(&self, codec: &dyn Codec, job_id: JobId) -> Result<Vec<Event>, Error> {
        let corrupt = |what: String| Error::Corrupt(format!("job {job_id} stored log: {what}"));
        let (format, block) = self
            .data
            .split_first()
            .ok_or_else(|| corrupt("empty".into()))?;
        if *format != FORMAT_LZ4 {
            return Err(corrupt(format!("unknown format {format}")));
        }
        let size = block
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(|b| u32::from_le_bytes(b) as usize)
            .ok_or_else(|| corrupt("truncated".into()))?;
        if size > MAX_DECODED {
            return Err(corrupt(format!("{size} bytes decoded is too large")));
        }
        let raw = lz4_flex::block::decompress_size_prepended(block)
            .map_err(|e| corrupt(e.to_string()))?;
        let mut rest = raw.as_slice();
        let mut events = Vec::with_capacity(usize::try_from(self.count).unwrap_or(0).min(1 << 16));
        while !rest.is_empty() {
            let mut event = codec
                .decode_delimited(&mut rest)
                .map_err(|e| corrupt(e.to_string()))?;
            event.sequence = self.first_sequence + events.len() as u64;
            event.job_id = job_id;
            events.push(event);
        }
        if events.len() as u64 != self.count {
            return Err(corrupt(format!(
                "{} events where {} were stored",
                events.len(),
                self.count
            )));
        }
        Ok(events)
    }
}

/// Builds an [`Archive`] event by event (the worker keeps one while its attempt runs).
#[derive(Clone, Debug, Default)]
pub struct Builder {
    first_sequence: Option<u64>,
    count: u64,
    raw: Vec<u8>,
}

impl Builder {
    /// An empty log whose first event will have `first_sequence`.
    pub fn new(first_sequence: u64) -> Builder {
        Builder {
            first_sequence: Some(first_sequence),
            ..Builder::default()
        }
    }

    /// Sequence the next pushed event gets; `None` before the first sequence is known.
    pub fn next_sequence(&self) -> Option<u64> {
        self.first_sequence.map(|f| f + self.count)
    }

    /// Adds `event`, encoded by `codec`, as the next one (its `sequence` and `job_id` are not
    /// kept).
    pub fn push(&mut self, codec: &dyn Codec, event: &Event) {
        codec.encode_stored(event, true, &mut self.raw);
        self.count += 1;
    }

    /// The archive of what was pushed; `None` when the first sequence is unknown.
    pub fn finish(&self) -> Option<Archive> {
        let first_sequence = self.first_sequence?;
        let mut data = Vec::with_capacity(self.raw.len() / 2 + 8);
        data.push(FORMAT_LZ4);
        data.extend_from_slice(&lz4_flex::block::compress_prepend_size(&self.raw));
        Some(Archive {
            first_sequence,
            count: self.count,
            data,
        })
    }
}

/// The archive of `events`, whose sequences must run on by one from the first (as a log
/// read returns them), encoded by `codec`; `None` when there are none or they do not.
pub fn of_events(codec: &dyn Codec, events: &[Event]) -> Option<Archive> {
    let first = events.first()?.sequence;
    let mut builder = Builder::new(first);
    for e in events {
        if builder.next_sequence() != Some(e.sequence) {
            return None;
        }
        builder.push(codec, e);
    }
    builder.finish()
}
