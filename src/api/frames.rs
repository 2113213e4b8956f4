//! `llmjobs.v1.JobService` on the wire, with its two event streams (`StreamJob`,
//! `SubmitAndStream`) sent as the watcher holds them: each event already a gRPC message on
//! the wire, a live event encoded once per gateway however many watchers follow its job, and
//! sent as its own DATA frame without a copy. The generated service would take each event
//! decoded and encode it again for every watcher, and tonic's encoder would copy it into a
//! buffer per stream; every other method goes to the generated service unchanged.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use tonic::{
    Request, Response, Status,
    body::Body,
    codec::Streaming,
    codegen::{BoxFuture, StdError},
    metadata::GRPC_CONTENT_TYPE,
    server::{NamedService, ServerStreamingService},
};

use super::{
    codec::RequestDecoder,
    jobs::{EventStream, JobApi},
};
use crate::proto::v1::{self, job_service_server::JobServiceServer};

const STREAM_JOB: &str = "/llmjobs.v1.JobService/StreamJob";
const SUBMIT_AND_STREAM: &str = "/llmjobs.v1.JobService/SubmitAndStream";

/// The JobService router: the two event streams here, the rest through the generated service.
#[derive(Clone)]
pub struct JobRoutes {
    api: Arc<JobApi>,
    generated: JobServiceServer<JobApi>,
    max_decoding_message_size: usize,
}

impl JobRoutes {
    /// Serves `api`; requests larger than `max_decoding_message_size` bytes are refused
    /// (RESOURCE_EXHAUSTED, as tonic does) on every method.
    pub fn new(api: JobApi, max_decoding_message_size: usize) -> JobRoutes {
        let api = Arc::new(api);
        let generated = JobServiceServer::from_arc(api.clone())
            .max_decoding_message_size(max_decoding_message_size);
        JobRoutes {
            api,
            generated,
            max_decoding_message_size,
        }
    }

    /// One of the two event streams: the request decoded as tonic decodes it (with
    /// [`RequestDecoder`]), the events sent as [`Framed`] DATA frames.
    fn stream<B, M, S>(
        &self,
        mut method: S,
        req: http::Request<B>,
    ) -> BoxFuture<http::Response<Body>, Infallible>
    where
        B: tonic::codegen::Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
        M: prost::Message + Default + Send + 'static,
        S: ServerStreamingService<M, Response = Bytes, ResponseStream = EventStream>
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let limit = self.max_decoding_message_size;
        Box::pin(async move {
            let request = match unary_request::<B, M>(req, limit).await {
                Ok(request) => request,
                Err(status) => return Ok(status.into_http()),
            };
            Ok(match method.call(request).await {
                Ok(response) => framed_response(response),
                Err(status) => status.into_http(),
            })
        })
    }
}

/// The one request message of a server-streaming call, decoded as tonic's `Grpc` does it
/// (uncompressed, at most `limit` bytes, decode errors as [`RequestDecoder`] reports them), with
/// the request's headers and any trailers as its metadata.
async fn unary_request<B, M>(req: http::Request<B>, limit: usize) -> Result<Request<M>, Status>
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
    M: prost::Message + Default + Send + 'static,
{
    let (mut parts, body) = req.into_parts();
    // As tonic answers a compressed request to a service that accepts none: UNIMPLEMENTED,
    // saying which encodings it accepts, so that the client can send it again uncompressed.
    if let Some(encoding) = parts.headers.get("grpc-encoding")
        && encoding != "identity"
    {
        let mut status = Status::unimplemented(format!(
            "Content is compressed with `{}` which isn't supported",
            encoding.to_str().unwrap_or("?")
        ));
        status.metadata_mut().insert(
            "grpc-accept-encoding",
            tonic::metadata::MetadataValue::from_static("identity"),
        );
        return Err(status);
    }
    let mut messages = std::pin::pin!(Streaming::new_request(
        RequestDecoder::<M>::new(),
        body,
        None,
        Some(limit),
    ));
    let message = messages
        .try_next()
        .await?
        .ok_or_else(|| Status::internal("Missing request message."))?;
    if let Some(trailers) = messages.trailers().await? {
        parts.headers.extend(trailers.into_headers());
    }
    Ok(Request::from_http(http::Request::from_parts(
        parts, message,
    )))
}

/// The response of an event stream: its metadata as headers, then each event as the one DATA
/// frame it already is (see [`Framed`]).
fn framed_response(response: Response<EventStream>) -> http::Response<Body> {
    let (metadata, events, extensions) = response.into_parts();
    let mut res = http::Response::new(Body::new(Framed {
        events,
        ended: false,
        end_seen: None,
    }));
    *res.version_mut() = http::Version::HTTP_2;
    *res.headers_mut() = metadata.into_headers();
    res.headers_mut()
        .insert(http::header::CONTENT_TYPE, GRPC_CONTENT_TYPE);
    *res.extensions_mut() = extensions;
    res
}

