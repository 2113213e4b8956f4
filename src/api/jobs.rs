//! `llmjobs.v1.JobService`: decode, call the [`Jobs`] service, encode.
//!
//! Tenancy: every job belongs to the tenant of the key that submitted it; a caller that may not
//! access a job's tenant gets NOT_FOUND, exactly as for a job that does not exist.

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{Instrument, field::Empty, info_span, instrument};

use super::{convert, validate};
use crate::{
    auth::{Principal, principal},
    error::Error,
    job::JobId,
    jobs::Jobs,
    proto::v1::{self, job_service_server::JobService},
    ratelimit::streams::StreamSlot,
    streaming::{self, Ended},
};

/// The JobService implementation.
pub struct JobApi {
    pub(super) gateway: Jobs,
    rules: validate::Rules,
    pace: streaming::Pace,
    guard: super::Guard,
    shutdown: CancellationToken,
}

impl JobApi {
    /// A service over `gateway`, validating with `rules`; streams keep `pace` (heartbeats,
    /// patience with clients that do not read); `guard` audits, limits and stores prompts as configured; open
    /// streams end with UNAVAILABLE when `shutdown` is cancelled.
    pub fn new(
        gateway: Jobs,
        rules: validate::Rules,
        pace: streaming::Pace,
        guard: super::Guard,
        shutdown: CancellationToken,
    ) -> JobApi {
        JobApi {
            gateway,
            rules,
            pace,
            guard,
            shutdown,
        }
    }

    pub(super) async fn submit(
        &self,
        who: &Principal,
        req: v1::SubmitJobRequest,
        followed: bool,
    ) -> Result<crate::job::Job, Status> {
        Ok(self
            .gateway
            .submit(self.prepare(who, req).await?, followed)
            .await?)
    }

    /// The request as a job of `who`'s, validated and counted against its limits.
    pub(super) async fn prepare(
        &self,
        who: &Principal,
        req: v1::SubmitJobRequest,
    ) -> Result<crate::job::NewJob, Status> {
        let mut job = validate::submit(req, &self.rules).map_err(Error::InvalidArgument)?;
        job.tenant = who.tenant.clone();
        // The attempts continue the trace of this call's span (see `crate::trace`).
        job.trace_context = crate::trace::carry(&tracing::Span::current());
        self.guard.store_prompt_as_configured(&mut job);
        self.guard.limiter.reserve_jobs(who, &[job.id]).await?;
        Ok(job)
    }

    /// The job, when `who` may access it. Errors: NOT_FOUND (unknown or another tenant's),
    /// UNAVAILABLE.
    async fn visible(&self, who: &Principal, id: JobId) -> Result<crate::job::Job, Error> {
        match self.gateway.store.get_job(id).await? {
            Some(job) if who.can_access(&job.tenant) => Ok(job),
            _ => Err(Error::NotFound(format!("job {id}"))),
        }
    }

    /// From the job's Redis log, while the store cannot say: `None` when there is no log (or
    /// it cannot be read); `Some(None)` when its `queued` event names no tenant (a log
    /// written by an older version); else the tenant it names.
    async fn tenant_from_log(&self, id: JobId) -> Option<Option<String>> {
        // The `queued` event opens each run of the log.
        let log = self.gateway.events.read_page(id, 0, 8).await.ok()??;
        Some(log.events.iter().find_map(|e| match &e.kind {
            crate::events::EventKind::Queued(q) if !q.tenant.is_empty() => Some(q.tenant.clone()),
            _ => None,
        }))
    }

    /// `SubmitAndStream`: submits the job and follows it from its first event. The events
    /// come encoded (see [`EventStream`]); `api::frames` sends them as they are. The call's
    /// span continues the caller's trace (`traceparent`), and so do the job's attempts.
    pub async fn submit_and_stream_frames(
        &self,
        request: Request<v1::SubmitJobRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let span = info_span!(
            "SubmitAndStream",
            otel.name = "llmjobs.v1.JobService/SubmitAndStream",
            otel.kind = "server",
            rpc.system = "grpc",
            job_id = Empty,
        );
        crate::trace::continue_from(&span, super::trace_headers(request.metadata()));
        async move {
            let who = principal(&request)?;
            // Before the submit: a refused stream must not leave a job behind.
            let slot = self.guard.limiter.open_stream(&who)?;
            let req = request.into_inner();
            let (job, disconnect) = self.submit_followed(&who, req).await?;
            tracing::Span::current().record("job_id", job.id.to_string());
            let (stream, ended) = self.follow(job.id, 0, slot);
            if let Some(disconnect) = disconnect {
                let gateway = self.gateway.clone();
                tokio::spawn(async move {
                    if let Ok(Ended::ClientGone) = ended.await
                        && let Err(e) = gateway.cancel(job.id, "the client disconnected").await
                    {
                        tracing::warn!(job_id = %job.id, error = %e, "cancel on disconnect failed");
                    }
                });
                disconnect.handed_over();
            }
            Ok(Response::new(stream))
        }
        .instrument(span)
        .await
    }

