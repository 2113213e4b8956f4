//! `llmjobs.v1.BatchService`: validate a batch all or nothing, call the [`Gateway`], encode.
//!
//! Tenancy: a batch and its jobs belong to the tenant of the key that submitted it; other
//! tenants' batches are NOT_FOUND.

use std::collections::BTreeMap;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{Instrument, instrument};

use super::{convert, validate};
use crate::{
    auth::{Principal, principal},
    batch::{BatchId, NewBatch, Progress, Snapshot},
    error::{Error, FieldViolation},
    gateway::Gateway,
    job::NewJob,
    proto::v1::{self, batch_service_server::BatchService},
    streaming::batch::BatchEventStream,
};

/// Violations reported for one rejected batch; the rest are summed up in one more entry, so
/// the error (sent in HTTP/2 headers) stays a few KiB even when all 1,000 requests are bad.
pub const MAX_REPORTED_VIOLATIONS: usize = 25;
const MAX_DISPLAY_NAME_BYTES: usize = 200;
const MAX_IDEMPOTENCY_KEY_BYTES: usize = 200;
const MAX_REASON_BYTES: usize = 1024;

/// The BatchService implementation.
pub struct BatchApi {
    gateway: Gateway,
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
        gateway: Gateway,
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
            Err(e) => Err(e),
        }
    }
}

