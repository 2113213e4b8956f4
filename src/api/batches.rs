//! `llmjobs.v1.BatchService`: validate a batch all or nothing, call the [`Jobs`] service, encode.
//!
//! Tenancy: a batch and its jobs belong to the tenant of the key that submitted it; other
//! tenants' batches are NOT_FOUND.

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{Instrument, instrument};

use super::{convert, validate};
use crate::{
    auth::{Principal, principal},
    batch::{BatchId, Progress, Snapshot},
    error::Error,
    events::Event,
    jobs::Jobs,
    proto::v1::{self, batch_service_server::BatchService},
    streaming::batch::{BatchEventStream, Encoder},
};

/// The BatchService implementation.
pub struct BatchApi {
    gateway: Jobs,
    rules: validate::Rules,
    max_jobs: usize,
    pace: crate::streaming::Pace,
    guard: super::Guard,
    shutdown: CancellationToken,
}

impl BatchApi {
    /// A service over `gateway`, validating each job with `rules` and accepting at most
    /// `max_jobs` per batch; quiet streams get a progress message every `pace.heartbeat`, and
    /// a client that reads nothing for `pace.stall_patience` loses its stream; `guard`
    /// audits, limits and stores prompts as configured; open streams end with UNAVAILABLE
    /// when `shutdown` is cancelled.
    pub fn new(
        gateway: Jobs,
        rules: validate::Rules,
        max_jobs: usize,
        pace: crate::streaming::Pace,
        guard: super::Guard,
        shutdown: CancellationToken,
    ) -> BatchApi {
        BatchApi {
            gateway,
            rules,
            max_jobs,
            pace,
            guard,
            shutdown,
        }
    }

    /// The batch now, when `who` may access it. Errors: NOT_FOUND (unknown or another
    /// tenant's), UNAVAILABLE.
    async fn visible(&self, who: &Principal, id: BatchId) -> Result<Snapshot, Error> {
        match self.gateway.get_batch(id).await {
            Ok(snap) if who.can_access(&snap.batch.tenant) => Ok(snap),
            Ok(_) => Err(Error::NotFound(format!("batch {id}"))),
            Err(e) => Err(e.into()),
        }
    }
}

/// Wire batch: `snap`'s batch with `progress`; the job ids only when `job_ids` is set.
pub fn batch_message(snap: &Snapshot, progress: &Progress, job_ids: bool) -> v1::Batch {
    let c = progress.counts;
    v1::Batch {
        id: snap.batch.id.to_string(),
        display_name: snap.batch.display_name.clone(),
        metadata: snap.batch.metadata.clone().into_iter().collect(),
        create_time: Some(convert::timestamp(snap.batch.created_at)),
        job_count: c.total(),
        queued_count: c.queued,
        running_count: c.running,
        completed_count: c.completed,
        failed_count: c.failed,
        cancelled_count: c.cancelled,
        input_tokens: progress.input_tokens,
        output_tokens: progress.output_tokens,
        cost_usd: progress.cost_usd,
        estimated_completion_time: progress.estimated_completion.map(convert::timestamp),
        end_time: progress.ended_at.map(convert::timestamp),
        job_ids: if job_ids {
            snap.members.iter().map(|m| m.id.to_string()).collect()
        } else {
            Vec::new()
        },
    }
}

/// A batch stream's messages as `BatchEvent`s, sized by their protobuf encoding.
struct Wire;

impl Encoder for Wire {
    type Message = v1::BatchEvent;

    fn progress(&self, snap: &Snapshot, progress: &Progress) -> v1::BatchEvent {
        let message = batch_message(snap, progress, false);
        v1::BatchEvent {
            kind: Some(v1::batch_event::Kind::Progress(message)),
        }
    }

    fn job_finished(&self, event: &Event) -> v1::BatchEvent {
        let event = convert::event::event(event, true);
        v1::BatchEvent {
            kind: Some(v1::batch_event::Kind::JobFinished(event)),
        }
    }

    fn encoded_len(&self, message: &v1::BatchEvent) -> usize {
        prost::Message::encoded_len(message)
    }
}

