//! The gateway's security settings ([`Security`]: authentication, client limits, prompt
//! storage, TLS) and the secrets every process masks ([`Redaction`]).
//!
//! Environment variables read here: `LLMJOBS_AUTH`, `LLMJOBS_CLIENT_REQUESTS_PER_MINUTE`,
//! `LLMJOBS_CLIENT_MAX_CONCURRENT_JOBS`, `LLMJOBS_CLIENT_MAX_OPEN_STREAMS`,
//! `LLMJOBS_KEY_CACHE_MS`, `LLMJOBS_PROMPT_STORAGE`, `LLMJOBS_TLS_CERT`, `LLMJOBS_TLS_KEY`,
//! `LLMJOBS_REDACT_PATTERNS`.

/// Authentication, client rate limits, prompt storage and TLS (gateway).
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Security")]
pub struct Security {
    /// `on`: every RPC but health and reflection needs an API key (`llm-jobs keys create`);
    /// `off`: no keys, every caller is an operator (tenant `default`) (local development only).
    #[arg(long = "auth", env = "LLMJOBS_AUTH", value_enum, default_value_t = crate::auth::layer::Mode::On)]
    pub auth: crate::auth::layer::Mode,
    /// The same as `--auth off`.
    #[arg(long = "insecure-no-auth")]
    pub insecure_no_auth: bool,
    /// Default requests per minute per API key (0: unlimited); a key's own limit overrides it.
    #[arg(
        long = "client-requests-per-minute",
        env = "LLMJOBS_CLIENT_REQUESTS_PER_MINUTE",
        default_value_t = 600
    )]
    pub client_requests_per_minute: u32,
    /// Default unfinished (queued or running) jobs per API key (0: unlimited); a key's own
    /// limit overrides it.
    #[arg(
        long = "client-max-concurrent-jobs",
        env = "LLMJOBS_CLIENT_MAX_CONCURRENT_JOBS",
        default_value_t = 1000
    )]
    pub client_max_concurrent_jobs: u32,
    /// Open server streams (StreamJob, SubmitAndStream, StreamBatch) per API key on one
    /// gateway process (0: unlimited); past it a new stream is refused with
    /// RESOURCE_EXHAUSTED. Each costs a task and up to 64 KiB of buffered events.
    #[arg(
        long = "client-max-open-streams",
        env = "LLMJOBS_CLIENT_MAX_OPEN_STREAMS",
        default_value_t = 1000
    )]
    pub client_max_open_streams: u32,
    /// How long a gateway remembers an API key it read (ms; 0: read Postgres on every RPC).
    /// A revoked key keeps working on a gateway for at most this long.
    #[arg(
        long = "key-cache-ms",
        env = "LLMJOBS_KEY_CACHE_MS",
        default_value_t = 5_000
    )]
    pub key_cache_ms: u64,
    /// How prompts (prompt, system prompt, messages) are stored in Postgres: `full` (as
    /// submitted); `redacted` (secrets masked at submit, before they are stored, and so also
    /// in what is sent upstream); `none` (stored as submitted while the job can still run,
    /// since the worker reads it from there, and replaced by an empty conversation when the
    /// job ends; such a failed job cannot be retried with `admin retry`).
    #[arg(long = "prompt-storage", env = "LLMJOBS_PROMPT_STORAGE", value_enum, default_value_t = PromptStorage::Full)]
    pub prompt_storage: PromptStorage,
    /// Refusals (bad keys, missing roles) from one host for one reason are audited once per
    /// this many ms, with a count of the rest; shorter only in tests.
    #[arg(
        long = "audit-refusal-window-ms",
        default_value_t = 10_000,
        hide = true
    )]
    pub audit_refusal_window_ms: u64,
    /// PEM certificate chain of the server: serve TLS (with `--tls-key`).
    #[arg(long = "tls-cert", env = "LLMJOBS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of the server.
    #[arg(long = "tls-key", env = "LLMJOBS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

/// Secrets to mask beyond the built-in patterns (both sides: each logs, and workers store
/// upstream errors).
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Security")]
pub struct Redaction {
    /// More secrets to redact from logs, errors and the audit log: regular expressions,
    /// separated by `;`.
    #[arg(
        long = "redact-patterns",
        env = "LLMJOBS_REDACT_PATTERNS",
        value_delimiter = ';'
    )]
    pub redact_patterns: Vec<String>,
}

impl Security {
    /// Whether callers must present keys.
    pub fn auth_mode(&self) -> crate::auth::layer::Mode {
        if self.insecure_no_auth {
            crate::auth::layer::Mode::Off
        } else {
            self.auth
        }
    }
}

pub use crate::job::PromptStorage;
