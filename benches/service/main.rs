//! The llm-jobs benchmark: a real `llm-jobs serve` process against real Redis and Postgres (or
//! embedded, with neither) and a fast OpenAI-compatible test upstream on loopback, driven by
//! this process as the client.
//!
//! `cargo bench --bench service` (or `scripts/bench`) runs the full scenarios of
//! BENCHMARKS.md and writes `target/bench/results.{md,json}`; under `cargo test` the same code
//! runs at a tiny scale as a smoke test that checks only that nothing is lost. Every timing
//! scenario measures its own baseline in the same run (the upstream streamed directly, the idle
//! server, or the BullMQ peer doing the same job on the same Redis), so the figures that matter
//! are differences and ratios, which hold across machines.
//!
//! Options (after `--`): `--quick` (the smoke scale), `--only a,b` (scenarios: idle, latency,
//! throughput, tokens, fanout, cancel, cost, scale, soak; a full run leaves the soak out unless
//! named), `--out DIR`.
//!
//! Environment: `LLMJOBS_TEST_REDIS_URL` and `LLMJOBS_TEST_POSTGRES_URL` (the services of the
//! first six scenarios; cost and scale start a Redis of their own when `redis-server` is on
//! `PATH`, see [`bench_redis`]), `LLMJOBS_BULLMQ_PEER` (the BullMQ peer's folder, see [`peer`]).
//!
//! Layout: [`harness`] (clients, requests, streams, percentiles), [`server`] (the process
//! under test), [`report`] (the results table), [`meter`] (CPU, Redis and Postgres counters),
//! then one module per scenario.

#[allow(dead_code, unreachable_pub)]
#[path = "../../tests/it/support/upstream.rs"]
mod upstream;

mod bench_redis;
mod cancel;
mod cost;
mod fanout;
mod harness;
mod idle;
mod latency;
mod meter;
mod peer;
mod report;
mod scale;
mod server;
mod soak;
mod throughput;
mod tokens;

use std::path::PathBuf;

use report::Report;
use server::{Backend, Server};
use upstream::{Reply, TestUpstream};

/// Scale of a run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scale {
    /// Concurrent streams of the added-latency levels.
    pub(crate) latency_concurrency: &'static [usize],
    /// Least streams measured per concurrency level (rounds of `n` are repeated up to it,
    /// after one unmeasured warm-up round).
    pub(crate) latency_samples: usize,
    /// Least measured bursts per added-latency level.
    pub(crate) latency_min_rounds: usize,
    /// Tokens per latency stream.
    pub(crate) latency_tokens: usize,
    /// Jobs of the throughput scenario.
    pub(crate) throughput_jobs: usize,
    /// Concurrent streams of the token-throughput scenario.
    pub(crate) token_streams: usize,
    /// Tokens per stream of the token-throughput scenario.
    pub(crate) tokens_per_stream: usize,
    /// Running jobs of the fan-out scenario.
    pub(crate) fanout_jobs: usize,
    /// Watchers per fan-out job.
    pub(crate) watchers_per_job: usize,
    /// Cancellations measured.
    pub(crate) cancels: usize,
    /// Length of the idle measurement.
    pub(crate) idle_secs: u64,
    /// Jobs measured per system in the cost scenario.
    pub(crate) cost_jobs: usize,
    /// Concurrent closed-loop callers of the cost scenario.
    pub(crate) cost_callers: usize,
    /// Worker slots of llm-jobs and the BullMQ worker's concurrency in the cost scenario.
    pub(crate) cost_slots: usize,
    /// Closed-loop client counts of the scale scenario.
    pub(crate) scale_levels: &'static [usize],
    /// How long each scale level runs through llm-jobs.
    pub(crate) scale_level: std::time::Duration,
    /// How long each scale level's baseline (the upstream streamed directly) runs.
    pub(crate) scale_baseline: std::time::Duration,
    /// Seconds of load of the soak (`LLMJOBS_SOAK_SECS` overrides).
    pub(crate) soak_secs: u64,
    /// Closed-loop clients of the soak (`LLMJOBS_SOAK_CLIENTS` overrides).
    pub(crate) soak_clients: usize,
    /// The soak server's finished-job window (`LLMJOBS_EVENT_LOG_TTL_SECS`); `None` keeps the
    /// server's default.
    pub(crate) soak_window_secs: Option<u64>,
}

const FULL: Scale = Scale {
    latency_concurrency: &[1, 100, 500],
    latency_samples: 30,
    latency_min_rounds: 5,
    latency_tokens: 50,
    throughput_jobs: 10_000,
    token_streams: 1_000,
    tokens_per_stream: 200,
    fanout_jobs: 100,
    watchers_per_job: 100,
    cancels: 50,
    idle_secs: 10,
    cost_jobs: 5_000,
    cost_callers: 64,
    cost_slots: 64,
    scale_levels: &[1, 10, 50, 200],
    scale_level: std::time::Duration::from_secs(5),
    scale_baseline: std::time::Duration::from_secs(1),
    soak_secs: 600,
    soak_clients: 100,
    soak_window_secs: None,
};

