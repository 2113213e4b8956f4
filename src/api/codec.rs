//! The protobuf codec of every llm-jobs service: tonic-prost's, except that a request whose
//! bytes do not decode is `INVALID_ARGUMENT` (the caller sent something malformed), not the
//! `INTERNAL` tonic-prost reports for every decode error. Responses that do not decode (on a
//! client) stay `INTERNAL`: that is the server's fault. Responses are encoded into a smaller
//! buffer than tonic's default (see `encode_buffer`).
//!
//! `build.rs` names this type as the codec of the generated servers and clients.

use prost::Message;
use tonic::{
    Code, Status,
    codec::{BufferSettings, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// The encoder's buffer: tonic allocates `buffer_size` up front for every response and keeps
/// it while a stream lives. Its default, 8 KiB, was about a third of what a job watcher cost
/// the gateway (BENCHMARKS.md, fan-out); a batch stream's message is a few hundred bytes, so
/// 1 KiB holds several, and larger responses (a page of jobs) grow the buffer as needed. (Job
/// event streams use no encoder at all: see `api::frames`.) The yield threshold (how much is
/// encoded before it is handed to HTTP/2) stays tonic's.
fn encode_buffer() -> BufferSettings {
    BufferSettings::new(1024, 32 * 1024)
}

/// tonic-prost's codec for `T` out and `U` in, with request decode errors as
/// `INVALID_ARGUMENT`.
#[derive(Debug, Clone, Default)]
pub struct Codec<T, U>(ProstCodec<T, U>);

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(encode_buffer())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(self.0.decoder())
    }
}

/// tonic-prost's decoder; see [`Codec`].
#[derive(Debug)]
pub struct RequestDecoder<U>(ProstDecoder<U>);

impl<U> RequestDecoder<U> {
    /// A decoder of requests of type `U`, with tonic's buffer settings (what `api::frames`
    /// decodes the event streams' requests with).
    pub fn new() -> RequestDecoder<U> {
        RequestDecoder(ProstDecoder::new(BufferSettings::default()))
    }
}

impl<U> Default for RequestDecoder<U> {
    fn default() -> Self {
        Self::new()
    }
}

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            let name = std::any::type_name::<U>();
            // Every request message of the API is named `…Request` (Google AIP-131 and on).
            if status.code() == Code::Internal && name.ends_with("Request") {
                let short = name.rsplit("::").next().unwrap_or(name);
                Status::invalid_argument(format!(
                    "the request is not a valid llmjobs.v1.{short} message: {}",
                    status.message()
                ))
            } else {
                status
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