/// Checks a whole batch: every job with the single-job validator (violations prefixed with
/// `requests[i].`), the count against `max_jobs`, and the batch's own fields. Returns the
/// batch and its jobs in request order, or every violation found (at most
/// [`MAX_REPORTED_VIOLATIONS`] plus a summary).
pub fn validate_batch(
    req: v1::SubmitBatchRequest,
    rules: &validate::Rules,
    max_jobs: usize,
) -> Result<(NewBatch, Vec<NewJob>), Vec<FieldViolation>> {
    if req.requests.is_empty() {
        return Err(vec![FieldViolation::new(
            "requests",
            "a batch needs at least one request",
        )]);
    }
    if req.requests.len() > max_jobs {
        return Err(vec![FieldViolation::new(
            "requests",
            format!(
                "at most {max_jobs} requests per batch, got {}; split it",
                req.requests.len()
            ),
        )]);
    }
    let mut v = Vec::new();
    // Batch labels are shown back to people (CLI, dashboards): the same rules as a job's.
    if req.display_name.len() > MAX_DISPLAY_NAME_BYTES || !validate::printable(&req.display_name) {
        v.push(FieldViolation::new(
            "display_name",
            format!(
                "at most {MAX_DISPLAY_NAME_BYTES} bytes, no control or bidirectional characters"
            ),
        ));
    }
    let limits = &rules.limits;
    if req.metadata.len() > limits.max_metadata_entries
        || req.metadata.iter().any(|(k, val)| {
            k.is_empty()
                || k.len() > limits.max_metadata_bytes
                || val.len() > limits.max_metadata_bytes
                || k.contains('\0')
                || val.contains('\0')
                || !validate::metadata_printable(k, val)
        })
    {
        v.push(FieldViolation::new(
            "metadata",
            format!(
                "at most {} entries; keys 1..={1} bytes, values at most {1} bytes, no NUL; \
                 keys without control characters, values none but tab and line breaks, \
                 neither with bidirectional controls",
                limits.max_metadata_entries, limits.max_metadata_bytes
            ),
        ));
    }
    if req.idempotency_key.len() > MAX_IDEMPOTENCY_KEY_BYTES
        || !validate::printable(&req.idempotency_key)
    {
        v.push(FieldViolation::new(
            "idempotency_key",
            format!(
                "at most {MAX_IDEMPOTENCY_KEY_BYTES} bytes, no control or bidirectional \
                 characters"
            ),
        ));
    }
    let mut jobs = Vec::with_capacity(req.requests.len());
    for (i, job) in req.requests.into_iter().enumerate() {
        // One key per batch: per-job keys could collide with each other or with older jobs,
        // and a batch cannot be half an earlier submit.
        if !job.idempotency_key.is_empty() {
            v.push(FieldViolation::new(
                format!("requests[{i}].idempotency_key"),
                "must be empty in a batch; set the batch's idempotency_key instead",
            ));
        }
        match validate::submit(job, rules) {
            Ok(job) => jobs.push(job),
            Err(violations) => v.extend(violations.into_iter().map(|f| FieldViolation {
                field: format!("requests[{i}].{}", f.field),
                description: f.description,
            })),
        }
    }
    if !v.is_empty() {
        if v.len() > MAX_REPORTED_VIOLATIONS {
            let more = v.len() - MAX_REPORTED_VIOLATIONS;
            v.truncate(MAX_REPORTED_VIOLATIONS);
            v.push(FieldViolation::new(
                "requests",
                format!("{more} more violations not listed"),
            ));
        }
        return Err(v);
    }
    Ok((
        NewBatch {
            id: uuid::Uuid::now_v7(),
            display_name: req.display_name,
            metadata: req.metadata.into_iter().collect::<BTreeMap<_, _>>(),
            idempotency_key: Some(req.idempotency_key).filter(|k| !k.is_empty()),
            tenant: crate::auth::DEFAULT_TENANT.into(),
        },
        jobs,
    ))
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
                validate_batch(request.into_inner(), &self.rules, self.max_jobs)
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

    type StreamBatchStream = BatchEventStream;

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
        // The reason reaches every job's watchers (`llm-jobs watch` prints it): no terminal
        // escapes, as for CancelJob.
        if req.reason.len() > MAX_REASON_BYTES
            || !validate::printable(&req.reason.replace(['\t', '\n'], " "))
        {
            return Err(Error::invalid(
                "reason",
                format!(
                    "at most {MAX_REASON_BYTES} bytes, no control characters but tab and line \
                     feed, no bidirectional characters"
                ),
            )
            .into());
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> validate::Rules {
        validate::Rules {
            job_types: vec!["general".into()],
            default_model: "sim".into(),
            max_attempts: 3,
            limits: crate::job::Limits::default(),
            upstream_configured: false,
        }
    }

    fn ok(prompt: &str) -> v1::SubmitJobRequest {
        v1::SubmitJobRequest {
            prompt: prompt.into(),
            ..Default::default()
        }
    }

    fn fields(req: v1::SubmitBatchRequest, max: usize) -> Vec<String> {
        validate_batch(req, &rules(), max)
            .expect_err("invalid")
            .into_iter()
            .map(|v| v.field)
            .collect()
    }

    #[test]
    fn batch_labels_may_not_hold_terminal_escapes_or_bidi_controls() {
        let base = || v1::SubmitBatchRequest {
            requests: vec![ok("p")],
            ..Default::default()
        };
        let mut r = base();
        r.display_name = "\u{202e}evil".into();
        assert_eq!(fields(r, 10), ["display_name"]);
        let mut r = base();
        r.metadata.insert("k\u{1b}[31m".into(), "v".into());
        assert_eq!(fields(r, 10), ["metadata"]);
        let mut r = base();
        r.metadata.insert("k".into(), "v\u{7}".into());
        assert_eq!(fields(r, 10), ["metadata"]);
        let mut r = base();
        r.idempotency_key = "\u{202e}key".into();
        assert_eq!(fields(r, 10), ["idempotency_key"]);
        // Line breaks and tabs stay allowed in values.
        let mut r = base();
        r.metadata.insert("note".into(), "two\tlines\nhere".into());
        assert!(validate_batch(r, &rules(), 10).is_ok());
    }

    #[test]
    fn valid_batches_keep_request_order_in_time_ordered_ids() {
        let (batch, jobs) = validate_batch(
            v1::SubmitBatchRequest {
                requests: (0..20).map(|i| ok(&format!("p{i}"))).collect(),
                idempotency_key: "k".into(),
                ..Default::default()
            },
            &rules(),
            20,
        )
        .expect("valid");
        assert_eq!(batch.idempotency_key.as_deref(), Some("k"));
        let prompts: Vec<_> = jobs.iter().map(|j| j.messages[0].content.clone()).collect();
        assert_eq!(
            prompts,
            (0..20).map(|i| format!("p{i}")).collect::<Vec<_>>()
        );
        assert!(jobs.windows(2).all(|w| w[0].id < w[1].id));
    }

    #[test]
    fn violations_name_the_request_and_per_job_keys_are_refused() {
        let mut bad = ok("");
        bad.priority = 42;
        let mut keyed = ok("x");
        keyed.idempotency_key = "k".into();
        let got = fields(
            v1::SubmitBatchRequest {
                requests: vec![ok("a"), keyed, bad],
                ..Default::default()
            },
            10,
        );
        assert_eq!(
            got,
            [
                "requests[1].idempotency_key",
                "requests[2].prompt",
                "requests[2].priority"
            ]
        );
    }

    #[test]
    fn empty_oversized_and_very_bad_batches_are_refused_briefly() {
        assert_eq!(fields(v1::SubmitBatchRequest::default(), 10), ["requests"]);
        let three = v1::SubmitBatchRequest {
            requests: vec![ok("a"), ok("b"), ok("c")],
            ..Default::default()
        };
        assert_eq!(fields(three, 2), ["requests"]);
        let all_bad = v1::SubmitBatchRequest {
            requests: (0..1000).map(|_| ok("")).collect(),
            ..Default::default()
        };
        let got = fields(all_bad, 1000);
        assert_eq!(got.len(), MAX_REPORTED_VIOLATIONS + 1);
        assert_eq!(got.last().map(String::as_str), Some("requests"));
    }
}
