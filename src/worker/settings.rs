//! What a worker is told to do ([`Settings`]): slots, timeouts, retries, delta batching and
//! progress pace. `app` builds it from the configuration (`config::Worker`).

use super::balance::Strategy;

/// A worker's settings. Times are whole seconds or milliseconds, as their names say.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Jobs run at once (at least 1 is used).
    pub concurrency: usize,
    /// Longest time one attempt may take in all, unless the job sets its own (s).
    pub job_timeout_secs: u64,
    /// Longest wait from the request to the first token before the attempt fails (s).
    pub first_token_timeout_secs: u64,
    /// How job types share the slots.
    pub balance: Strategy,
    /// Most jobs of one queue run at once (`None`: no cap).
    pub queue_cap: Option<usize>,
    /// First retry delay (ms); doubles per attempt, with full jitter.
    pub retry_base_ms: u64,
    /// Largest retry delay (ms); an upstream's `Retry-After` is honoured up to it.
    pub retry_cap_ms: u64,
    /// BUFFERED mode, and REALTIME jobs nobody watches: flush deltas at least this often (ms).
    pub buffer_flush_ms: u64,
    /// BUFFERED mode: flush once this many bytes are waiting.
    pub buffer_max_bytes: usize,
    /// Least time between two progress events of a running job (ms).
    pub progress_interval_ms: u64,
}
