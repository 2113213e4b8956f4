//! The llm-jobs benchmark: a real `llm-jobs serve` process against real Redis and Postgres and
//! a fast OpenAI-compatible test upstream on loopback, driven by this process as the client.
//!
//! `cargo bench --bench service` (or `scripts/bench`) runs the full scenarios of
//! BENCHMARKS.md and writes `target/bench/results.{md,json}`; under `cargo test` the same code
//! runs at a tiny scale as a smoke test that checks only that nothing is lost. Every timing
//! scenario measures its own baseline in the same run (the upstream streamed directly, or the
//! idle server), so the figures that matter are differences, which hold across machines.
//!
//! Options (after `--`): `--quick` (the smoke scale), `--only a,b` (scenarios: idle, latency,
//! throughput, tokens, fanout, cancel), `--out DIR`.

#[allow(dead_code, unreachable_pub)]
#[path = "../tests/it/support/upstream.rs"]
mod upstream;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use futures::StreamExt;
use llm_jobs::proto::v1::{self, job_event::Kind, job_service_client::JobServiceClient};
use serde_json::{Value, json};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::interceptor::InterceptedService,
    transport::Channel,
};

/// Adds the benchmark's API key to every request, as any client of a server with auth on.
#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

type Client = JobServiceClient<InterceptedService<Channel, Bearer>>;
use upstream::{Reply, TestUpstream};

/// Scale of a run.
#[derive(Clone, Copy, Debug)]
struct Scale {
    latency_concurrency: &'static [usize],
    /// Least streams measured per concurrency level (rounds of `n` are repeated up to it,
    /// after one unmeasured warm-up round).
    latency_samples: usize,
    latency_tokens: usize,
    throughput_jobs: usize,
    token_streams: usize,
    tokens_per_stream: usize,
    fanout_jobs: usize,
    watchers_per_job: usize,
    cancels: usize,
    idle_secs: u64,
}

const FULL: Scale = Scale {
    latency_concurrency: &[1, 100, 500],
    latency_samples: 30,
    latency_tokens: 50,
    throughput_jobs: 10_000,
    token_streams: 1_000,
    tokens_per_stream: 200,
    fanout_jobs: 100,
    watchers_per_job: 100,
    cancels: 50,
    idle_secs: 10,
};

const QUICK: Scale = Scale {
    latency_concurrency: &[1, 4],
    latency_samples: 2,
    latency_tokens: 10,
    throughput_jobs: 40,
    token_streams: 8,
    tokens_per_stream: 20,
    fanout_jobs: 2,
    watchers_per_job: 5,
    cancels: 2,
    idle_secs: 1,
};

/// Time to first token of the latency streams (ms) and the gap between their tokens (ms).
const LATENCY_FIRST_MS: u64 = 20;
const LATENCY_INTERVAL_MS: u64 = 5;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; `cargo test` does not: then this is the smoke run.
    let full = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--quick");
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').map(str::to_owned).collect());
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench")));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(if full { FULL } else { QUICK }, full, only, out))
}

/// A percentile summary of samples in ms.
#[derive(Clone, Copy, Debug, Default)]
struct Summary {
    p50: f64,
    p99: f64,
}