const QUICK: Scale = Scale {
    latency_concurrency: &[1, 4],
    latency_samples: 2,
    latency_min_rounds: 1,
    latency_tokens: 10,
    throughput_jobs: 40,
    token_streams: 8,
    tokens_per_stream: 20,
    fanout_jobs: 2,
    watchers_per_job: 5,
    cancels: 2,
    idle_secs: 1,
    cost_jobs: 40,
    cost_callers: 8,
    cost_slots: 8,
    scale_levels: &[1, 4],
    scale_level: std::time::Duration::from_millis(200),
    scale_baseline: std::time::Duration::from_millis(50),
    soak_secs: 3,
    soak_clients: 6,
    soak_window_secs: Some(2),
};

/// Time to first token of the latency streams (ms) and the gap between their tokens (ms).
pub(crate) const LATENCY_FIRST_MS: u64 = 20;
/// See [`LATENCY_FIRST_MS`].
pub(crate) const LATENCY_INTERVAL_MS: u64 = 5;
/// The upstream model that answers 16 tokens at once: the job of throughput, cost and scale.
pub(crate) const INSTANT_MODEL: &str = "bench-instant";
/// Tokens of an [`INSTANT_MODEL`] answer.
pub(crate) const INSTANT_TOKENS: usize = 16;

/// What this run does: its scale, whether it is the full one, which scenarios, where results go.
pub(crate) struct Run {
    /// Sizes of every scenario.
    pub(crate) scale: Scale,
    /// False for the smoke run (`cargo test`, `--quick`): targets are not judged.
    pub(crate) full: bool,
    /// Scenarios named with `--only`; `None` runs all.
    only: Option<Vec<String>>,
    /// Where results.md and results.json go.
    out: PathBuf,
}

impl Run {
    fn from_args(args: &[String]) -> Run {
        // `cargo bench` passes `--bench`; `cargo test` does not: then this is the smoke run.
        let full = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--quick");
        let value = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
        };
        Run {
            scale: if full { FULL } else { QUICK },
            full,
            only: value("--only").map(|s| s.split(',').map(str::to_owned).collect()),
            out: value("--out").map(PathBuf::from).unwrap_or_else(|| {
                PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench"))
            }),
        }
    }

    fn wanted(&self, name: &str) -> bool {
        match &self.only {
            Some(o) => o.iter().any(|s| s == name),
            // The soak runs for many minutes: a full run includes it only when named.
            None => !(self.full && name == "soak"),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let run = Run::from_args(&args);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_all(run))
}

async fn run_all(run: Run) -> anyhow::Result<()> {
    let scale = run.scale;
    let upstream = TestUpstream::start(Reply::slow(1, 0, 0)).await?;
    upstream.route(
        "bench-latency",
        Reply::slow(scale.latency_tokens, LATENCY_FIRST_MS, LATENCY_INTERVAL_MS),
    );
    upstream.route(INSTANT_MODEL, Reply::slow(INSTANT_TOKENS, 0, 0));
    upstream.route("bench-tokens", Reply::slow(scale.tokens_per_stream, 0, 0));
    upstream.route("bench-hold", Reply::slow(100_000, 0, 20));
    upstream.route(
        soak::MODEL,
        Reply::slow(soak::TOKENS, soak::FIRST_TOKEN_MS, soak::TOKEN_INTERVAL_MS),
    );
    let mut report = Report::default();

    // The first six scenarios share one server on the services of the test suite.
    const SHARED: [&str; 6] = [
        "idle",
        "latency",
        "throughput",
        "tokens",
        "fanout",
        "cancel",
    ];
    if SHARED.iter().any(|s| run.wanted(s)) {
        let server = Server::start(&upstream, Backend::shared_redis_postgres(), 1200).await?;
        if run.wanted("idle") {
            idle::run(&server, scale, &mut report).await?;
        }
        if run.wanted("latency") {
            latency::run(&server, &upstream, scale, &mut report).await?;
        }
        if run.wanted("throughput") {
            throughput::run(&server, scale, &mut report).await?;
        }
        if run.wanted("tokens") {
            tokens::run(&server, scale, &mut report).await?;
        }
        if run.wanted("fanout") {
            fanout::run(&server, &upstream, scale, &mut report).await?;
        }
        if run.wanted("cancel") {
            cancel::run(&server, &upstream, scale, &mut report).await?;
        }
        server.stop().await?;
    }

    // Cost and scale start servers of their own on a Redis of their own, so that its counters
    // see nothing but the system being measured.
    if run.wanted("cost") || run.wanted("scale") {
        let redis = bench_redis::BenchRedis::start().await?;
        let result = async {
            if run.wanted("cost") {
                cost::run(&upstream, &redis, &run, &mut report).await?;
            }
            if run.wanted("scale") {
                scale::run(&upstream, &redis, &run, &mut report).await?;
            }
            anyhow::Ok(())
        }
        .await;
        redis.stop().await;
        result?;
    }

    if run.wanted("soak") {
        let redis = bench_redis::BenchRedis::start().await?;
        let result = soak::run(&upstream, &redis, &run, &mut report).await;
        redis.stop().await;
        result?;
    }

    report.write(run.full, &run.out)
}
