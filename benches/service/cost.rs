//! Cost of a job, side by side: the same closed-loop run (jobs of 16 tokens from the instant
//! upstream, `SubmitJob` one at a time by concurrent callers, until all are completed in the
//! store) through llm-jobs on Redis + Postgres, through llm-jobs embedded, and through the
//! BullMQ peer on the same Redis ([`crate::peer`]). For each: end-to-end jobs/s, CPU time per
//! job of every server process, Redis commands per job (`INFO commandstats`, commands inside
//! scripts included) and Postgres transactions (and statements, when countable) per job.
//!
//! Jobs are `REALTIME` (one event per token), as the peer publishes one progress update per
//! token. llm-jobs gets as many worker slots as the peer's worker has concurrency. Each
//! llm-jobs server is new and first runs one round of unmeasured jobs (connections, caches);
//! the benchmark waits by counting finished jobs in the store itself, and leaves that
//! connection's backend and transactions out of Postgres's figures.

mod rows;

use std::{collections::BTreeMap, time::Duration};

use llm_jobs::proto::v1;

use crate::{
    INSTANT_MODEL, INSTANT_TOKENS, Run,
    bench_redis::BenchRedis,
    harness::submit_closed_loop,
    meter::{
        Load, Participants, RedisCost, RedisProbe, cpu_delta, load,
        postgres::{PgProbe, STATS_FLUSH},
        redis_cost,
        store::StoreCounter,
    },
    peer,
    report::Report,
    server::{Backend, Server, Store},
    upstream::TestUpstream,
};

/// Longest wait for a run's jobs to complete.
const COMPLETION_TIMEOUT: Duration = Duration::from_secs(600);

/// What one llm-jobs server did for the measured jobs.
#[derive(Debug)]
pub(crate) struct Measured {
    /// Jobs measured.
    pub(crate) jobs: usize,
    /// From the first submit to the moment all were seen completed in the store.
    pub(crate) secs: f64,
    /// CPU time of the llm-jobs process (ms).
    pub(crate) server_cpu_ms: f64,
    /// Redis's work (Redis + Postgres only).
    pub(crate) redis: Option<RedisCost>,
    /// Postgres's work (Redis + Postgres only).
    pub(crate) postgres: Option<PgCost>,
    /// How busy the machine was, by the participants and by everything else.
    pub(crate) load: Load,
}

impl Measured {
    /// End-to-end jobs per second.
    pub(crate) fn jobs_per_s(&self) -> f64 {
        self.jobs as f64 / self.secs
    }
}

/// What Postgres did for the measured jobs of one server.
#[derive(Debug)]
pub(crate) struct PgCost {
    /// Transactions on the server's database, the benchmark's own left out.
    pub(crate) xacts: i64,
    /// Statements on it, the benchmark's own left out; else why they are not counted.
    pub(crate) statements: Result<i64, String>,
    /// CPU time of the Postgres processes (ms).
    pub(crate) cpu_ms: f64,
}

/// Runs the scenario and adds its rows.
pub(crate) async fn run(
    upstream: &TestUpstream,
    redis: &BenchRedis,
    run: &Run,
    report: &mut Report,
) -> anyhow::Result<()> {
    let s = run.scale;
    let redis_postgres = measure(
        upstream,
        Backend::RedisPostgres {
            redis_url: redis.url().to_owned(),
        },
        redis,
        run,
    )
    .await?;
    let embedded = measure(upstream, Backend::Embedded, redis, run).await?;
    let base = upstream.base_url();
    let job = peer::Job {
        jobs: s.cost_jobs,
        callers: s.cost_callers,
        concurrency: s.cost_slots,
        upstream: &base,
        model: INSTANT_MODEL,
        tokens: INSTANT_TOKENS,
    };
    let bullmq = peer::run(redis, &job, run.full).await;
    rows::add(
        report,
        &rows::Figures {
            scale: s,
            redis_private: redis.private(),
            redis_postgres: &redis_postgres,
            embedded: &embedded,
            bullmq: &bullmq,
        },
    );
    Ok(())
}

/// Starts a server on `backend`, measures it, and stops it.
async fn measure(
    upstream: &TestUpstream,
    backend: Backend,
    redis: &BenchRedis,
    run: &Run,
) -> anyhow::Result<Measured> {
    let server = Server::start(upstream, backend, run.scale.cost_slots).await?;
    let measured = measure_on(&server, redis, run).await;
    server.stop().await?;
    measured
}

