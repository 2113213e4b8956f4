//! [`ProtoCodec`]: job events and progress snapshots in their protobuf encoding
//! (`llmjobs.v1.JobEvent`, `llmjobs.v1.JobProgress`), the one form the event logs store and
//! publish and watchers are sent.
//!
//! Token deltas, many per job, are written straight from the domain event (no wire event is
//! built, so no text is copied); the other kinds go through their wire type. Both give the
//! bytes prost gives for the wire event (tested below).

use bytes::{BufMut, Bytes};
use prost::{
    Message,
    encoding::{self, WireType},
};

use super::convert::{
    event::{event, from_event},
    progress::{from_job_progress, from_progress_event, job_progress, progress_event},
    timestamp,
};
use crate::{
    events::{Codec, DecodeError, Event, EventKind, event::TokenDelta},
    progress::{JobProgress, ProgressEvent},
    proto::v1,
};

/// Field numbers of `llmjobs.v1.JobEvent` and `llmjobs.v1.TokenDelta`.
mod field {
    pub const SEQUENCE: u32 = 1;
    pub const TIME: u32 = 2;
    pub const JOB_ID: u32 = 3;
    pub const TOKEN_DELTA: u32 = 12;
    pub const TEXT: u32 = 1;
    pub const OUTPUT_TOKENS: u32 = 2;
    pub const REASONING_TEXT: u32 = 3;
}

/// Bytes before a message on the gRPC wire: a compressed flag and a big-endian u32 length.
pub const GRPC_PREFIX: usize = 5;

/// Length of a hyphenated UUID.
const JOB_ID_LEN: usize = 36;

/// The protobuf codec of job events (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProtoCodec;

impl Codec for ProtoCodec {
    /// The event as one gRPC message on the wire: the 5-byte prefix of gRPC's
    /// length-prefixed message (compressed flag 0, then the length as a big-endian u32; the
    /// gRPC over HTTP/2 protocol spec, "Length-Prefixed-Message"), then `llmjobs.v1.JobEvent`.
    /// `api::frames` sends it as it is, one DATA frame shared by every watcher.
    fn encode(&self, e: &Event) -> Bytes {
        let mut out = vec![0u8; GRPC_PREFIX];
        write(e, true, false, &mut out);
        let len = u32::try_from(out.len() - GRPC_PREFIX).unwrap_or(u32::MAX);
        out[1..GRPC_PREFIX].copy_from_slice(&len.to_be_bytes());
        Bytes::from(out)
    }

    fn encode_stored(&self, e: &Event, delimited: bool, out: &mut Vec<u8>) {
        write(e, false, delimited, out);
    }

    fn decode(&self, bytes: &[u8]) -> Result<Event, DecodeError> {
        let wire = v1::JobEvent::decode(bytes).map_err(|e| DecodeError(e.to_string()))?;
        from_event(wire).map_err(DecodeError)
    }

    fn decode_delimited(&self, buf: &mut &[u8]) -> Result<Event, DecodeError> {
        let wire =
            v1::JobEvent::decode_length_delimited(buf).map_err(|e| DecodeError(e.to_string()))?;
        from_event(wire).map_err(DecodeError)
    }

    fn encode_progress(&self, progress: &JobProgress) -> Vec<u8> {
        job_progress(progress).encode_to_vec()
    }

    fn decode_progress(&self, bytes: &[u8]) -> Result<JobProgress, DecodeError> {
        v1::JobProgress::decode(bytes)
            .map(from_job_progress)
            .map_err(|e| DecodeError(e.to_string()))
    }

    fn encode_progress_event(&self, event: &ProgressEvent) -> Vec<u8> {
        progress_event(event).encode_to_vec()
    }

    fn decode_progress_event(&self, bytes: &[u8]) -> Result<ProgressEvent, DecodeError> {
        let wire = v1::ProgressEvent::decode(bytes).map_err(|e| DecodeError(e.to_string()))?;
        from_progress_event(wire).map_err(DecodeError)
    }
}

/// Appends `e`'s encoding to `out`: with sequence and job id when `whole`, preceded by its
/// length when `delimited`.
fn write(e: &Event, whole: bool, delimited: bool, out: &mut Vec<u8>) {
    let EventKind::TokenDelta(delta) = &e.kind else {
        let wire = event(e, whole);
        out.reserve(wire.encoded_len() + 10);
        // Writing into a Vec cannot run out of room.
        let _ = if delimited {
            wire.encode_length_delimited(out)
        } else {
            wire.encode(out)
        };
        return;
    };
    let time = timestamp(e.time);
    let body = delta_len(delta);
    let mut len = encoding::message::encoded_len(field::TIME, &time)
        + encoding::key_len(field::TOKEN_DELTA)
        + encoding::encoded_len_varint(body as u64)
        + body;
    if whole {
        if e.sequence != 0 {
            len += encoding::uint64::encoded_len(field::SEQUENCE, &e.sequence);
        }
        len += encoding::key_len(field::JOB_ID) + 1 + JOB_ID_LEN;
    }
    out.reserve(len + 10);
    if delimited {
        encoding::encode_varint(len as u64, out);
    }
    if whole && e.sequence != 0 {
        encoding::uint64::encode(field::SEQUENCE, &e.sequence, out);
    }
    encoding::message::encode(field::TIME, &time, out);
    if whole {
        let mut id = [0u8; JOB_ID_LEN];
        let id = e.job_id.hyphenated().encode_lower(&mut id);
        encoding::encode_key(field::JOB_ID, WireType::LengthDelimited, out);
        encoding::encode_varint(JOB_ID_LEN as u64, out);
        out.put_slice(id.as_bytes());
    }
    encoding::encode_key(field::TOKEN_DELTA, WireType::LengthDelimited, out);
    encoding::encode_varint(body as u64, out);
    if !delta.text.is_empty() {
        encoding::string::encode(field::TEXT, &delta.text, out);
    }
    if delta.output_tokens != 0 {
        encoding::uint64::encode(field::OUTPUT_TOKENS, &delta.output_tokens, out);
    }
    if !delta.reasoning_text.is_empty() {
        encoding::string::encode(field::REASONING_TEXT, &delta.reasoning_text, out);
    }
}

/// Encoded length of a `TokenDelta`'s fields.
fn delta_len(d: &TokenDelta) -> usize {
    let mut len = 0;
    if !d.text.is_empty() {
        len += encoding::string::encoded_len(field::TEXT, &d.text);
    }
    if d.output_tokens != 0 {
        len += encoding::uint64::encoded_len(field::OUTPUT_TOKENS, &d.output_tokens);
    }
    if !d.reasoning_text.is_empty() {
        len += encoding::string::encoded_len(field::REASONING_TEXT, &d.reasoning_text);
    }
    len
}

#[cfg(test)]
mod tests;