fn summary(mut v: Vec<f64>) -> Summary {
    if v.is_empty() {
        return Summary::default();
    }
    v.sort_by(f64::total_cmp);
    let q = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Summary {
        p50: q(0.50),
        p99: q(0.99),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One row of the results table.
struct Row {
    scenario: String,
    metric: String,
    baseline: String,
    measured: String,
    target: String,
    met: Option<bool>,
}

fn row(
    scenario: &str,
    metric: &str,
    baseline: impl Into<String>,
    measured: impl Into<String>,
    target: &str,
    met: Option<bool>,
) -> Row {
    Row {
        scenario: scenario.into(),
        metric: metric.into(),
        baseline: baseline.into(),
        measured: measured.into(),
        target: target.into(),
        met,
    }
}

/// The service under test: a child `llm-jobs serve` process.
struct Server {
    child: tokio::process::Child,
    addr: String,
    database: String,
    bearer: Bearer,
}

impl Server {
    async fn start(upstream: &TestUpstream) -> anyhow::Result<Server> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let database = format!("llmjobs_bench_{id}");
        let pg = std::env::var("LLMJOBS_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let redis = std::env::var("LLMJOBS_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
            .arg("serve")
            .env("LLMJOBS_LISTEN", &addr)
            .env("DATABASE_URL", format!("{pg}/{database}"))
            .env("REDIS_URL", redis)
            .env("LLMJOBS_REDIS_PREFIX", format!("bench-{id}"))
            .env("OPENAI_API_KEY", "sk-bench")
            .env("OPENAI_BASE_URL", upstream.base_url())
            .env("LLMJOBS_WORKER_CONCURRENCY", "1200")
            .env("LLMJOBS_DATABASE_POOL_SIZE", "32")
            .env("LLMJOBS_REDIS_POOL_SIZE", "64")
            // Auth stays on, as in production; the benchmark's key has no client limits.
            .env("LLMJOBS_CLIENT_REQUESTS_PER_MINUTE", "0")
            .env("LLMJOBS_CLIENT_MAX_CONCURRENT_JOBS", "0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start llm-jobs serve")?;
        let mut server = Server {
            child,
            addr,
            database: database.clone(),
            bearer: Bearer(MetadataValue::from_static("Bearer none")),
        };
        server.wait_until_serving().await?;
        let key = std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
            .args(["keys", "create", "--tenant", "bench", "--role", "admin"])
            .env("DATABASE_URL", format!("{pg}/{database}"))
            .output()
            .context("cannot run llm-jobs keys create")?;
        anyhow::ensure!(key.status.success(), "keys create failed: {key:?}");
        let key = String::from_utf8(key.stdout)?;
        server.bearer = Bearer(format!("Bearer {}", key.trim()).parse()?);
        Ok(server)
    }

    async fn wait_until_serving(&self) -> anyhow::Result<()> {
        use tonic_health::pb::{
            HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(ch) = self.channel().await {
                let ok = HealthClient::new(ch)
                    .check(HealthCheckRequest::default())
                    .await
                    .is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving);
                if ok {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the server did not become ready")
    }

    async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))?
                .connect()
                .await?,
        )
    }

    async fn client(&self) -> anyhow::Result<Client> {
        Ok(JobServiceClient::with_interceptor(
            self.channel().await?,
            self.bearer.clone(),
        ))
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Resident memory (KiB) from /proc/PID/status.
    fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// User + system CPU time so far (clock ticks of 10 ms).
    fn cpu_ticks(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        let rest = &stat[stat.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.pid() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
        let _ = self.child.kill().await;
        let pg = std::env::var("LLMJOBS_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        use diesel_async::{AsyncConnection, RunQueryDsl};
        if let Ok(mut conn) =
            diesel_async::AsyncPgConnection::establish(&format!("{pg}/postgres")).await
        {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.database
            ))
            .execute(&mut conn)
            .await;
        }
        Ok(())
    }
}

fn request(prompt: String, model: &str, mode: v1::StreamingMode) -> v1::SubmitJobRequest {
    v1::SubmitJobRequest {
        prompt,
        generation_config: Some(v1::GenerationConfig {
            model: model.into(),
            ..Default::default()
        }),
        streaming_mode: mode.into(),
        ..Default::default()
    }
}

/// What one stream delivered: arrival times of its text chunks and the text.
#[derive(Default)]
struct Received {
    start: Option<Instant>,
    tokens: Vec<Instant>,
    text: String,
    terminal: bool,
}

impl Received {
    fn ttft_ms(&self) -> Option<f64> {
        Some(ms(*self.tokens.first()? - self.start?))
    }
    fn gaps_ms(&self) -> impl Iterator<Item = f64> + '_ {
        self.tokens.windows(2).map(|w| ms(w[1] - w[0]))
    }
}

