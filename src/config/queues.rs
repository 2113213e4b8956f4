//! The queues' settings both sides read: the job types and how long a finished job's live
//! state stays ([`Queues`]), and how long a claim lasts ([`Lease`]).
//!
//! Environment variables read here: `LLMJOBS_JOB_TYPES`, `LLMJOBS_EVENT_LOG_TTL_SECS`,
//! `LLMJOBS_PROGRESS_TTL_SECS`, `LLMJOBS_LEASE_SECS`.

use std::time::Duration;

/// The queues and the live state of jobs (both sides).
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Queues")]
pub struct Queues {
    /// Accepted job types; each has its four priority queues.
    #[arg(
        long = "job-types",
        env = "LLMJOBS_JOB_TYPES",
        value_delimiter = ',',
        default_value = "general,code_review,security_analysis"
    )]
    pub job_types: Vec<String>,
    /// Seconds a finished job's live keys (event log, state, progress snapshot, cancel flag)
    /// stay in Redis, or in process, after its end: the window for watchers still catching up
    /// live. The whole log goes to the store when the job ends, and replays after the window
    /// read it from there. Default: 120.
    #[arg(long = "event-log-ttl-secs", env = "LLMJOBS_EVENT_LOG_TTL_SECS")]
    pub event_log_ttl_secs: Option<u64>,
    /// Seconds a finished job's live progress (GetJobProgress) stays in Redis, at most the
    /// event log's window (`LLMJOBS_EVENT_LOG_TTL_SECS`); after that it is rebuilt from the
    /// history in the store.
    #[arg(
        long = "progress-ttl-secs",
        env = "LLMJOBS_PROGRESS_TTL_SECS",
        default_value_t = 120
    )]
    pub progress_ttl_secs: u64,
}

impl Queues {
    /// [`Queues::event_log_ttl_secs`] as configured, or its default (120 s, in Redis and in
    /// process alike: the store keeps finished logs).
    pub fn event_log_ttl_secs(&self) -> u64 {
        self.event_log_ttl_secs
            .unwrap_or(DEFAULT_EVENT_LOG_TTL_SECS)
    }

    /// Seconds a finished job's progress snapshot stays live: [`Queues::progress_ttl_secs`],
    /// at most the event log's window.
    pub fn finished_progress_ttl_secs(&self) -> u64 {
        self.progress_ttl_secs.min(self.event_log_ttl_secs())
    }
}

/// Default of `LLMJOBS_EVENT_LOG_TTL_SECS`: how long a finished job's live keys stay.
pub const DEFAULT_EVENT_LOG_TTL_SECS: u64 = 120;

/// How long a claim lasts (both sides: workers hold claims, gateways count a worker live
/// for as long).
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Queues")]
pub struct Lease {
    /// Seconds a claim stays valid without a heartbeat; an expired lease returns the job to its
    /// queue. Workers heartbeat every third of it; gateways list a worker as live while its
    /// last heartbeat is younger.
    #[arg(
        long = "lease-secs",
        env = "LLMJOBS_LEASE_SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub lease_secs: u64,
}

impl Lease {
    /// Lease length.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs.max(1))
    }
}
