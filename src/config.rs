//! Configuration: one struct per subsystem, each flattened into the CLI, every flag with an
//! environment variable. Each struct belongs to the side that reads it, so each command
//! offers only the flags it uses: the gateway's ([`Server`], [`Jobs`], [`Security`]), the
//! worker's ([`Worker`], [`Provider`]) and those both read ([`Redis`], [`Database`],
//! [`Queues`], [`Lease`], [`Upstream`], [`Redaction`]); `crate::app` groups them per side
//! and `crate::cli` per command. An environment variable a command has no flag for is
//! ignored by it, so one environment serves every process of a deployment.
//!
//! Environment variables read here: `LLMJOBS_LISTEN`, `LLMJOBS_SHUTDOWN_GRACE_SECS`, `LLMJOBS_STREAM_HEARTBEAT_SECS`,
//! `LLMJOBS_MAX_CONNECTIONS`, `LLMJOBS_HANDSHAKE_TIMEOUT_MS`, `LLMJOBS_HTTP2_KEEPALIVE_SECS`,
//! `LLMJOBS_HTTP2_KEEPALIVE_TIMEOUT_SECS`, `LLMJOBS_CORS_ALLOWED_ORIGINS`, `LLMJOBS_METRICS_LISTEN`,
//! `REDIS_URL`, `LLMJOBS_REDIS_PREFIX`, `LLMJOBS_REDIS_POOL_SIZE`, `DATABASE_URL`,
//! `LLMJOBS_SQLITE_PATH`,
//! `LLMJOBS_DATABASE_POOL_SIZE`, `LLMJOBS_NO_MIGRATE`, `LLMJOBS_JOB_TYPES`,
//! `LLMJOBS_MAX_ATTEMPTS`, `LLMJOBS_MAX_ATTEMPTS_CAP`, `LLMJOBS_MAX_BATCH_JOBS`, `LLMJOBS_JOB_TIMEOUT_CAP_SECS`, `LLMJOBS_EVENT_LOG_TTL_SECS`, `LLMJOBS_PROGRESS_TTL_SECS`, `LLMJOBS_PROGRESS_INTERVAL_MS`, `LLMJOBS_WORKER_CONCURRENCY`,
//! `LLMJOBS_LEASE_SECS`, `LLMJOBS_KEY_CACHE_MS`, `LLMJOBS_JOB_TIMEOUT_SECS`, `LLMJOBS_FIRST_TOKEN_TIMEOUT_SECS`, `LLMJOBS_RECONCILE_SECS`, `LLMJOBS_BALANCE`, `LLMJOBS_QUEUE_CAP`, `LLMJOBS_RETRY_BASE_MS`,
//! `LLMJOBS_RETRY_CAP_MS`, `LLMJOBS_BUFFER_FLUSH_MS`, `LLMJOBS_BUFFER_MAX_BYTES`,
//! `OPENAI_API_KEY`, `OPENAI_BASE_URL`, `LLMJOBS_DEFAULT_MODEL`, `LLMJOBS_SIM_FIRST_TOKEN_MS`,
//! `LLMJOBS_SIM_TOKENS_PER_SECOND`, `LLMJOBS_UPSTREAM_CONNECT_TIMEOUT_SECS`, `LLMJOBS_PRICING_FILE`,
//! `LLMJOBS_AUTH`, `LLMJOBS_CLIENT_REQUESTS_PER_MINUTE`, `LLMJOBS_CLIENT_MAX_CONCURRENT_JOBS`,
//! `LLMJOBS_CLIENT_MAX_OPEN_STREAMS`, `LLMJOBS_STREAM_STALL_SECS`,
//! `LLMJOBS_REDACT_PATTERNS`, `LLMJOBS_UPSTREAM_RPM`, `LLMJOBS_UPSTREAM_TPM`,
//! `LLMJOBS_UPSTREAM_MODEL_LIMITS`, `LLMJOBS_PROMPT_STORAGE`, `LLMJOBS_TLS_CERT`, `LLMJOBS_TLS_KEY`,
//! and the input limits of [`crate::job::Limits`]: `LLMJOBS_MAX_PROMPT_BYTES`,
//! `LLMJOBS_MAX_MESSAGES`, `LLMJOBS_MAX_METADATA_ENTRIES`, `LLMJOBS_MAX_METADATA_BYTES`,
//! `LLMJOBS_MAX_STOP_SEQUENCES`, `LLMJOBS_MAX_OUTPUT_TOKENS`, `LLMJOBS_MAX_TAGS`,
//! `LLMJOBS_MAX_TAG_BYTES`, `LLMJOBS_MAX_SCHEMA_BYTES`, `LLMJOBS_ALLOWED_MODELS`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use secrecy::SecretString;

