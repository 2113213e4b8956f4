//! Validation of list filters (`ListJobs`, `ListFailedJobs` and the admin calls that take its
//! filter, `ListAuditEvents`): every text is bounded and every timestamp is a real instant,
//! so a filter costs what a sensible one costs and never reaches the store malformed.

use chrono::{DateTime, Utc};

use crate::{
    error::FieldViolation,
    job::{JobStatus, Limits, Priority},
    proto::v1,
    store::{FailedFilter, JobFilter},
};

/// Longest text filter other than a tag (job types, queues, error codes, tenants, actors,
/// actions are all far shorter).
pub const MAX_FILTER_BYTES: usize = 256;

/// The `ListJobs` filter of `req` (without a tenant: the caller's scope sets it), or every
/// violation found. A tag is bounded as a job's tags are (`limits`).
pub fn list_jobs(
    req: &v1::ListJobsRequest,
    limits: &Limits,
) -> Result<JobFilter, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let status = match v1::JobStatus::try_from(req.status) {
        Ok(v1::JobStatus::Unspecified) => None,
        Ok(s) => JobStatus::parse(
            &s.as_str_name()
                .trim_start_matches("JOB_STATUS_")
                .to_lowercase(),
        ),
        Err(_) => {
            v.push(FieldViolation::new("status", "unknown value"));
            None
        }
    };
    let priority = match v1::Priority::try_from(req.priority) {
        Ok(v1::Priority::Unspecified) => None,
        Ok(p) => Priority::parse(
            &p.as_str_name()
                .trim_start_matches("PRIORITY_")
                .to_lowercase(),
        ),
        Err(_) => {
            v.push(FieldViolation::new("priority", "unknown value"));
            None
        }
    };
    let job_type = text(&mut v, "job_type", &req.job_type, MAX_FILTER_BYTES);
    let tag = text(&mut v, "tag", &req.tag, limits.max_tag_bytes);
    let batch_id = match req.batch_id.as_str() {
        "" => None,
        raw => super::id("batch_id", raw).map_err(|e| v.push(e)).ok(),
    };
    let created_after = optional_time(&mut v, "created_after", req.created_after.as_ref());
    let created_before = optional_time(&mut v, "created_before", req.created_before.as_ref());
    if !v.is_empty() {
        return Err(v);
    }
    Ok(JobFilter {
        tenant: None,
        status,
        job_type,
        priority,
        tag,
        batch_id,
        created_after,
        created_before,
    })
}

/// The failed-job filter of `req` (none: any failed job), or every violation found, each
/// field named under `prefix` (`""` for `ListFailedJobs` itself, `"filter."` where it is
/// nested).
pub fn failed_jobs(
    req: Option<&v1::ListFailedJobsRequest>,
    prefix: &str,
) -> Result<FailedFilter, Vec<FieldViolation>> {
    let Some(req) = req else {
        return Ok(FailedFilter::default());
    };
    let mut v = Vec::new();
    let mut field =
        |name: &str, value: &str| text(&mut v, &format!("{prefix}{name}"), value, MAX_FILTER_BYTES);
    let filter = FailedFilter {
        tenant: None,
        queue: field("queue", &req.queue),
        job_type: field("job_type", &req.job_type),
        error_code: field("error_code", &req.error_code),
    };
    if v.is_empty() { Ok(filter) } else { Err(v) }
}

/// The texts and time of a `ListAuditEvents` filter, checked: (tenant, actor, action, since),
/// or every violation found.
pub fn audit_events(
    req: &v1::ListAuditEventsRequest,
) -> Result<AuditFilterParts, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let parts = AuditFilterParts {
        tenant: text(&mut v, "tenant", &req.tenant, MAX_FILTER_BYTES),
        actor: text(&mut v, "actor", &req.actor, MAX_FILTER_BYTES),
        action: text(&mut v, "action", &req.action, MAX_FILTER_BYTES),
        since: optional_time(&mut v, "since", req.since.as_ref()),
    };
    if v.is_empty() { Ok(parts) } else { Err(v) }
}

/// The checked text and time fields of a `ListAuditEvents` filter (`None`: any).
#[derive(Clone, Debug, Default)]
pub struct AuditFilterParts {
    /// Only events of this tenant.
    pub tenant: Option<String>,
    /// Only events of this actor.
    pub actor: Option<String>,
    /// Only events of this action.
    pub action: Option<String>,
    /// Only events at or after this time.
    pub since: Option<DateTime<Utc>>,
}

/// A protobuf timestamp as an instant, when it is one: `nanos` within 0..=999,999,999 and
/// `seconds` within 0001-01-01 .. 9999-12-31 (the range `google.protobuf.Timestamp` defines).
/// Errors: the violation naming `field`.
pub fn timestamp(field: &str, t: &prost_types::Timestamp) -> Result<DateTime<Utc>, FieldViolation> {
    /// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z in Unix seconds.
    const SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;
    let nanos = u32::try_from(t.nanos).ok().filter(|n| *n < 1_000_000_000);
    match nanos {
        Some(nanos) if SECONDS.contains(&t.seconds) => DateTime::from_timestamp(t.seconds, nanos)
            .ok_or_else(|| FieldViolation::new(field, "not a valid timestamp")),
        None => Err(FieldViolation::new(
            field,
            "nanos must be within 0..=999999999",
        )),
        Some(_) => Err(FieldViolation::new(
            field,
            "seconds must be within 0001-01-01 and 9999-12-31",
        )),
    }
}

fn optional_time(
    v: &mut Vec<FieldViolation>,
    field: &str,
    t: Option<&prost_types::Timestamp>,
) -> Option<DateTime<Utc>> {
    match t.map(|t| timestamp(field, t)).transpose() {
        Ok(t) => t,
        Err(violation) => {
            v.push(violation);
            None
        }
    }
}

/// `value` as a filter (`None` when empty), when it is at most `max` bytes and printable;
/// else records the violation of `field`.
fn text(v: &mut Vec<FieldViolation>, field: &str, value: &str, max: usize) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    if value.len() > max || !super::printable(value) {
        v.push(FieldViolation::new(
            field,
            format!("at most {max} bytes, without control or bidirectional characters"),
        ));
        return None;
    }
    Some(value.to_owned())
}

#[cfg(test)]
mod tests;