/// Streams `model` straight from the upstream (the baseline).
async fn direct(http: reqwest::Client, base: String, model: &str) -> anyhow::Result<Received> {
    let mut r = Received {
        start: Some(Instant::now()),
        ..Default::default()
    };
    let resp = http
        .post(format!("{base}/chat/completions"))
        .header("content-type", "application/json")
        .body(
            json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "x"}]})
                .to_string(),
        )
        .send()
        .await?;
    let mut body = resp.bytes_stream();
    let mut buf = Vec::new();
    while let Some(piece) = body.next().await {
        buf.extend_from_slice(&piece?);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            let line = String::from_utf8_lossy(&event);
            let Some(data) = line.trim().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                r.terminal = true;
                continue;
            }
            let v: Value = serde_json::from_str(data)?;
            if let Some(t) = v["choices"][0]["delta"]["content"].as_str()
                && !t.is_empty()
            {
                r.tokens.push(Instant::now());
                r.text.push_str(t);
            }
        }
    }
    Ok(r)
}

/// Submits and streams one job through llm-jobs.
async fn through(mut c: Client, req: v1::SubmitJobRequest) -> anyhow::Result<Received> {
    let mut r = Received {
        start: Some(Instant::now()),
        ..Default::default()
    };
    let mut s = c.submit_and_stream(req).await?.into_inner();
    while let Some(ev) = s.message().await? {
        match ev.kind {
            Some(Kind::TokenDelta(d)) if !d.text.is_empty() => {
                r.tokens.push(Instant::now());
                r.text.push_str(&d.text);
            }
            Some(Kind::Started(s)) if s.attempt > 1 => r.text.clear(),
            Some(Kind::Completed(_) | Kind::Failed(_) | Kind::Cancelled(_)) => r.terminal = true,
            _ => {}
        }
    }
    Ok(r)
}

fn expected_text(tokens: usize) -> String {
    (0..tokens).map(|i| format!("tok{i} ")).collect()
}

async fn run(
    scale: Scale,
    full: bool,
    only: Option<Vec<String>>,
    out: PathBuf,
) -> anyhow::Result<()> {
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|s| s == name));
    let upstream = TestUpstream::start(Reply::slow(1, 0, 0)).await?;
    upstream.route(
        "bench-latency",
        Reply::slow(scale.latency_tokens, LATENCY_FIRST_MS, LATENCY_INTERVAL_MS),
    );
    upstream.route("bench-instant", Reply::slow(16, 0, 0));
    upstream.route("bench-tokens", Reply::slow(scale.tokens_per_stream, 0, 0));
    upstream.route("bench-hold", Reply::slow(100_000, 0, 20));
    let mut rows = Vec::new();
    let mut raw = BTreeMap::new();

    let server = Server::start(&upstream).await?;
    if wanted("idle") {
        idle(&server, scale, &mut rows, &mut raw).await?;
    }
    if wanted("latency") {
        latency(&server, &upstream, scale, &mut rows, &mut raw).await?;
    }
    if wanted("throughput") {
        throughput(&server, scale, &mut rows, &mut raw).await?;
    }
    if wanted("tokens") {
        tokens(&server, scale, &mut rows, &mut raw).await?;
    }
    if wanted("fanout") {
        fanout(&server, &upstream, scale, &mut rows, &mut raw).await?;
    }
    if wanted("cancel") {
        cancel(&server, &upstream, scale, &mut rows, &mut raw).await?;
    }
    server.stop().await?;

    let machine = machine();
    let mut md = format!(
        "Machine: {machine}. Scale: {}. llm-jobs {} (`{}` profile).\n\n",
        if full { "full" } else { "quick (smoke)" },
        env!("CARGO_PKG_VERSION"),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    md.push_str(
        "| Scenario | Metric | Baseline | llm-jobs | Target | Met |\n|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.scenario,
            r.metric,
            r.baseline,
            r.measured,
            r.target,
            // Targets are for the full scale on a release build; a smoke run judges nothing.
            match (full, r.met) {
                (true, Some(true)) => "yes",
                (true, Some(false)) => "**no**",
                _ => "-",
            }
        ));
    }
    println!("\n{md}");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("results.md"), &md)?;
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&json!({"machine": machine, "full": full, "scenarios": raw}))?,
    )?;
    eprintln!("wrote {}", out.join("results.md").display());
    Ok(())
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or("?".to_owned(), |kib| {
            format!("{:.1} GiB", kib as f64 / 1048576.0)
        });
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores ({cpu}), {mem} memory")
}