use crate::job::Limits;

/// The gRPC listener (gateway).
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Listener")]
pub struct Server {
    /// Address to serve gRPC, grpc-web, health and reflection on.
    #[arg(
        long = "listen",
        env = "LLMJOBS_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: SocketAddr,
    /// Seconds of silence on a job stream before the server sends a heartbeat event (proxies
    /// and load balancers cut idle streams).
    #[arg(
        long = "stream-heartbeat-secs",
        env = "LLMJOBS_STREAM_HEARTBEAT_SECS",
        default_value_t = 15
    )]
    pub stream_heartbeat_secs: u64,
    /// Seconds a job stream waits for a client that reads nothing while 64 KiB of events wait
    /// for it, before it ends the stream with RESOURCE_EXHAUSTED (the client resumes with
    /// its last sequence).
    #[arg(
        long = "stream-stall-secs",
        env = "LLMJOBS_STREAM_STALL_SECS",
        default_value_t = 30
    )]
    pub stream_stall_secs: u64,
    /// Most client connections open at once (0: no cap). A connection over the cap is closed
    /// as soon as it is accepted. Keep it well under the process's open-file limit
    /// (`ulimit -n`), which Redis and database connections and files share.
    #[arg(
        long = "max-connections",
        env = "LLMJOBS_MAX_CONNECTIONS",
        default_value_t = 10_000
    )]
    pub max_connections: usize,
    /// Milliseconds a new connection gets to send the HTTP/2 preface (or, over HTTP/1.1, as
    /// many bytes of its first request) and, with TLS, to finish the TLS handshake; slower or
    /// silent connections are closed.
    #[arg(
        long = "handshake-timeout-ms",
        env = "LLMJOBS_HANDSHAKE_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub handshake_timeout_ms: u64,
    /// Seconds between HTTP/2 keepalive pings on a connection (0: no pings).
    #[arg(
        long = "http2-keepalive-secs",
        env = "LLMJOBS_HTTP2_KEEPALIVE_SECS",
        default_value_t = 30
    )]
    pub http2_keepalive_secs: u64,
    /// Seconds a client has to answer a keepalive ping before its connection is closed.
    #[arg(
        long = "http2-keepalive-timeout-secs",
        env = "LLMJOBS_HTTP2_KEEPALIVE_TIMEOUT_SECS",
        default_value_t = 20
    )]
    pub http2_keepalive_timeout_secs: u64,
    /// Origins whose web pages may call the API through grpc-web (CORS), comma-separated,
    /// e.g. `https://app.example.com,http://localhost:5173`; `*`: any. Unset: any origin
    /// while API keys are required; with `--insecure-no-auth` only loopback pages
    /// (`http(s)://localhost`, `127.0.0.1`, `[::1]`, any port), so no web site a developer
    /// visits can drive a local server that trusts every caller.
    #[arg(
        long = "cors-allowed-origins",
        env = "LLMJOBS_CORS_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_allowed_origins: Vec<String>,
}

/// The admin HTTP listener of every process (`serve`, `gateway`, `worker`).
#[derive(clap::Args, Clone, Debug)]
pub struct Metrics {
    /// Address of the admin HTTP listener: `GET /metrics` (Prometheus text), `/healthz`
    /// (liveness), `/readyz` (readiness: Redis and the store answer); `off` (or `0`): none.
    /// Unset: 127.0.0.1:9464 when that port is free; when it is taken (several processes on
    /// one host) the process warns and opens none, so give each process its own address.
    #[arg(
        id = "metrics_listen",
        long = "metrics-listen",
        value_name = "ADDR",
        env = "LLMJOBS_METRICS_LISTEN",
        value_parser = parse_metrics_listen
    )]
    pub listen: Option<MetricsListen>,
}

