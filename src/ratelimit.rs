//! Rate limits kept in Redis, so every gateway and worker of a fleet shares them: per-key
//! client limits (requests per minute, unfinished jobs at once) here, the shared upstream
//! budget per model in [`upstream`]. Without Redis (one `serve` process) the same rules run
//! on in-process counters ([`memory`]); see [`Backend`].
//!
//! Requests per minute use a sliding window (the previous minute's count weighted by how much
//! of it still overlaps the last 60 s, plus this minute's). Unfinished jobs are a set of job
//! ids per key: a submit adds its ids atomically when they fit under the limit; when they do
//! not, ids whose jobs have ended (per Postgres, the source of truth) are pruned and the
//! submit tries once more. So no worker has to report job ends to the limiter.
//!
//! Fail-open: when Redis fails or does not answer within [`CHECK_TIMEOUT`], the request goes
//! through unchecked (counted in [`Limiter::unchecked`], and a warning at most every
//! [`WARN_EVERY`]). Availability wins over limiting: a Redis blip must not turn reads that
//! need only Postgres (GetJob, ListJobs, results) into errors, and whatever needs Redis (a
//! submit's enqueue) fails on its own with UNAVAILABLE.
//!
//! Redis keys (prefix `P`): `P:rl:req:<key prefix>:<minute>` (counter), `P:rl:jobs:<key
//! prefix>` (zset of job ids, score = reservation time in ms).

pub mod limiter;
pub mod memory;
pub mod streams;
pub mod upstream;
pub mod window;

use std::{sync::Arc, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::redis::Redis;
pub use limiter::Limiter;
pub use window::{Taken, take};
pub(crate) use window::{fits, retry_after};

/// Longest a request waits for its rate check (a hung Redis would otherwise hold every RPC
/// for the pool's 5 s timeouts); past it, the request goes through unchecked.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(500);
/// Least time between two warnings about unchecked requests.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// The server's default client limits; a key's own limits override them. 0 means unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defaults {
    /// Requests per minute per key.
    pub requests_per_minute: u32,
    /// Unfinished (queued or running) jobs per key.
    pub max_concurrent_jobs: u32,
    /// Open server streams per key on one gateway process ([`streams`]).
    pub max_open_streams: u32,
}

/// Where the limits keep their counters.
#[derive(Clone)]
pub enum Backend {
    /// In Redis, shared by every process of a fleet.
    Redis(Redis),
    /// In this process (no Redis configured: one `serve` process).
    Memory(Arc<memory::Counters>),
}

/// Which client limit refused a request (`limit` of `llmjobs.ratelimit.refusals`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Requests per minute of a key.
    Requests,
    /// Unfinished jobs of a key.
    UnfinishedJobs,
    /// Open streams of a key on one gateway.
    OpenStreams,
}

impl Limit {
    /// The metric attribute value: `requests`, `unfinished_jobs` or `open_streams`.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Requests => "requests",
            Limit::UnfinishedJobs => "unfinished_jobs",
            Limit::OpenStreams => "open_streams",
        }
    }
}

/// Where a [`Limiter`] reports its refusals (the service's metrics implement it).
pub trait Refusals: Send + Sync {
    /// Counts one request refused by `limit`.
    fn refused(&self, limit: Limit);
}

/// Counts nothing: a limiter's refusals before [`Limiter::with_metrics`].
impl Refusals for () {
    fn refused(&self, _: Limit) {}
}

/// RESOURCE_EXHAUSTED with a RetryInfo detail.
pub fn exhausted(message: String, retry: Duration) -> Status {
    let mut details = ErrorDetails::new();
    // Whole milliseconds, at least one, so clients never spin.
    details.set_retry_info(Some(retry.max(Duration::from_millis(1))));
    Status::with_error_details(Code::ResourceExhausted, message, details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_carries_retry_info() {
        let s = exhausted("slow down".into(), Duration::from_millis(1500));
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(
            s.get_details_retry_info().and_then(|r| r.retry_delay),
            Some(Duration::from_millis(1500))
        );
    }
}