async fn idle(
    server: &Server,
    scale: Scale,
    rows: &mut Vec<Row>,
    raw: &mut BTreeMap<String, Value>,
) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = server.cpu_ticks().unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(scale.idle_secs)).await;
    let busy_ms = (server.cpu_ticks().unwrap_or(0).saturating_sub(t0)) as f64 * 10.0;
    let cpu = 100.0 * busy_ms / (scale.idle_secs as f64 * 1000.0);
    let rss_mib = server.rss_kib().unwrap_or(0) as f64 / 1024.0;
    rows.push(row(
        "Idle",
        "resident memory",
        "-",
        format!("{rss_mib:.1} MiB"),
        "≤ 64 MiB",
        Some(rss_mib <= 64.0),
    ));
    rows.push(row(
        "Idle",
        &format!("CPU over {} s", scale.idle_secs),
        "-",
        format!("{cpu:.2} %"),
        "~0 (no busy polling)",
        Some(cpu < 1.0),
    ));
    raw.insert(
        "idle".into(),
        json!({"rss_mib": rss_mib, "cpu_percent": cpu, "secs": scale.idle_secs}),
    );
    Ok(())
}

async fn latency(
    server: &Server,
    upstream: &TestUpstream,
    scale: Scale,
    rows: &mut Vec<Row>,
    raw: &mut BTreeMap<String, Value>,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().build()?;
    let expected = expected_text(scale.latency_tokens);
    let mut results = Vec::new();
    for &n in scale.latency_concurrency {
        // A connection per 50 streams, as a client fleet would have.
        let mut channels = Vec::new();
        for _ in 0..n.div_ceil(50) {
            channels.push(server.client().await?);
        }
        // One unmeasured round first (connections, caches), then enough rounds of `n` for
        // at least `latency_samples` streams each way.
        let rounds = 1 + scale.latency_samples.div_ceil(n);
        let (mut directs, mut throughs) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let d = futures::future::join_all(
                (0..n).map(|_| direct(http.clone(), upstream.base_url(), "bench-latency")),
            )
            .await;
            let t = futures::future::join_all((0..n).map(|i| {
                through(
                    channels[i % channels.len()].clone(),
                    request(
                        format!("latency {round} {i}"),
                        "bench-latency",
                        v1::StreamingMode::Realtime,
                    ),
                )
            }))
            .await;
            let d: Vec<Received> = d.into_iter().collect::<Result<_, _>>()?;
            let t: Vec<Received> = t.into_iter().collect::<Result<_, _>>()?;
            if round > 0 {
                directs.extend(d);
                throughs.extend(t);
            }
        }
        for r in directs.iter().chain(&throughs) {
            anyhow::ensure!(
                r.terminal && r.text == expected,
                "a latency stream lost text"
            );
        }
        let d_ttft = summary(directs.iter().filter_map(Received::ttft_ms).collect());
        let t_ttft = summary(throughs.iter().filter_map(Received::ttft_ms).collect());
        let d_itl = summary(directs.iter().flat_map(Received::gaps_ms).collect());
        let t_itl = summary(throughs.iter().flat_map(Received::gaps_ms).collect());
        let check = n == 500;
        let added = |a: f64, b: f64| b - a;
        rows.push(row(
            &format!("Added latency, {n} streams"),
            "time to first token p50 / p99 (ms)",
            format!("{:.2} / {:.2}", d_ttft.p50, d_ttft.p99),
            format!(
                "{:.2} / {:.2} (+{:.2} / +{:.2})",
                t_ttft.p50,
                t_ttft.p99,
                added(d_ttft.p50, t_ttft.p50),
                added(d_ttft.p99, t_ttft.p99)
            ),
            "added ≤ 2 / ≤ 10",
            Some(added(d_ttft.p50, t_ttft.p50) <= 2.0 && added(d_ttft.p99, t_ttft.p99) <= 10.0),
        ));
        rows.push(row(
            &format!("Added latency, {n} streams"),
            "inter-token latency p50 / p99 (ms)",
            format!("{:.2} / {:.2}", d_itl.p50, d_itl.p99),
            format!(
                "{:.2} / {:.2} (+{:.2} / +{:.2})",
                t_itl.p50,
                t_itl.p99,
                added(d_itl.p50, t_itl.p50),
                added(d_itl.p99, t_itl.p99)
            ),
            if check { "added ≤ 1 / ≤ 5" } else { "-" },
            check.then_some(
                added(d_itl.p50, t_itl.p50) <= 1.0 && added(d_itl.p99, t_itl.p99) <= 5.0,
            ),
        ));
        results.push(json!({
            "streams": n,
            "direct": {"ttft_ms": [d_ttft.p50, d_ttft.p99], "itl_ms": [d_itl.p50, d_itl.p99]},
            "llm_jobs": {"ttft_ms": [t_ttft.p50, t_ttft.p99], "itl_ms": [t_itl.p50, t_itl.p99]},
        }));
    }
    raw.insert("latency".into(), Value::Array(results));
    Ok(())
}