async fn measure_on(server: &Server, redis: &BenchRedis, run: &Run) -> anyhow::Result<Measured> {
    let (n, callers) = (run.scale.cost_jobs, run.scale.cost_callers);
    let client = server.client().await?;
    let mut counter = StoreCounter::open(&server.store).await?;
    let ours: Vec<u32> = counter.backend_pid().into_iter().collect();
    let (mut redis_probe, mut pg, mut participants) = match &server.store {
        Store::Postgres { database } => (
            Some(RedisProbe::connect(redis.url()).await?),
            Some(PgProbe::connect(database).await?),
            Participants::new(
                server.pid().into_iter().chain(redis.pid()),
                Some(PgProbe::connect(database).await?),
                ours.clone(),
            ),
        ),
        Store::Sqlite { .. } => (None, None, Participants::new(server.pid(), None, vec![])),
    };
    let mode = v1::StreamingMode::Realtime;

    // One unmeasured round, then quiet until every backend has flushed its statistics.
    let warm_up = callers;
    submit_closed_loop(&client, warm_up, callers, INSTANT_MODEL, mode, "warm-up").await?;
    counter
        .wait_for_completed(warm_up, COMPLETION_TIMEOUT)
        .await?;
    if pg.is_some() {
        tokio::time::sleep(STATS_FLUSH).await;
    }

    let pg_before = match pg.as_mut() {
        Some(p) => Some((p.counters().await?, p.cpu(&ours).await?)),
        None => None,
    };
    let counter_before = counter.transactions();
    let redis_before = match redis_probe.as_mut() {
        Some(r) => Some(r.snapshot().await?),
        None => None,
    };
    let load_before = participants.sample().await?;
    let server_before = server.cpu_ms();
    let start = std::time::Instant::now();

    submit_closed_loop(&client, n, callers, INSTANT_MODEL, mode, "cost").await?;
    let done = counter
        .wait_for_completed(warm_up + n, COMPLETION_TIMEOUT)
        .await?;

    // CPU and Redis at once; Postgres's transactions once its backends have flushed them.
    let server_after = server.cpu_ms();
    let run_load = load(&load_before, &participants.sample().await?);
    let redis = match (redis_probe.as_mut(), redis_before) {
        (Some(r), Some(before)) => Some(redis_cost(&before, &r.snapshot().await?)),
        _ => None,
    };
    let pg_cpu_after = match pg.as_mut() {
        Some(p) => Some(p.cpu(&ours).await?),
        None => None,
    };
    let counter_queries = i64::try_from(counter.transactions() - counter_before)?;
    let postgres = match (pg.as_mut(), pg_before, pg_cpu_after) {
        (Some(p), Some((counters_before, cpu_before)), Some(cpu_after)) => {
            tokio::time::sleep(STATS_FLUSH).await;
            let counters_after = p.counters().await?;
            let statements = match (counters_before.statements, counters_after.statements) {
                (Some(b), Some(a)) => Ok(a - b - counter_queries),
                _ => Err(p
                    .statements_unavailable()
                    .unwrap_or("pg_stat_statements is not available")
                    .to_owned()),
            };
            Some(PgCost {
                xacts: counters_after.xacts - counters_before.xacts - counter_queries,
                statements,
                cpu_ms: cpu_delta(&cpu_before, &cpu_after),
            })
        }
        _ => None,
    };
    let server_cpu_ms = match (server_before, server_after) {
        (Some(b), Some(a)) => a - b,
        _ => anyhow::bail!("cannot read the server's CPU time from /proc"),
    };
    let secs = (done - start).as_secs_f64();
    anyhow::ensure!(n > 0 && secs > 0.0, "no job was measured");
    Ok(Measured {
        jobs: n,
        secs,
        server_cpu_ms,
        redis,
        postgres,
        load: run_load,
    })
}

/// Redis commands per job of two runs, side by side: the union of each one's `k` most called,
/// most called by `a` first.
pub(crate) fn top_commands(
    a: &RedisCost,
    a_jobs: usize,
    b: Option<(&RedisCost, usize)>,
    k: usize,
) -> Vec<(String, f64, Option<f64>)> {
    let mut names: Vec<String> = a.top(k).into_iter().map(|(c, _)| c).collect();
    if let Some((b, _)) = b {
        for (c, _) in b.top(k) {
            if !names.contains(&c) {
                names.push(c);
            }
        }
    }
    let per_job = |cost: &RedisCost, jobs: usize, c: &str| {
        cost.commands.get(c).copied().unwrap_or(0) as f64 / jobs.max(1) as f64
    };
    let mut rows: Vec<(String, f64, Option<f64>)> = names
        .into_iter()
        .map(|c| {
            let x = per_job(a, a_jobs, &c);
            let y = b.map(|(b, jobs)| per_job(b, jobs, &c));
            (c, x, y)
        })
        .collect();
    rows.sort_by(|x, y| {
        y.1.total_cmp(&x.1)
            .then_with(|| y.2.unwrap_or(0.0).total_cmp(&x.2.unwrap_or(0.0)))
    });
    rows
}

/// Redis commands per job by command, for results.json.
pub(crate) fn per_job_map(cost: &RedisCost, jobs: usize) -> BTreeMap<String, f64> {
    cost.commands
        .iter()
        .map(|(c, n)| (c.clone(), *n as f64 / jobs.max(1) as f64))
        .collect()
}
