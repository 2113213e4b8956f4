//! The `SubmitBatchRequest` validator: all or nothing, every job through [`super::submit`]
//! with its violations prefixed `requests[i].`, plus the batch's own labels.

use std::collections::BTreeMap;

use super::{Rules, metadata_printable, printable, submit};
use crate::{batch::NewBatch, error::FieldViolation, job::NewJob, proto::v1};

/// Violations reported for one rejected batch; the rest are summed up in one more entry, so
/// the error (sent in HTTP/2 headers) stays a few KiB even when all 1,000 requests are bad.
pub const MAX_REPORTED_VIOLATIONS: usize = 25;
const MAX_DISPLAY_NAME_BYTES: usize = 200;
const MAX_IDEMPOTENCY_KEY_BYTES: usize = 200;

/// Checks a whole batch: every job with the single-job validator (violations prefixed with
/// `requests[i].`), the count against `max_jobs`, and the batch's own fields. Returns the
/// batch and its jobs in request order, or every violation found (at most
/// [`MAX_REPORTED_VIOLATIONS`] plus a summary).
pub fn batch(
    req: v1::SubmitBatchRequest,
    rules: &Rules,
    max_jobs: usize,
) -> Result<(NewBatch, Vec<NewJob>), Vec<FieldViolation>> {
    count(req.requests.len(), max_jobs)?;
    let mut v = Vec::new();
    labels(&req, rules, &mut v);
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
        match submit(job, rules) {
            Ok(job) => jobs.push(job),
            Err(violations) => v.extend(violations.into_iter().map(|f| FieldViolation {
                field: format!("requests[{i}].{}", f.field),
                description: f.description,
            })),
        }
    }
    if !v.is_empty() {
        return Err(capped(v));
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

/// Refuses an empty batch, or one of more than `max_jobs` requests, with that one violation.
fn count(requests: usize, max_jobs: usize) -> Result<(), Vec<FieldViolation>> {
    if requests == 0 {
        return Err(vec![FieldViolation::new(
            "requests",
            "a batch needs at least one request",
        )]);
    }
    if requests > max_jobs {
        return Err(vec![FieldViolation::new(
            "requests",
            format!("at most {max_jobs} requests per batch, got {requests}; split it"),
        )]);
    }
    Ok(())
}

/// Checks the batch's display name, metadata and idempotency key. Batch labels are shown
/// back to people (CLI, dashboards): the same rules as a job's.
fn labels(req: &v1::SubmitBatchRequest, rules: &Rules, v: &mut Vec<FieldViolation>) {
    if req.display_name.len() > MAX_DISPLAY_NAME_BYTES || !printable(&req.display_name) {
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
                || !metadata_printable(k, val)
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
    if req.idempotency_key.len() > MAX_IDEMPOTENCY_KEY_BYTES || !printable(&req.idempotency_key) {
        v.push(FieldViolation::new(
            "idempotency_key",
            format!(
                "at most {MAX_IDEMPOTENCY_KEY_BYTES} bytes, no control or bidirectional \
                 characters"
            ),
        ));
    }
}

/// `v` cut to [`MAX_REPORTED_VIOLATIONS`], plus one entry counting the rest, when longer.
fn capped(mut v: Vec<FieldViolation>) -> Vec<FieldViolation> {
    if v.len() > MAX_REPORTED_VIOLATIONS {
        let more = v.len() - MAX_REPORTED_VIOLATIONS;
        v.truncate(MAX_REPORTED_VIOLATIONS);
        v.push(FieldViolation::new(
            "requests",
            format!("{more} more violations not listed"),
        ));
    }
    v
}

#[cfg(test)]
mod tests;