    /// `StreamJob`: follows the job after `after_sequence`. The events come encoded (see
    /// [`EventStream`]); `api::frames` sends them as they are.
    #[instrument(skip_all, fields(job_id = %request.get_ref().job_id, after = request.get_ref().after_sequence))]
    pub async fn stream_job_frames(
        &self,
        request: Request<v1::StreamJobRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let who = principal(&request)?;
        let req = request.into_inner();
        let id = job_id(&req.job_id)?;
        if req.after_sequence > MAX_SEQUENCE {
            return Err(Error::invalid(
                "after_sequence",
                format!("must be at most {MAX_SEQUENCE}"),
            )
            .into());
        }
        // Unknown jobs fail the call itself, not the stream. While the store is unreachable,
        // a job whose event log Redis still has can be followed all the same: its tenant is
        // the one its log's `queued` event names (operators may follow any).
        match self.visible(&who, id).await {
            Ok(_) => {}
            Err(Error::Store(e)) if e.is_unavailable() => {
                // Anything else answers as an unknown job does now (UNAVAILABLE), so that the
                // answer does not tell another tenant's job from none.
                let allowed = match self.tenant_from_log(id).await {
                    Some(Some(tenant)) => who.can_access(&tenant),
                    Some(None) => who.is_operator(),
                    None => false,
                };
                if !allowed {
                    return Err(Error::Store(e).into());
                }
            }
            Err(e) => return Err(e.into()),
        }
        let slot = self.guard.limiter.open_stream(&who)?;
        Ok(Response::new(self.follow(id, req.after_sequence, slot).0))
    }

    /// Follows `job_id` after `after`, holding `slot` until the watcher ends.
    fn follow(
        &self,
        job_id: JobId,
        after: u64,
        slot: StreamSlot,
    ) -> (streaming::EventStream, JoinHandle<Ended>) {
        streaming::follow(
            self.gateway.store.clone(),
            self.gateway.events.clone(),
            job_id,
            after,
            self.pace,
            self.shutdown.clone(),
            slot,
            &self.gateway.metrics,
        )
    }
}

/// Reads a `job_id` field (see [`validate::id`]). Errors: INVALID_ARGUMENT naming the field.
fn job_id(raw: &str) -> Result<JobId, Status> {
    validate::id("job_id", raw).map_err(|v| Error::InvalidArgument(vec![v]).into())
}

/// Largest `after_sequence`: sequences are exact integers in Redis's Lua (2^53 - 1).
const MAX_SEQUENCE: u64 = (1 << 53) - 1;

/// A job's event stream, encoded (its watcher holds the key's open-stream slot).
pub type EventStream = streaming::EventStream;

/// A job's event stream, decoded: what the generated `JobService` trait asks for.
pub type Decoded = futures::stream::Map<
    EventStream,
    fn(Result<bytes::Bytes, Status>) -> Result<v1::JobEvent, Status>,
>;

/// An [`EventStream`], decoded.
fn decode(stream: EventStream) -> Decoded {
    use futures::StreamExt;
    stream.map(decoded as fn(_) -> _)
}

/// One item of an [`EventStream`], decoded.
fn decoded(item: Result<bytes::Bytes, Status>) -> Result<v1::JobEvent, Status> {
    use prost::Message;
    item.and_then(|bytes| {
        v1::JobEvent::decode(bytes)
            .map_err(|e| Status::internal(format!("an event did not decode: {e}")))
    })
}

#[tonic::async_trait]
impl JobService for JobApi {
    /// The call's span continues the caller's trace (`traceparent`), and so do the job's
    /// attempts.
    async fn submit_job(
        &self,
        request: Request<v1::SubmitJobRequest>,
    ) -> Result<Response<v1::SubmitJobResponse>, Status> {
        let span = info_span!(
            "SubmitJob",
            otel.name = "llmjobs.v1.JobService/SubmitJob",
            otel.kind = "server",
            rpc.system = "grpc",
            job_id = Empty,
        );
        crate::trace::continue_from(&span, super::trace_headers(request.metadata()));
        async move {
            let who = principal(&request)?;
            let job = self.submit(&who, request.into_inner(), false).await?;
            tracing::Span::current().record("job_id", job.id.to_string());
            // A repeated idempotency key returns the earlier job, which may have run or ended.
            let figured = self.gateway.with_figures(vec![job]).await?;
            Ok(Response::new(v1::SubmitJobResponse {
                job: figured
                    .first()
                    .map(|(job, tokens)| convert::job(job, *tokens)),
            }))
        }
        .instrument(span)
        .await
    }

    type SubmitAndStreamStream = Decoded;

