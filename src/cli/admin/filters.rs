//! The filters of `admin failed`, `retry`, `forget` and `audit`, as flags and as the
//! requests they make.

use crate::proto::v1;

/// Which audit events: every filter given must match (none: all the caller may see).
#[derive(clap::Args, Clone, Debug)]
pub struct AuditFilter {
    /// Only this tenant's events.
    #[arg(long, value_parser = crate::cli::parse_filter)]
    tenant: Option<String>,
    /// Only this caller's: an API key's prefix, `anonymous`, `local` (`llm-jobs keys`) or
    /// `auth-off`.
    #[arg(long, value_parser = crate::cli::parse_filter)]
    actor: Option<String>,
    /// Only this action: an RPC name (`CancelJob`, `PauseQueue` ...), `authenticate`,
    /// `authorize`, `keys.create`, `keys.revoke`.
    #[arg(long, value_parser = crate::cli::parse_filter)]
    action: Option<String>,
    /// Only `ok`, `denied` or `error` events.
    #[arg(long, value_parser = crate::cli::parse_filter)]
    outcome: Option<String>,
    /// Only events of the last AGE: a number with a unit, s, m, h or d (`90m`, `7d`).
    #[arg(long, value_parser = crate::cli::cleanup::parse_since)]
    since: Option<std::time::Duration>,
}

impl AuditFilter {
    /// The request for a page of `page_size` events this filter matches.
    pub(super) fn request(self, page_size: i32, page_token: String) -> v1::ListAuditEventsRequest {
        let since = self.since.map(|age| {
            let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
            crate::api::convert::timestamp(
                chrono::Utc::now()
                    .checked_sub_signed(age)
                    .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC),
            )
        });
        v1::ListAuditEventsRequest {
            page_size,
            page_token,
            tenant: self.tenant.unwrap_or_default(),
            actor: self.actor.unwrap_or_default(),
            action: self.action.unwrap_or_default(),
            outcome: self.outcome.unwrap_or_default(),
            since,
        }
    }
}

/// Which failed jobs: every filter given must match (none: all of them).
#[derive(clap::Args, Clone, Debug)]
pub struct FailedFilter {
    /// Only this queue.
    #[arg(long, value_parser = crate::cli::parse_filter)]
    queue: Option<String>,
    /// Only this job type.
    #[arg(long = "job-type", value_parser = crate::cli::parse_filter)]
    job_type: Option<String>,
    /// Only this error code.
    #[arg(long = "error-code", value_parser = crate::cli::parse_filter)]
    error_code: Option<String>,
}

impl FailedFilter {
    /// The request listing the first `page_size` failed jobs this filter matches.
    pub(super) fn request(self, page_size: i32, page_token: String) -> v1::ListFailedJobsRequest {
        v1::ListFailedJobsRequest {
            queue: self.queue.unwrap_or_default(),
            job_type: self.job_type.unwrap_or_default(),
            error_code: self.error_code.unwrap_or_default(),
            page_size,
            page_token,
        }
    }
}
