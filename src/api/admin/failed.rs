//! Failed-job requests of the admin API: ids and filters read from the wire, jobs written to
//! it, and the audit target a retry or forget names.

use tonic::Status;

use crate::{
    admin::FailedJob, api::convert, auth::Principal, error::Error, job::JobId, proto::v1,
    store::FailedFilter,
};

/// Job ids as an audit target: the first few, then how many more.
pub(super) fn ids_target(ids: &[String]) -> String {
    match ids.len() {
        0 => "all failed jobs matching the filter".to_owned(),
        n if n <= 5 => ids.join(","),
        n => format!("{},… ({n} jobs)", ids[..5].join(",")),
    }
}

/// Reads the `job_ids` of a retry or forget (see [`crate::api::validate::id`]). Errors:
/// INVALID_ARGUMENT naming the first malformed `job_ids[i]`.
pub(super) fn job_ids(raw: &[String]) -> Result<Vec<JobId>, Error> {
    raw.iter()
        .enumerate()
        .map(|(i, id)| crate::api::validate::id(format!("job_ids[{i}]"), id))
        .collect::<Result<_, _>>()
        .map_err(|v| Error::InvalidArgument(vec![v]))
}

/// The failed-job filter `f` names (fields named under `prefix`), limited to the caller's
/// tenant unless it is an operator. Errors: INVALID_ARGUMENT naming each bad field.
pub(super) fn filter(
    who: &Principal,
    f: Option<&v1::ListFailedJobsRequest>,
    prefix: &str,
) -> Result<FailedFilter, Status> {
    let mut filter = crate::api::validate::filters::failed_jobs(f, prefix)
        .map_err(|v| Status::from(Error::InvalidArgument(v)))?;
    filter.tenant = who.scope();
    Ok(filter)
}

pub(super) fn failed_job(f: FailedJob) -> v1::FailedJob {
    v1::FailedJob {
        failed_time: f.job.finished_at.map(convert::timestamp),
        attempt_errors: f
            .attempt_errors
            .iter()
            .map(|(attempt, e)| v1::AttemptError {
                attempt: *attempt,
                error: Some(convert::job_error(e)),
            })
            .collect(),
        job: Some(convert::job(&f.job, f.output_tokens)),
    }
}
