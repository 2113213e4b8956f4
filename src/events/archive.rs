//! A finished job's event log as the store keeps it: every event with its sequence and
//! timestamp, exactly as live watchers saw it, in one compact value.
//!
//! Layout of [`Archive::data`]: one format byte ([`FORMAT_LZ4`]), then an LZ4 block (with its
//! uncompressed size prepended, little-endian `u32`) of the events one after another, each in
//! protobuf's length-delimited form (a varint length, then the `JobEvent` bytes without
//! `sequence` and `job_id`: the event's position and the row carry them, as in Redis).
//! Event `i` (0-based) has sequence `first_sequence + i`.

use prost::Message;

use super::Error;
use crate::{job::JobId, proto::v1::JobEvent};

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

    /// The events with their sequences and `job_id` set, in order.
    ///
    /// Errors: `Corrupt` when the data does not decode or holds another number of events.
    pub fn events(&self, job_id: JobId) -> Result<Vec<JobEvent>, Error> {
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
        let job = job_id.to_string();
        while !rest.is_empty() {
            let mut event =
                JobEvent::decode_length_delimited(&mut rest).map_err(|e| corrupt(e.to_string()))?;
            event.sequence = self.first_sequence + events.len() as u64;
            event.job_id.clone_from(&job);
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

    /// Adds `event` as the next one (its `sequence` and `job_id` are not kept).
    pub fn push(&mut self, event: &JobEvent) {
        let stored = JobEvent {
            sequence: 0,
            job_id: String::new(),
            time: event.time,
            kind: event.kind.clone(),
        };
        // Writing into a Vec cannot run out of room.
        let _ = stored.encode_length_delimited(&mut self.raw);
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
/// read returns them); `None` when there are none or they do not.
pub fn of_events(events: &[JobEvent]) -> Option<Archive> {
    let first = events.first()?.sequence;
    let mut builder = Builder::new(first);
    for e in events {
        if builder.next_sequence() != Some(e.sequence) {
            return None;
        }
        builder.push(e);
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{JobCompleted, TokenDelta, job_event::Kind};

    fn delta(seq: u64, text: &str, n: u64) -> JobEvent {
        JobEvent {
            sequence: seq,
            time: Some(prost_types::Timestamp {
                seconds: 1_790_000_000,
                nanos: i32::try_from(n * 1_000_017).unwrap_or(0),
            }),
            kind: Some(Kind::TokenDelta(TokenDelta {
                text: text.into(),
                output_tokens: n,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn events_come_back_with_their_sequences_times_and_text() -> Result<(), Error> {
        let id = JobId::now_v7();
        let mut events: Vec<JobEvent> = (0..200)
            .map(|i| delta(5 + i, &format!(" word{}", i % 7), i + 1))
            .collect();
        events.push(JobEvent {
            sequence: 205,
            kind: Some(Kind::Completed(JobCompleted::default())),
            ..Default::default()
        });
        let archive = of_events(&events).expect("consecutive sequences");
        assert_eq!(archive.first_sequence, 5);
        assert_eq!(archive.last_sequence(), Some(205));
        let back = archive.events(id)?;
        let expected: Vec<JobEvent> = events
            .into_iter()
            .map(|e| JobEvent {
                job_id: id.to_string(),
                ..e
            })
            .collect();
        assert_eq!(back, expected);
        // Compact: well under the encoded events' own size.
        let plain: usize = expected.iter().map(|e| e.encoded_len() + 1).sum();
        assert!(
            archive.data.len() * 2 < plain,
            "{} of {plain}",
            archive.data.len()
        );
        Ok(())
    }

    #[test]
    fn a_gap_or_damage_is_refused() {
        let id = JobId::now_v7();
        assert!(of_events(&[delta(1, "a", 1), delta(3, "b", 2)]).is_none());
        assert!(of_events(&[]).is_none());
        let mut archive = of_events(&[delta(1, "a", 1), delta(2, "b", 2)]).expect("an archive");
        archive.count = 3;
        assert!(matches!(archive.events(id), Err(Error::Corrupt(_))));
        archive.count = 2;
        archive.data[0] = 9;
        assert!(matches!(archive.events(id), Err(Error::Corrupt(_))));
        archive.data = vec![FORMAT_LZ4, 0xff, 0xff, 0xff, 0x7f];
        assert!(matches!(archive.events(id), Err(Error::Corrupt(_))));
    }
}