/// Where the admin HTTP listener goes (`--metrics-listen`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsListen {
    /// No listener.
    Off,
    /// This address; failing to bind it stops the start.
    At(SocketAddr),
}

/// The admin listener's address when `--metrics-listen` is not given (9464: the port
/// OpenTelemetry's Prometheus exporters use).
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);

fn parse_metrics_listen(text: &str) -> Result<MetricsListen, String> {
    match text.trim() {
        "" | "0" | "off" => Ok(MetricsListen::Off),
        addr => addr
            .parse()
            .map(MetricsListen::At)
            .map_err(|_| format!("{addr:?} is not an address like 127.0.0.1:9464 (or `off`)")),
    }
}

impl Server {
    /// Which origins CORS lets call, given whether callers need keys (`auth_off`: they do
    /// not).
    ///
    /// Errors: an entry that is not `*` or an origin (`scheme://host[:port]`).
    pub fn cors(&self, auth_off: bool) -> Result<crate::server::Cors, String> {
        let entries: Vec<&str> = self
            .cors_allowed_origins
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
            .collect();
        if entries.is_empty() {
            return Ok(if auth_off {
                crate::server::Cors::Loopback
            } else {
                crate::server::Cors::Any
            });
        }
        if entries.contains(&"*") {
            return Ok(crate::server::Cors::Any);
        }
        entries
            .into_iter()
            .map(crate::server::origin)
            .collect::<Result<_, _>>()
            .map(crate::server::Cors::Only)
    }

    /// What [`crate::server::serve`] needs to guard its connections.
    pub fn connections(&self) -> crate::server::incoming::Limits {
        crate::server::incoming::Limits {
            max_connections: (self.max_connections > 0).then_some(self.max_connections),
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms.max(1)),
            keepalive_interval: (self.http2_keepalive_secs > 0)
                .then(|| Duration::from_secs(self.http2_keepalive_secs)),
            keepalive_timeout: Duration::from_secs(self.http2_keepalive_timeout_secs.max(1)),
        }
    }
}

/// Redis: queue, leases and the live event log (both sides).
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Redis")]
pub struct Redis {
    /// Redis URL (`redis://host:port/db`). Empty (the default): no Redis; queue, event log
    /// and rate limits run in this process (`serve` only).
    #[arg(
        id = "redis_url",
        long = "redis-url",
        env = "REDIS_URL",
        default_value = "",
        // Its password must not show in `--help`.
        hide_env_values = true
    )]
    pub url: String,
    /// Prefix of every key and channel, so several deployments (or tests) share one Redis.
    #[arg(
        id = "redis_prefix",
        long = "redis-prefix",
        env = "LLMJOBS_REDIS_PREFIX",
        default_value = "llmjobs"
    )]
    pub prefix: String,
    /// Pooled connections for commands (watchers share separate pub/sub connections).
    #[arg(
        id = "redis_pool_size",
        long = "redis-pool-size",
        env = "LLMJOBS_REDIS_POOL_SIZE",
        default_value_t = 32
    )]
    pub pool_size: usize,
}

impl Redis {
    /// True when no Redis is configured (an empty URL): the queue, the event log and the
    /// rate limits then run in process.
    pub fn in_process(&self) -> bool {
        self.url.trim().is_empty()
    }
}

