//! `llmjobs.v1.JobService` on the wire, with its two event streams (`StreamJob`,
//! `SubmitAndStream`) sent as the watcher holds them: already encoded, a live event once per
//! gateway however many watchers follow its job. The generated service would take each event
//! decoded and encode it again for every watcher; every other method goes to it unchanged.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use tonic::{
    Request, Response, Status,
    body::Body,
    codegen::{BoxFuture, StdError},
    server::{Grpc, NamedService, ServerStreamingService},
};

use super::{
    codec::FramesCodec,
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

    /// One of the two event streams, served with [`FramesCodec`].
    fn stream<B, M, S>(
        &self,
        method: S,
        req: http::Request<B>,
    ) -> BoxFuture<http::Response<Body>, Infallible>
    where
        B: tonic::codegen::Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
        M: prost::Message + Default + Send + 'static,
        S: ServerStreamingService<M, Response = Bytes> + Send + 'static,
        S::ResponseStream: Send + 'static,
        S::Future: Send + 'static,
    {
        let limit = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc = Grpc::new(FramesCodec::<M>::default())
                .apply_max_message_size_config(Some(limit), None);
            Ok(grpc.server_streaming(method, req).await)
        })
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
