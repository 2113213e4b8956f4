//! The worker's settings ([`Worker`]): slots, timeouts, retries, delta batching, draining.
//!
//! Environment variables read here: `LLMJOBS_WORKER_CONCURRENCY`,
//! `LLMJOBS_SHUTDOWN_GRACE_SECS`, `LLMJOBS_JOB_TIMEOUT_SECS`,
//! `LLMJOBS_FIRST_TOKEN_TIMEOUT_SECS`, `LLMJOBS_RECONCILE_SECS`, `LLMJOBS_BALANCE`,
//! `LLMJOBS_QUEUE_CAP`, `LLMJOBS_RETRY_BASE_MS`, `LLMJOBS_RETRY_CAP_MS`,
//! `LLMJOBS_BUFFER_FLUSH_MS`, `LLMJOBS_BUFFER_MAX_BYTES`, `LLMJOBS_PROGRESS_INTERVAL_MS`.

/// The worker side: slots, timeouts, retries, delta batching, draining.
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Worker")]
pub struct Worker {
    /// Jobs run at once by this process (they are I/O-bound).
    #[arg(
        long = "concurrency",
        env = "LLMJOBS_WORKER_CONCURRENCY",
        default_value_t = 32,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub concurrency: usize,
    /// Seconds running jobs get to finish after SIGTERM/SIGINT before they are handed back to
    /// their queues (a gateway's open streams end at once with UNAVAILABLE: clients resume
    /// elsewhere).
    #[arg(
        long = "shutdown-grace-secs",
        env = "LLMJOBS_SHUTDOWN_GRACE_SECS",
        default_value_t = 10
    )]
    pub shutdown_grace_secs: u64,
    /// Seconds one attempt may take in all.
    #[arg(
        long = "job-timeout-secs",
        env = "LLMJOBS_JOB_TIMEOUT_SECS",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub job_timeout_secs: u64,
    /// Seconds from sending the request to the first token before the attempt fails
    /// (retryable) and the request is dropped.
    #[arg(
        long = "first-token-timeout-secs",
        env = "LLMJOBS_FIRST_TOKEN_TIMEOUT_SECS",
        default_value_t = 60
    )]
    pub first_token_timeout_secs: u64,
    /// Seconds between reconciler passes (jobs unfinished in Postgres but unknown to Redis are
    /// re-enqueued).
    #[arg(
        long = "reconcile-secs",
        env = "LLMJOBS_RECONCILE_SECS",
        default_value_t = 15
    )]
    pub reconcile_secs: u64,
    /// How job types share this worker's slots: `simple` (equal turns) or `auto` (weighted
    /// by backlog and oldest wait).
    #[arg(long = "balance", env = "LLMJOBS_BALANCE", value_enum, default_value_t = crate::worker::balance::Strategy::Simple)]
    pub balance: crate::worker::balance::Strategy,
    /// Most jobs of one queue this worker runs at once, 1 or more (unset: no cap).
    #[arg(
        long = "queue-cap",
        env = "LLMJOBS_QUEUE_CAP",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub queue_cap: Option<usize>,
    /// First retry delay (ms); doubles per attempt, with full jitter.
    #[arg(
        long = "retry-base-ms",
        env = "LLMJOBS_RETRY_BASE_MS",
        default_value_t = 1000
    )]
    pub retry_base_ms: u64,
    /// Largest retry delay (ms); an upstream's `Retry-After` is honoured up to it.
    #[arg(
        long = "retry-cap-ms",
        env = "LLMJOBS_RETRY_CAP_MS",
        default_value_t = 60_000
    )]
    pub retry_cap_ms: u64,
    /// BUFFERED mode, and REALTIME jobs nobody watches: flush deltas at least this often (ms).
    #[arg(
        long = "buffer-flush-ms",
        env = "LLMJOBS_BUFFER_FLUSH_MS",
        default_value_t = 50
    )]
    pub buffer_flush_ms: u64,
    /// BUFFERED mode: flush once this many bytes are waiting.
    #[arg(
        long = "buffer-max-bytes",
        env = "LLMJOBS_BUFFER_MAX_BYTES",
        default_value_t = 512
    )]
    pub buffer_max_bytes: usize,
    /// Least time between two progress events of a running job (ms).
    #[arg(
        long = "progress-interval-ms",
        env = "LLMJOBS_PROGRESS_INTERVAL_MS",
        default_value_t = 250
    )]
    pub progress_interval_ms: u64,
}