    /// The stream of [`JobApi::submit_and_stream_frames`], decoded. Clients over the network
    /// are served by `api::frames`, which never calls this.
    async fn submit_and_stream(
        &self,
        request: Request<v1::SubmitJobRequest>,
    ) -> Result<Response<Self::SubmitAndStreamStream>, Status> {
        Ok(self.submit_and_stream_frames(request).await?.map(decode))
    }

    type StreamJobStream = Decoded;

    /// The stream of [`JobApi::stream_job_frames`], decoded. Clients over the network are
    /// served by `api::frames`, which never calls this.
    async fn stream_job(
        &self,
        request: Request<v1::StreamJobRequest>,
    ) -> Result<Response<Self::StreamJobStream>, Status> {
        Ok(self.stream_job_frames(request).await?.map(decode))
    }

    #[instrument(skip_all, fields(job_id = %request.get_ref().job_id))]
    async fn get_job(
        &self,
        request: Request<v1::GetJobRequest>,
    ) -> Result<Response<v1::Job>, Status> {
        let who = principal(&request)?;
        let id = job_id(&request.get_ref().job_id)?;
        let (job, tokens) = self.gateway.get(id).await?;
        if !who.can_access(&job.tenant) {
            return Err(Error::NotFound(format!("job {id}")).into());
        }
        Ok(Response::new(convert::job(&job, tokens)))
    }

    #[instrument(skip_all, fields(job_id = %request.get_ref().job_id))]
    async fn get_job_result(
        &self,
        request: Request<v1::GetJobResultRequest>,
    ) -> Result<Response<v1::JobResult>, Status> {
        let who = principal(&request)?;
        let id = job_id(&request.get_ref().job_id)?;
        self.visible(&who, id).await?;
        let (stored, failures) = self.gateway.result(id).await?;
        Ok(Response::new(convert::job_result(
            &stored.job,
            stored.outcome.as_ref(),
            &failures,
        )))
    }

    #[instrument(skip_all)]
    async fn list_jobs(
        &self,
        request: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        let who = principal(&request)?;
        let req = request.into_inner();
        let mut filter = validate::filters::list_jobs(&req, &self.rules.limits)
            .map_err(Error::InvalidArgument)?;
        filter.tenant = who.scope();
        let (jobs, next_page_token) = self
            .gateway
            .list(&filter, req.page_size, &req.page_token)
            .await?;
        let jobs = self.gateway.with_figures(jobs).await?;
        Ok(Response::new(v1::ListJobsResponse {
            jobs: jobs
                .iter()
                .map(|(job, tokens)| convert::job(job, *tokens))
                .collect(),
            next_page_token,
        }))
    }

    #[instrument(skip_all, fields(job_id = %request.get_ref().job_id))]
    async fn get_job_progress(
        &self,
        request: Request<v1::GetJobProgressRequest>,
    ) -> Result<Response<v1::JobProgress>, Status> {
        let who = principal(&request)?;
        let id = job_id(&request.get_ref().job_id)?;
        self.visible(&who, id).await?;
        let progress = self.gateway.progress(id).await?;
        Ok(Response::new(convert::progress::job_progress(&progress)))
    }

    #[instrument(skip_all, fields(job_id = %request.get_ref().job_id))]
    async fn list_job_progress_events(
        &self,
        request: Request<v1::ListJobProgressEventsRequest>,
    ) -> Result<Response<v1::ListJobProgressEventsResponse>, Status> {
        let who = principal(&request)?;
        let req = request.into_inner();
        let id = job_id(&req.job_id)?;
        self.visible(&who, id).await?;
        let (events, next_page_token) = self
            .gateway
            .progress_events(id, req.page_size, &req.page_token)
            .await?;
        Ok(Response::new(v1::ListJobProgressEventsResponse {
            events: events
                .iter()
                .map(convert::progress::progress_event)
                .collect(),
            next_page_token,
        }))
    }

    #[instrument(skip_all, fields(job_id = %request.get_ref().job_id))]
    async fn cancel_job(
        &self,
        request: Request<v1::CancelJobRequest>,
    ) -> Result<Response<v1::Job>, Status> {
        let who = principal(&request)?;
        let req = request.into_inner();
        let id = job_id(&req.job_id)?;
        validate::cancel::job_reason(&req.reason).map_err(|v| Error::InvalidArgument(vec![v]))?;
        let result: Result<_, Status> = async {
            let job = self.visible(&who, id).await?;
            Ok(self.gateway.cancel_read(job, &req.reason).await?)
        }
        .await;
        let outcome = crate::audit::Outcome::of(&result);
        self.guard
            .auditor
            .record(&who, "CancelJob", &id.to_string(), outcome, &req.reason)
            .await;
        let mut figured = self.gateway.with_figures(vec![result?]).await?;
        let (job, tokens) = figured
            .pop()
            .ok_or_else(|| Error::NotFound(format!("job {id}")))?;
        Ok(Response::new(convert::job(&job, tokens)))
    }
}
