//! The scale curve: closed-loop clients (each streams one job after another with
//! `SubmitAndStream`, 16 tokens from the instant upstream, `REALTIME`) at each level for a fixed
//! time, on Redis + Postgres and embedded; jobs/s, time to first token and how busy the
//! machine's CPU was. The baseline of each level is the same clients streaming the upstream
//! directly for a shorter time.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use llm_jobs::proto::v1;

use crate::{
    INSTANT_MODEL, INSTANT_TOKENS, Run,
    bench_redis::BenchRedis,
    harness::{Client, Received, Summary, direct, expected_text, request, summary, through},
    meter::{Load, Participants, load, postgres::PgProbe},
    report::{Report, row},
    server::{Backend, Server, Store},
    upstream::TestUpstream,
};

/// Worker slots: more than the largest level, so no job waits for one.
const SLOTS: usize = 1200;
/// Clients per gRPC connection (as a client fleet would have).
const CLIENTS_PER_CONNECTION: usize = 50;
/// The level whose time to first token has a target, and the target (ms).
const TARGET_CLIENTS: usize = 200;
/// See [`TARGET_CLIENTS`].
const TARGET_TTFT_P50_MS: f64 = 50.0;

/// One level's figures.
struct Level {
    clients: usize,
    jobs: usize,
    jobs_per_s: f64,
    ttft: Summary,
    load: Load,
    direct_per_s: f64,
    direct_ttft: Summary,
}

/// Runs the scenario and adds its rows.
pub(crate) async fn run(
    upstream: &TestUpstream,
    redis: &BenchRedis,
    run: &Run,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut results = serde_json::Map::new();
    for (name, key, backend) in [
        (
            "Redis + Postgres",
            "redis_postgres",
            Backend::RedisPostgres {
                redis_url: redis.url().to_owned(),
            },
        ),
        ("embedded", "embedded", Backend::Embedded),
    ] {
        let server = Server::start(upstream, backend, SLOTS).await?;
        let levels = levels(&server, upstream, redis, run).await;
        server.stop().await?;
        let levels = levels?;
        add_rows(report, name, &levels);
        results.insert(
            key.into(),
            Value::Array(
                levels
                    .iter()
                    .map(|l| {
                        json!({"clients": l.clients, "jobs": l.jobs, "jobs_per_second": l.jobs_per_s,
                               "ttft_ms": [l.ttft.p50, l.ttft.p99], "machine_cpu": l.load,
                               "direct": {"streams_per_second": l.direct_per_s,
                                          "ttft_ms": [l.direct_ttft.p50, l.direct_ttft.p99]}})
                    })
                    .collect(),
            ),
        );
    }
    results.insert(
        "secs_per_level".into(),
        json!(run.scale.scale_level.as_secs_f64()),
    );
    report.raw.insert("scale".into(), Value::Object(results));
    Ok(())
}

async fn levels(
    server: &Server,
    upstream: &TestUpstream,
    redis: &BenchRedis,
    run: &Run,
) -> anyhow::Result<Vec<Level>> {
    let s = run.scale;
    let mut participants = match &server.store {
        Store::Postgres { database } => Participants::new(
            server.pid().into_iter().chain(redis.pid()),
            Some(PgProbe::connect(database).await?),
            vec![],
        ),
        Store::Sqlite { .. } => Participants::new(server.pid(), None, vec![]),
    };
    let most = s.scale_levels.iter().copied().max().unwrap_or(1);
    let mut clients = Vec::new();
    for _ in 0..most.div_ceil(CLIENTS_PER_CONNECTION) {
        clients.push(server.client().await?);
    }
    let http = reqwest::Client::new();
    // Unmeasured: connections, caches.
    closed_loop(&clients, most.min(10), s.scale_baseline).await?;
    let mut out = Vec::new();
    for &n in s.scale_levels {
        let (direct_runs, direct_secs) =
            closed_loop_direct(&http, &upstream.base_url(), n, s.scale_baseline).await?;
        let before = participants.sample().await?;
        let (runs, secs) = closed_loop(&clients, n, s.scale_level).await?;
        let level_load = load(&before, &participants.sample().await?);
        anyhow::ensure!(!runs.is_empty(), "no job completed at {n} clients");
        out.push(Level {
            clients: n,
            jobs: runs.len(),
            jobs_per_s: runs.len() as f64 / secs,
            ttft: summary(runs.iter().filter_map(Received::ttft_ms).collect()),
            load: level_load,
            direct_per_s: direct_runs.len() as f64 / direct_secs,
            direct_ttft: summary(direct_runs.iter().filter_map(Received::ttft_ms).collect()),
        });
    }
    Ok(out)
}