/// The wire batch of `snap` now, with its job ids.
fn reply(snap: &Snapshot) -> Response<v1::Batch> {
    let progress = Progress::of(snap.batch.created_at, &snap.members, chrono::Utc::now());
    Response::new(batch_message(snap, &progress, true))
}

/// Reads a `batch_id` field (see [`validate::id`]). Errors: INVALID_ARGUMENT naming the field.
fn batch_id(raw: &str) -> Result<BatchId, Status> {
    validate::id("batch_id", raw).map_err(|v| Error::InvalidArgument(vec![v]).into())
}

#[tonic::async_trait]
impl BatchService for BatchApi {
    /// The call's span continues the caller's trace (`traceparent`), and so do the attempts
    /// of every job of the batch.
    async fn submit_batch(
        &self,
        request: Request<v1::SubmitBatchRequest>,
    ) -> Result<Response<v1::Batch>, Status> {
        let span = tracing::info_span!(
            "SubmitBatch",
            otel.name = "llmjobs.v1.BatchService/SubmitBatch",
            otel.kind = "server",
            rpc.system = "grpc",
            batch_id = tracing::field::Empty,
            jobs = request.get_ref().requests.len(),
        );
        crate::trace::continue_from(&span, super::trace_headers(request.metadata()));
        async move {
            let who = principal(&request)?;
            let (mut batch, mut jobs) =
                validate::batch(request.into_inner(), &self.rules, self.max_jobs)
                    .map_err(Error::InvalidArgument)?;
            let span = tracing::Span::current();
            span.record("batch_id", batch.id.to_string());
            let trace_context = crate::trace::carry(&span);
            batch.tenant = who.tenant.clone();
            for job in &mut jobs {
                job.tenant = who.tenant.clone();
                job.trace_context = trace_context.clone();
                self.guard.store_prompt_as_configured(job);
            }
            let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
            self.guard.limiter.reserve_jobs(&who, &ids).await?;
            let snap = self.gateway.submit_batch(batch, jobs).await?;
            Ok(reply(&snap))
        }
        .instrument(span)
        .await
    }

    #[instrument(skip_all, fields(batch_id = %request.get_ref().batch_id))]
    async fn get_batch(
        &self,
        request: Request<v1::GetBatchRequest>,
    ) -> Result<Response<v1::Batch>, Status> {
        let who = principal(&request)?;
        let id = batch_id(&request.get_ref().batch_id)?;
        Ok(reply(&self.visible(&who, id).await?))
    }

    type StreamBatchStream = BatchEventStream<v1::BatchEvent>;

    #[instrument(skip_all, fields(batch_id = %request.get_ref().batch_id))]
    async fn stream_batch(
        &self,
        request: Request<v1::StreamBatchRequest>,
    ) -> Result<Response<Self::StreamBatchStream>, Status> {
        let who = principal(&request)?;
        let id = batch_id(&request.get_ref().batch_id)?;
        // Unknown batches fail the call itself, not the stream.
        self.visible(&who, id).await?;
        let slot = self.guard.limiter.open_stream(&who)?;
        let stream = crate::streaming::batch::follow(
            self.gateway.store.clone(),
            self.gateway.events.clone(),
            id,
            self.pace,
            self.shutdown.clone(),
            slot,
            Wire,
        );
        Ok(Response::new(stream))
    }

    #[instrument(skip_all, fields(batch_id = %request.get_ref().batch_id))]
    async fn cancel_batch(
        &self,
        request: Request<v1::CancelBatchRequest>,
    ) -> Result<Response<v1::Batch>, Status> {
        let who = principal(&request)?;
        let req = request.into_inner();
        let id = batch_id(&req.batch_id)?;
        validate::cancel::batch_reason(&req.reason).map_err(|v| Error::InvalidArgument(vec![v]))?;
        let result: Result<_, Status> = async {
            self.visible(&who, id).await?;
            Ok(self.gateway.cancel_batch(id, &req.reason).await?)
        }
        .await;
        let outcome = crate::audit::Outcome::of(&result);
        self.guard
            .auditor
            .record(&who, "CancelBatch", &id.to_string(), outcome, &req.reason)
            .await;
        Ok(reply(&result?))
    }
}