/// A watcher's events as HTTP/2 DATA frames, then the trailers with the stream's status.
/// Each event's bytes are already a gRPC message on the wire (`api::event_codec`), shared
/// by every watcher of a live event, so each goes out as it is: no copy, no buffer per
/// stream (tonic's encoder copied every event into one). When several are ready at once (a
/// catch-up), they go out together, copied once into one frame (gathering stops once
/// [`BATCH_BYTES`] are reached).
struct Framed {
    events: EventStream,
    /// The trailers were sent.
    ended: bool,
    /// The stream's end, seen while a frame of events was gathered: `Some(None)` for the
    /// quiet end, `Some(Some(status))` for one with a status. The events' stream yields it
    /// once, so it is kept for the next poll.
    end_seen: Option<Option<Status>>,
}

/// Most bytes of events sent in one DATA frame when several are ready at once.
const BATCH_BYTES: usize = 16 * 1024;

impl Framed {
    /// The trailers that end the stream: `status`, or OK.
    fn end(&mut self, status: Option<Status>) -> Result<http::HeaderMap, Status> {
        self.ended = true;
        let mut trailers = http::HeaderMap::new();
        status
            .unwrap_or_else(|| Status::ok(""))
            .add_header(&mut trailers)?;
        Ok(trailers)
    }
}

/// An item of the events' stream, or its end: `Err(None)` for the quiet one,
/// `Err(Some(status))` for one with a status.
fn next(item: Option<Result<Bytes, Status>>) -> Result<Bytes, Option<Status>> {
    match item {
        Some(Ok(bytes)) => Ok(bytes),
        Some(Err(status)) => Err(Some(status)),
        None => Err(None),
    }
}

impl http_body::Body for Framed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let first = match self.end_seen.take() {
            Some(end) => Err(end),
            None => next(std::task::ready!(self.events.poll_next_unpin(cx))),
        };
        let first = match first {
            Ok(first) => first,
            Err(end) => return Poll::Ready(Some(self.end(end).map(http_body::Frame::trailers))),
        };
        // More ready now (a catch-up): one frame for them all; else the event as it is.
        // Gathered first and copied once into a frame of their exact size: a frame buffer of
        // BATCH_BYTES for every catch-up was, under load, the largest allocation per
        // delivery (glibc serves 16 KiB outside its per-thread caches).
        let mut total = first.len();
        let mut more: Vec<Bytes> = Vec::new();
        while total < BATCH_BYTES {
            let Poll::Ready(item) = self.events.poll_next_unpin(cx) else {
                break;
            };
            match next(item) {
                Ok(bytes) => {
                    total += bytes.len();
                    more.push(bytes);
                }
                // The end comes once: the trailers go out at the next poll, after this frame.
                Err(end) => {
                    self.end_seen = Some(end);
                    break;
                }
            }
        }
        if more.is_empty() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(first))));
        }
        let mut batch = BytesMut::with_capacity(total);
        batch.extend_from_slice(&first);
        for bytes in &more {
            batch.extend_from_slice(bytes);
        }
        Poll::Ready(Some(Ok(http_body::Frame::data(batch.freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

impl NamedService for JobRoutes {
    const NAME: &'static str = <JobServiceServer<JobApi> as NamedService>::NAME;
}

impl<B> tower::Service<http::Request<B>> for JobRoutes
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match req.uri().path() {
            STREAM_JOB => self.stream(StreamJob(self.api.clone()), req),
            SUBMIT_AND_STREAM => self.stream(SubmitAndStream(self.api.clone()), req),
            _ => self.generated.call(req),
        }
    }
}

/// `StreamJob`, encoded events out.
struct StreamJob(Arc<JobApi>);

impl ServerStreamingService<v1::StreamJobRequest> for StreamJob {
    type Response = Bytes;
    type ResponseStream = EventStream;
    type Future = BoxFuture<Response<EventStream>, Status>;

    fn call(&mut self, request: Request<v1::StreamJobRequest>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move { api.stream_job_frames(request).await })
    }
}

/// `SubmitAndStream`, encoded events out.
struct SubmitAndStream(Arc<JobApi>);

impl ServerStreamingService<v1::SubmitJobRequest> for SubmitAndStream {
    type Response = Bytes;
    type ResponseStream = EventStream;
    type Future = BoxFuture<Response<EventStream>, Status>;

    fn call(&mut self, request: Request<v1::SubmitJobRequest>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move { api.submit_and_stream_frames(request).await })
    }
}

#[cfg(test)]
mod tests;