async fn throughput(
    server: &Server,
    scale: Scale,
    rows: &mut Vec<Row>,
    raw: &mut BTreeMap<String, Value>,
) -> anyhow::Result<()> {
    let n = scale.throughput_jobs;
    let client = server.client().await?;
    let start = Instant::now();
    let submitted = Arc::new(std::sync::Mutex::new(Vec::with_capacity(n)));
    let in_flight = 128.min(n);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (mut c, next, submitted) = (client.clone(), next.clone(), submitted.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                let job = c
                    .submit_job(request(
                        format!("job {i}"),
                        "bench-instant",
                        v1::StreamingMode::Buffered,
                    ))
                    .await?
                    .into_inner()
                    .job
                    .context("no job")?;
                submitted
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(job.id);
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let submit_secs = start.elapsed().as_secs_f64();
    // Completed jobs, counted by listing (newest first) until every job is done.
    let mut c = client.clone();
    let deadline = Instant::now() + Duration::from_secs(600);
    let done_at = loop {
        let completed = count_completed(&mut c, n).await?;
        if completed >= n {
            break start.elapsed().as_secs_f64();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {completed} of {n} jobs completed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rate = n as f64 / done_at;
    rows.push(row(
        "Job throughput",
        &format!("{n} jobs of 16 tokens, submitted and completed"),
        format!("submit alone: {:.0} jobs/s", n as f64 / submit_secs),
        format!("{rate:.0} jobs/s ({done_at:.1} s)"),
        "≥ 2000 jobs/s",
        Some(rate >= 2000.0),
    ));
    raw.insert(
        "throughput".into(),
        json!({"jobs": n, "submit_secs": submit_secs, "completed_secs": done_at, "jobs_per_second": rate}),
    );
    Ok(())
}

/// Completed jobs among the newest `n` (paging through ListJobs).
async fn count_completed(c: &mut Client, n: usize) -> anyhow::Result<usize> {
    let mut completed = 0;
    let mut page_token = String::new();
    let mut seen = 0;
    while seen < n {
        let page = c
            .list_jobs(v1::ListJobsRequest {
                page_size: 1000,
                page_token,
                status: v1::JobStatus::Completed.into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        seen += page.jobs.len();
        completed += page.jobs.len();
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(completed)
}

async fn tokens(
    server: &Server,
    scale: Scale,
    rows: &mut Vec<Row>,
    raw: &mut BTreeMap<String, Value>,
) -> anyhow::Result<()> {
    let n = scale.token_streams;
    let expected = expected_text(scale.tokens_per_stream);
    let mut results = serde_json::Map::new();
    for (mode, name, target) in [
        (v1::StreamingMode::Buffered, "BUFFERED", 200_000.0),
        (v1::StreamingMode::Realtime, "REALTIME", 50_000.0),
    ] {
        let mut channels = Vec::new();
        for _ in 0..n.div_ceil(50) {
            channels.push(server.client().await?);
        }
        let start = Instant::now();
        let all = futures::future::join_all((0..n).map(|i| {
            through(
                channels[i % channels.len()].clone(),
                request(format!("tokens {i}"), "bench-tokens", mode),
            )
        }))
        .await;
        let secs = start.elapsed().as_secs_f64();
        let all: Vec<Received> = all.into_iter().collect::<Result<_, _>>()?;
        let intact = all
            .iter()
            .filter(|r| r.terminal && r.text == expected)
            .count();
        anyhow::ensure!(
            intact == n,
            "{} of {n} streams lost or changed text",
            n - intact
        );
        let total = (n * scale.tokens_per_stream) as f64;
        let rate = total / secs;
        rows.push(row(
            &format!("Token throughput, {name}"),
            &format!(
                "{n} streams × {} tokens, all checked",
                scale.tokens_per_stream
            ),
            "-",
            format!("{rate:.0} tokens/s ({secs:.2} s)"),
            &format!("≥ {target:.0} tokens/s"),
            Some(rate >= target),
        ));
        results.insert(
            name.into(),
            json!({"streams": n, "tokens": total, "secs": secs, "tokens_per_second": rate}),
        );
    }
    raw.insert("tokens".into(), Value::Object(results));
    Ok(())
}

async fn fanout(
    server: &Server,
    upstream: &TestUpstream,
    scale: Scale,
    rows: &mut Vec<Row>,
    raw: &mut BTreeMap<String, Value>,
) -> anyhow::Result<()> {
    // Jobs that wait 3 s for their first token (watchers attach meanwhile), then stream 100
    // tokens 20 ms apart.
    upstream.route("bench-fanout", Reply::slow(100, 3000, 20));
    let mut c = server.client().await?;
    let mut ids = Vec::new();
    for i in 0..scale.fanout_jobs {
        let job = c
            .submit_job(request(
                format!("fanout {i}"),
                "bench-fanout",
                v1::StreamingMode::Realtime,
            ))
            .await?
            .into_inner()
            .job
            .context("no job")?;
        ids.push(job.id);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = server.rss_kib().unwrap_or(0);
    let watchers = scale.fanout_jobs * scale.watchers_per_job;
    let mut channels = Vec::new();
    for _ in 0..watchers.div_ceil(100) {
        channels.push(server.client().await?);
    }
    let attached = Arc::new(tokio::sync::Barrier::new(watchers + 1));
    let mut tasks = Vec::new();
    for w in 0..watchers {
        let mut c = channels[w % channels.len()].clone();
        let id = ids[w % ids.len()].clone();
        let attached = attached.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = c
                .stream_job(v1::StreamJobRequest {
                    job_id: id,
                    after_sequence: 0,
                })
                .await?
                .into_inner();
            attached.wait().await;
            let mut lags = Vec::new();
            let mut last = 0;
            let mut ended = false;
            while let Some(ev) = s.message().await? {
                let now = chrono::Utc::now();
                if ev
                    .kind
                    .as_ref()
                    .is_some_and(|k| !matches!(k, Kind::Heartbeat(_)))
                {
                    anyhow::ensure!(ev.sequence == last + 1, "gap after {last}");
                    last = ev.sequence;
                }
                if let (Some(Kind::TokenDelta(_)), Some(t)) = (&ev.kind, ev.time) {
                    let sent = chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32)
                        .context("time")?;
                    lags.push((now - sent).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                }
                if matches!(
                    ev.kind,
                    Some(Kind::Completed(_) | Kind::Failed(_) | Kind::Cancelled(_))
                ) {
                    ended = true;
                }
            }
            anyhow::ensure!(ended, "a watcher's stream ended without the terminal event");
            Ok::<_, anyhow::Error>((last, lags))
        }));
    }
    attached.wait().await;
    let rss_after = server.rss_kib().unwrap_or(0);
    let mut lags = Vec::new();
    let mut complete = 0;
    for t in tasks {
        let (last, l) = t.await??;
        if last > 0 {
            complete += 1;
        }
        lags.extend(l);
    }
    anyhow::ensure!(
        complete == watchers,
        "only {complete} of {watchers} watchers got everything"
    );
    let lag = summary(lags);
    let per_watcher_kib = (rss_after.saturating_sub(rss_before)) as f64 / watchers as f64;
    rows.push(row(
        &format!("Fan-out, {watchers} watchers of {} jobs", scale.fanout_jobs),
        "every watcher got every event; delivery lag p50 / p99 (ms)",
        "-",
        format!("all {watchers}; {:.2} / {:.2}", lag.p50, lag.p99),
        "lag p99 ≤ 50",
        Some(lag.p99 <= 50.0),
    ));
    rows.push(row(
        &format!("Fan-out, {watchers} watchers of {} jobs", scale.fanout_jobs),
        "gateway memory per watcher",
        format!("{:.1} MiB before", rss_before as f64 / 1024.0),
        format!(
            "{per_watcher_kib:.1} KiB ({:.1} MiB with all attached)",
            rss_after as f64 / 1024.0
        ),
        "≤ 32 KiB",
        Some(per_watcher_kib <= 32.0),
    ));
    raw.insert(
        "fanout".into(),
        json!({"watchers": watchers, "jobs": scale.fanout_jobs, "lag_ms": [lag.p50, lag.p99],
               "rss_before_kib": rss_before, "rss_after_kib": rss_after, "kib_per_watcher": per_watcher_kib}),
    );
    Ok(())
}

async fn cancel(
    server: &Server,
    upstream: &TestUpstream,
    scale: Scale,
    rows: &mut Vec<Row>,
    raw: &mut BTreeMap<String, Value>,
) -> anyhow::Result<()> {
    let mut c = server.client().await?;
    let (mut from_call, mut from_return) = (Vec::new(), Vec::new());
    for i in 0..scale.cancels {
        let before = upstream.disconnects();
        let mut s = c
            .submit_and_stream(request(
                format!("cancel {i}"),
                "bench-hold",
                v1::StreamingMode::Realtime,
            ))
            .await?
            .into_inner();
        // Wait for the first token: the upstream request is open.
        let mut job_id = String::new();
        while let Some(ev) = s.message().await? {
            job_id = ev.job_id.clone();
            if matches!(ev.kind, Some(Kind::TokenDelta(_))) {
                break;
            }
        }
        let called = Instant::now();
        c.cancel_job(v1::CancelJobRequest {
            job_id,
            reason: "bench".into(),
        })
        .await?;
        let returned = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(10);
        while upstream.disconnects() <= before {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the upstream request stayed open"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let closed = Instant::now();
        from_call.push(ms(closed - called));
        from_return.push(ms(closed.saturating_duration_since(returned)));
        drop(s);
    }
    let call = summary(from_call);
    let ret = summary(from_return);
    rows.push(row(
        "Cancellation",
        "CancelJob returned → upstream connection closed, p50 / p99 (ms)",
        format!("from the call: {:.2} / {:.2}", call.p50, call.p99),
        format!("{:.2} / {:.2}", ret.p50, ret.p99),
        "p99 ≤ 50",
        Some(ret.p99 <= 50.0),
    ));
    raw.insert(
        "cancel".into(),
        json!({"n": scale.cancels, "from_call_ms": [call.p50, call.p99], "from_return_ms": [ret.p50, ret.p99]}),
    );
    Ok(())
}