/// The durable store: Postgres, or a SQLite file when no Postgres URL is configured. The
/// location flags are global: `llm-jobs keys create --sqlite-path F …` works as well as
/// `llm-jobs keys --sqlite-path F create …`.
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Store")]
pub struct Database {
    /// Where the store is: `postgres://…` (or `postgresql://…`) for Postgres, whose database
    /// is created at start-up when it does not exist; `sqlite://PATH` (or `sqlite:PATH`) for a
    /// SQLite file. Empty (the default): a SQLite file at `--sqlite-path`.
    #[arg(
        id = "database_url",
        long = "database-url",
        env = "DATABASE_URL",
        default_value = "",
        global = true,
        // Its password must not show in `--help`.
        hide_env_values = true
    )]
    pub url: String,
    /// The SQLite file used when `DATABASE_URL` is empty (created when missing).
    #[arg(
        long = "sqlite-path",
        env = "LLMJOBS_SQLITE_PATH",
        default_value = "llm-jobs.db",
        global = true
    )]
    pub sqlite_path: PathBuf,
    /// Pooled connections (Postgres; SQLite uses one connection).
    #[arg(
        id = "database_pool_size",
        long = "database-pool-size",
        env = "LLMJOBS_DATABASE_POOL_SIZE",
        default_value_t = 16
    )]
    pub pool_size: usize,
    /// Do not apply pending migrations at start-up (run `llm-jobs migrate` instead).
    #[arg(
        long = "no-migrate",
        env = "LLMJOBS_NO_MIGRATE",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub no_migrate: bool,
}

/// Which database [`Database`] names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// A Postgres URL.
    Postgres(String),
    /// A SQLite file.
    Sqlite(PathBuf),
}

impl Database {
    /// The database this configuration names.
    ///
    /// Errors: a URL of another scheme (the message names `DATABASE_URL` and the schemes
    /// understood), or `sqlite://` without a path.
    pub fn location(&self) -> Result<StoreLocation, String> {
        let url = self.url.trim();
        if url.is_empty() {
            return Ok(StoreLocation::Sqlite(self.sqlite_path.clone()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreLocation::Postgres(url.to_owned()));
        }
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err("DATABASE_URL: `sqlite://` needs a file path".into());
            }
            return Ok(StoreLocation::Sqlite(PathBuf::from(path)));
        }
        Err(format!(
            "DATABASE_URL must start with postgres://, postgresql:// or sqlite:// (or be empty \
             for a SQLite file at --sqlite-path); got {:?}",
            url.split("://").next().unwrap_or_default()
        ))
    }
}

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

/// What clients may submit (gateway).
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Jobs")]
pub struct Jobs {
    /// Model used when a job names none. Default: `gpt-4o-mini` with an API key, else `sim`.
    #[arg(long = "default-model", env = "LLMJOBS_DEFAULT_MODEL")]
    pub default_model: Option<String>,
    /// Attempts per job before it fails for good.
    #[arg(
        long = "max-attempts",
        env = "LLMJOBS_MAX_ATTEMPTS",
        default_value_t = 3
    )]
    pub max_attempts: u32,
    /// Largest `max_attempts` a job may ask for.
    #[arg(
        long = "max-attempts-cap",
        env = "LLMJOBS_MAX_ATTEMPTS_CAP",
        default_value_t = 10
    )]
    pub max_attempts_cap: u32,
    /// Largest `timeout_seconds` a job may ask for.
    #[arg(
        long = "job-timeout-cap-secs",
        env = "LLMJOBS_JOB_TIMEOUT_CAP_SECS",
        default_value_t = 3600
    )]
    pub job_timeout_cap_secs: u64,
    /// Most jobs one `SubmitBatch` may carry (a request message is also capped at 64 MiB).
    #[arg(
        long = "max-batch-jobs",
        env = "LLMJOBS_MAX_BATCH_JOBS",
        default_value_t = 1000,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub max_batch_jobs: usize,
    /// Input limits and the model allow-list.
    #[command(flatten)]
    pub limits: Limits,
}

impl Jobs {
    /// The model used when a job names none: `--default-model`, else `gpt-4o-mini` when
    /// `upstream` has an API key, else `sim`.
    pub fn default_model(&self, upstream: &Upstream) -> String {
        match (&self.default_model, &upstream.openai_api_key) {
            (Some(model), _) if !model.is_empty() => model.clone(),
            (_, Some(_)) => "gpt-4o-mini".to_owned(),
            _ => "sim".to_owned(),
        }
    }
}

