//! The BullMQ peer: what a Node team would build instead of llm-jobs, doing the same job on the
//! same Redis in the same run (`bench_llm.mjs` of the team's BullMQ peer: N jobs added one at
//! a time by C callers, one worker of concurrency W streaming each from the same upstream, one
//! progress update per token, the result kept).
//!
//! Runs only at full scale, when `node` and `npm` are on `PATH` and `LLMJOBS_BULLMQ_PEER` names
//! the peer's folder (it lives outside this repository and is not copied into it); otherwise
//! the report has a skipped row saying why. The folder is copied to
//! `$TMPDIR/llmjobs-bullmq-peer` and `npm install` runs there (never in the repository;
//! skipped when `node_modules` is already there for the same `package.json`).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Context;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::{
    bench_redis::BenchRedis,
    meter::{Load, Participants, RedisCost, RedisProbe, load, process_cpu_ms, redis_cost},
};

/// The preload that holds the peer still once it has printed its result.
const GATE: &str = include_str!("peer_gate.mjs");

/// What to run.
pub(crate) struct Job<'a> {
    /// Jobs (N).
    pub(crate) jobs: usize,
    /// Concurrent adding callers (C).
    pub(crate) callers: usize,
    /// The worker's concurrency (W).
    pub(crate) concurrency: usize,
    /// The upstream's base URL (`…/v1`).
    pub(crate) upstream: &'a str,
    /// The upstream model.
    pub(crate) model: &'a str,
    /// Tokens of each answer.
    pub(crate) tokens: usize,
}

/// What the peer's run cost.
#[derive(Debug)]
pub(crate) struct PeerCost {
    /// Its own end-to-end figure: jobs completed / time from the first add to the last
    /// completion.
    pub(crate) jobs_per_s: f64,
    /// Jobs added per second, all callers together.
    pub(crate) add_jobs_per_s: f64,
    /// CPU time of the node process (callers and worker; its start-up included), ms.
    pub(crate) node_cpu_ms: Option<f64>,
    /// Redis from before the peer started to its result line.
    pub(crate) redis: RedisCost,
    /// How busy the machine was, by the participants and by everything else.
    pub(crate) load: Load,
}

/// The peer's outcome: measured, or skipped and why.
#[derive(Debug)]
pub(crate) enum Peer {
    /// It ran and did every job.
    Ran(PeerCost),
    /// It did not run, or did not finish every job.
    Skipped(String),
}

/// Runs the peer against `redis` when it can; a smoke run (`full` false) never does.
pub(crate) async fn run(redis: &BenchRedis, job: &Job<'_>, full: bool) -> Peer {
    if !full {
        return Peer::Skipped("not in a --quick run".into());
    }
    for tool in ["node", "npm"] {
        let found = tokio::process::Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if !found {
            return Peer::Skipped(format!("`{tool}` is not on PATH"));
        }
    }
    let outcome = async {
        let dir = prepare().await?;
        measure(&dir, redis, job).await
    }
    .await;
    match outcome {
        Ok(cost) => Peer::Ran(cost),
        Err(err) => {
            eprintln!("bench: the BullMQ peer did not run: {err:#}");
            Peer::Skipped(format!("failed: {err:#}"))
        }
    }
}

/// Copies the peer to its scratch folder (with the gate) and installs its packages there.
async fn prepare() -> anyhow::Result<PathBuf> {
    let src = PathBuf::from(std::env::var_os("LLMJOBS_BULLMQ_PEER").context(
        "LLMJOBS_BULLMQ_PEER is not set: point it at the BullMQ peer's folder to compare",
    )?);
    anyhow::ensure!(
        src.join("bench_llm.mjs").is_file(),
        "no BullMQ peer at {} (set LLMJOBS_BULLMQ_PEER)",
        src.display()
    );
    let dir = std::env::temp_dir().join("llmjobs-bullmq-peer");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let old_manifest = std::fs::read(dir.join("package.json")).ok();
    for entry in std::fs::read_dir(&src)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let to = dir.join(entry.file_name());
        // The source may be read-only; a copy keeps its mode, so replace rather than overwrite.
        let _ = std::fs::remove_file(&to);
        std::fs::copy(entry.path(), &to)
            .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        writable(&to)?;
    }
    std::fs::write(dir.join("gate.mjs"), GATE)?;
    let same_manifest = old_manifest == std::fs::read(dir.join("package.json")).ok();
    if !(same_manifest && dir.join("node_modules/bullmq").is_dir()) {
        eprintln!("bench: npm install in {}", dir.display());
        let install = tokio::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(300), install)
            .await
            .context("npm install took over 5 minutes")??;
        anyhow::ensure!(
            out.status.success(),
            "npm install failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(dir)
}

/// Makes a copied file writable by its owner (so the next run can replace it).
fn writable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// Runs `bench_llm.mjs` and reads the node process's CPU time and Redis's counters at the
/// moment it prints its result (the gate holds it there).
async fn measure(dir: &Path, redis: &BenchRedis, job: &Job<'_>) -> anyhow::Result<PeerCost> {
    let mut probe = RedisProbe::connect(redis.url()).await?;
    let gate = format!("file://{}", dir.join("gate.mjs").display());
    let mut participants = Participants::new(redis.pid(), None, vec![]);
    let load_before = participants.sample().await?;
    let before = probe.snapshot().await?;
    let mut child = tokio::process::Command::new("node")
        .arg("--import")
        .arg(&gate)
        .arg("bench_llm.mjs")
        .args([job.jobs, job.callers, job.concurrency].map(|n| n.to_string()))
        .args([job.upstream, job.model])
        .env("REDIS_PORT", redis.port().to_string())
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start node")?;
    let pid = child.id().context("node exited at once")?;
    participants.add(pid);
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let result = tokio::time::timeout(Duration::from_secs(600), async {
        while let Some(line) = lines.next_line().await? {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v.get("end_to_end_jobs_per_s").is_some()
            {
                return Ok(v);
            }
            eprintln!("bullmq peer: {line}");
        }
        anyhow::bail!("the peer ended without its result line")
    })
    .await
    .context("the peer took over 10 minutes")??;
    // Held by the gate: nothing runs in node until it is released.
    let node_cpu_ms = process_cpu_ms(pid);
    let after = probe.snapshot().await?;
    let run_load = load(&load_before, &participants.sample().await?);
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"\n").await;
    }
    if tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    let number = |k: &str| result.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let (completed, failed, tokens) = (number("completed"), number("failed"), number("tokens"));
    anyhow::ensure!(
        completed as usize == job.jobs && failed == 0.0,
        "the peer completed {completed} and failed {failed} of {} jobs",
        job.jobs
    );
    anyhow::ensure!(
        tokens as usize == job.jobs * job.tokens,
        "the peer streamed {tokens} tokens, expected {}",
        job.jobs * job.tokens
    );
    Ok(PeerCost {
        jobs_per_s: number("end_to_end_jobs_per_s"),
        add_jobs_per_s: number("add_jobs_per_s"),
        node_cpu_ms,
        redis: redis_cost(&before, &after),
        load: run_load,
    })
}
