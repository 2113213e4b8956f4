//! What unit tests of the event logs need without the protobuf codec of `crate::api`.

use bytes::Bytes;

use super::{Codec, DecodeError, Event, EventKind, event::TokenDelta};
use crate::progress::{JobProgress, ProgressEvent};

/// Encodes the text of a token delta only (other events as nothing), enough to tell one
/// encoding from another; decodes length-delimited texts back into token deltas.
pub(crate) struct TextCodec;

impl Codec for TextCodec {
    fn encode(&self, event: &Event) -> Bytes {
        match &event.kind {
            EventKind::TokenDelta(d) => Bytes::copy_from_slice(d.text.as_bytes()),
            _ => Bytes::new(),
        }
    }

    fn encode_stored(&self, event: &Event, delimited: bool, out: &mut Vec<u8>) {
        let text = self.encode(event);
        if delimited {
            let mut len = text.len();
            while len >= 0x80 {
                out.push((len & 0x7f) as u8 | 0x80);
                len >>= 7;
            }
            out.push(len as u8);
        }
        out.extend_from_slice(&text);
    }

    fn decode(&self, _: &[u8]) -> Result<Event, DecodeError> {
        Err(DecodeError("the test codec decodes nothing".into()))
    }

    fn decode_delimited(&self, buf: &mut &[u8]) -> Result<Event, DecodeError> {
        let (mut len, mut shift, mut at) = (0usize, 0, 0);
        loop {
            let byte = *buf.get(at).ok_or(DecodeError("truncated length".into()))?;
            len |= usize::from(byte & 0x7f) << shift;
            at += 1;
            shift += 7;
            if byte < 0x80 {
                break;
            }
        }
        let text = buf
            .get(at..at + len)
            .ok_or(DecodeError("truncated text".into()))?;
        let text = String::from_utf8(text.to_vec()).map_err(|e| DecodeError(e.to_string()))?;
        *buf = &buf[at + len..];
        Ok(Event::new(EventKind::TokenDelta(TokenDelta {
            text,
            ..TokenDelta::default()
        })))
    }

    fn encode_progress(&self, _: &JobProgress) -> Vec<u8> {
        Vec::new()
    }

    fn decode_progress(&self, _: &[u8]) -> Result<JobProgress, DecodeError> {
        Err(DecodeError("the test codec decodes nothing".into()))
    }

    fn encode_progress_event(&self, _: &ProgressEvent) -> Vec<u8> {
        Vec::new()
    }

    fn decode_progress_event(&self, _: &[u8]) -> Result<ProgressEvent, DecodeError> {
        Err(DecodeError("the test codec decodes nothing".into()))
    }
}