/// Default of `LLMJOBS_EVENT_LOG_TTL_SECS`: how long a finished job's live keys stay.
pub const DEFAULT_EVENT_LOG_TTL_SECS: u64 = 120;

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
    /// Most jobs of one queue this worker runs at once (unset: no cap).
    #[arg(long = "queue-cap", env = "LLMJOBS_QUEUE_CAP")]
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

/// Where the upstream LLM is (both sides: workers call it, gateways accept only simulated
/// models when none is configured).
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Upstream")]
pub struct Upstream {
    /// API key of the OpenAI-compatible upstream. Without it, the default model is `sim`.
    #[arg(
        long = "openai-api-key",
        env = "OPENAI_API_KEY",
        hide_env_values = true
    )]
    pub openai_api_key: Option<SecretString>,
    /// Base URL of the OpenAI-compatible API (OpenAI, vLLM, Ollama, llama.cpp, OpenRouter, ...).
    #[arg(
        long = "openai-base-url",
        env = "OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    pub openai_base_url: String,
}

impl Upstream {
    /// Whether a real upstream is configured: an API key, or a base URL other than OpenAI's
    /// (local servers such as Ollama need no key). Without one only simulated models can run.
    pub fn configured(&self) -> bool {
        self.openai_api_key.is_some() || !self.openai_base_url.contains("api.openai.com")
    }
}

/// How the worker calls the upstream LLM and the simulator.
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Upstream")]
pub struct Provider {
    /// Simulated provider: time to first token (ms).
    #[arg(
        long = "sim-first-token-ms",
        env = "LLMJOBS_SIM_FIRST_TOKEN_MS",
        default_value_t = 200
    )]
    pub sim_first_token_ms: u64,
    /// Simulated provider: output tokens per second.
    #[arg(
        long = "sim-tokens-per-second",
        env = "LLMJOBS_SIM_TOKENS_PER_SECOND",
        default_value_t = 40.0
    )]
    pub sim_tokens_per_second: f64,
    /// Seconds to establish the upstream connection.
    #[arg(
        long = "upstream-connect-timeout-secs",
        env = "LLMJOBS_UPSTREAM_CONNECT_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub connect_timeout_secs: u64,
    /// JSON file of model prices (USD per million input/output tokens) that replaces or adds
    /// to the built-in table.
    #[arg(long = "pricing-file", env = "LLMJOBS_PRICING_FILE")]
    pub pricing_file: Option<std::path::PathBuf>,
    /// Upstream requests per minute per model, shared by every worker through Redis
    /// (0: no limit). Simulated models are not limited.
    #[arg(
        long = "upstream-rpm",
        env = "LLMJOBS_UPSTREAM_RPM",
        default_value_t = 0
    )]
    pub upstream_rpm: u64,
    /// Upstream tokens per minute per model (prompt estimate plus `max_tokens`, or 1,000 when
    /// unset), shared like `--upstream-rpm` (0: no limit).
    #[arg(
        long = "upstream-tpm",
        env = "LLMJOBS_UPSTREAM_TPM",
        default_value_t = 0
    )]
    pub upstream_tpm: u64,
    /// Per-model budgets `MODEL=RPM:TPM` overriding the two above (comma-separated).
    #[arg(
        long = "upstream-model-limit",
        env = "LLMJOBS_UPSTREAM_MODEL_LIMITS",
        value_delimiter = ',',
        value_parser = crate::ratelimit::upstream::parse_model_limits
    )]
    pub upstream_model_limits: Vec<(String, crate::ratelimit::upstream::Limits)>,
    /// The window the upstream budget is counted over (ms): a minute, shorter only in tests.
    #[arg(long = "upstream-window-ms", default_value_t = 60_000, hide = true)]
    pub upstream_window_ms: u64,
}

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

/// How prompts are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PromptStorage {
    /// As submitted.
    Full,
    /// With secrets masked (see `crate::redact`).
    Redacted,
    /// Only until the job ends.
    None,
}