/// `n` clients, each streaming one job after another through llm-jobs until `length` has
/// passed (the job under way then finishes); every stream checked. Returns the streams and
/// the time until the last one ended.
async fn closed_loop(
    clients: &[Client],
    n: usize,
    length: Duration,
) -> anyhow::Result<(Vec<Received>, f64)> {
    let start = Instant::now();
    let until = start + length;
    let expected = expected_text(INSTANT_TOKENS);
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let c = clients[i % clients.len()].clone();
            let expected = expected.clone();
            tokio::spawn(async move {
                let mut runs = Vec::new();
                while Instant::now() < until {
                    let r = through(
                        c.clone(),
                        request(
                            format!("scale {i} {}", runs.len()),
                            INSTANT_MODEL,
                            v1::StreamingMode::Realtime,
                        ),
                    )
                    .await?;
                    anyhow::ensure!(r.terminal && r.text == expected, "a scale stream lost text");
                    runs.push(r);
                }
                Ok(runs)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((all, start.elapsed().as_secs_f64()))
}

/// The same as [`closed_loop`], straight from the upstream.
async fn closed_loop_direct(
    http: &reqwest::Client,
    base: &str,
    n: usize,
    length: Duration,
) -> anyhow::Result<(Vec<Received>, f64)> {
    let start = Instant::now();
    let until = start + length;
    let expected = expected_text(INSTANT_TOKENS);
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (http, base, expected) = (http.clone(), base.to_owned(), expected.clone());
            tokio::spawn(async move {
                let mut runs = Vec::new();
                while Instant::now() < until {
                    let r = direct(http.clone(), base.clone(), INSTANT_MODEL).await?;
                    anyhow::ensure!(
                        r.terminal && r.text == expected,
                        "a direct stream lost text"
                    );
                    runs.push(r);
                }
                Ok(runs)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((all, start.elapsed().as_secs_f64()))
}

fn add_rows(report: &mut Report, backend: &str, levels: &[Level]) {
    for l in levels {
        let target = l.clients == TARGET_CLIENTS;
        report.push(row(
            &format!("Scale, {backend}, {} clients", l.clients),
            "jobs/s; time to first token p50 / p99 (ms); machine CPU: this run + others",
            format!(
                "upstream direct: {:.0} streams/s; {:.2} / {:.2}",
                l.direct_per_s, l.direct_ttft.p50, l.direct_ttft.p99
            ),
            format!(
                "{:.0} jobs/s ({} jobs); {:.2} / {:.2}; {:.0} + {:.0} %",
                l.jobs_per_s,
                l.jobs,
                l.ttft.p50,
                l.ttft.p99,
                l.load.ours_percent,
                l.load.others_percent
            ),
            if target {
                "time to first token p50 ≤ 50 ms"
            } else {
                "-"
            },
            target.then_some(l.ttft.p50 <= TARGET_TTFT_P50_MS),
        ));
    }
    // Rising until the CPU is busy: each level at least 5 % above the one before, unless that
    // one already kept the CPU 90 % busy (then it must not fall by more than 10 %).
    let rises = levels.windows(2).all(|w| {
        w[1].jobs_per_s >= 1.05 * w[0].jobs_per_s
            || (w[0].load.busy_percent() >= 90.0 && w[1].jobs_per_s >= 0.9 * w[0].jobs_per_s)
    });
    let curve = |f: &dyn Fn(&Level) -> String| levels.iter().map(f).collect::<Vec<_>>().join(" → ");
    report.push(row(
        &format!("Scale, {backend}"),
        &format!("jobs/s at {} clients", curve(&|l| l.clients.to_string())),
        format!(
            "machine CPU, this run + others: {}",
            curve(&|l| format!(
                "{:.0} + {:.0} %",
                l.load.ours_percent, l.load.others_percent
            ))
        ),
        curve(&|l| format!("{:.0}", l.jobs_per_s)),
        "rises with clients until the CPU is busy (≥ 90 %)",
        (levels.len() > 1).then_some(rises),
    ));
}
