//! The listeners' settings: the gateway's gRPC listener ([`Server`]: address, connection
//! limits, stream pacing, CORS) and every process's admin HTTP listener ([`Metrics`]).
//!
//! Environment variables read here: `LLMJOBS_LISTEN`, `LLMJOBS_STREAM_HEARTBEAT_SECS`,
//! `LLMJOBS_STREAM_STALL_SECS`, `LLMJOBS_MAX_CONNECTIONS`, `LLMJOBS_HANDSHAKE_TIMEOUT_MS`,
//! `LLMJOBS_HTTP2_KEEPALIVE_SECS`, `LLMJOBS_HTTP2_KEEPALIVE_TIMEOUT_SECS`,
//! `LLMJOBS_CORS_ALLOWED_ORIGINS`, `LLMJOBS_METRICS_LISTEN`.

use std::net::SocketAddr;

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
