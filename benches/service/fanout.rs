//! Fan-out: many `StreamJob` watchers per running job; every watcher must see every event;
//! delivery lag and the gateway's memory per watcher.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use serde_json::json;

use llm_jobs::proto::v1::{self, job_event::Kind};

use crate::{
    Scale,
    harness::{request, summary},
    meter::process_cpu_ms,
    report::{Report, row},
    server::Server,
    upstream::{Reply, TestUpstream},
};

/// Runs the scenario and adds its rows.
pub(crate) async fn run(
    server: &Server,
    upstream: &TestUpstream,
    scale: Scale,
    report: &mut Report,
) -> anyhow::Result<()> {
    // Jobs whose upstream answer waits until every watcher is attached, then streams 100
    // tokens 20 ms apart.
    let (reply, start) = Reply::held_start(100, 20);
    upstream.route("bench-fanout", reply);
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
    // A watcher is attached once its first event (the job's `queued`, from the log) has
    // arrived: its subscription is live from then on. The upstream answers begin once every
    // watcher is attached, so the lag measured is the live fan-out's, not the catch-up read
    // of an attach burst (BENCHMARKS.md, sixth round: almost all of its "lag" was that).
    // A token published before the start (none, unless the gate leaks) is reported apart.
    let attached = Arc::new(tokio::sync::Barrier::new(watchers + 1));
    let all_attached = Arc::new(std::sync::OnceLock::<chrono::DateTime<chrono::Utc>>::new());
    let attach_start = std::time::Instant::now();
    let mut tasks = Vec::new();
    for w in 0..watchers {
        let mut c = channels[w % channels.len()].clone();
        let id = ids[w % ids.len()].clone();
        let attached = attached.clone();
        let all_attached = all_attached.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = c
                .stream_job(v1::StreamJobRequest {
                    job_id: id,
                    after_sequence: 0,
                })
                .await?
                .into_inner();
            let mut first = s.message().await?;
            attached.wait().await;
            let mut samples = Vec::new();
            let mut last = 0;
            let mut ended = false;
            // Events this watcher got after the start (its first event came before it).
            let mut delivered = 0usize;
            loop {
                if first.is_none() {
                    delivered += 1;
                }
                let ev = match first.take() {
                    Some(ev) => ev,
                    None => match s.message().await? {
                        Some(ev) => ev,
                        None => break,
                    },
                };
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
                    samples.push((
                        sent,
                        (now - sent).num_microseconds().unwrap_or(0) as f64 / 1000.0,
                    ));
                }
                if matches!(
                    ev.kind,
                    Some(Kind::Completed(_) | Kind::Failed(_) | Kind::Cancelled(_))
                ) {
                    ended = true;
                }
            }
            anyhow::ensure!(ended, "a watcher's stream ended without the terminal event");
            let from = *all_attached.get().context("attach time not set")?;
            let (live, burst): (Vec<_>, Vec<_>) =
                samples.into_iter().partition(|(sent, _)| *sent >= from);
            Ok::<_, anyhow::Error>((
                last,
                live.into_iter().map(|(_, l)| l).collect::<Vec<_>>(),
                burst.len(),
                delivered.saturating_sub(1),
            ))
        }));
    }
    attached.wait().await;
    let _ = all_attached.set(chrono::Utc::now());
    let attach_ms = attach_start.elapsed().as_secs_f64() * 1000.0;
    let rss_after = server.rss_kib().unwrap_or(0);
    // CPU of the delivery alone: the gateway's, and this process's (the watchers' clients
    // and the upstream), which shares the machine with it.
    let own_pid = std::process::id();
    let cpu_before = (server.cpu_ms(), process_cpu_ms(own_pid));
    // The delivery's window in wall-clock seconds, for a profile of that window alone:
    // `perf record -k realtime …`, then `perf report --time START,END` (BENCHMARKS.md).
    let window = |edge: &str| {
        eprintln!(
            "fan-out delivery {edge}: {:.6}",
            chrono::Utc::now().timestamp_micros() as f64 / 1e6
        )
    };
    window("start");
    start.add_permits(scale.fanout_jobs);
    let mut lags = Vec::new();
    let mut complete = 0;
    let mut during_attach = 0;
    let mut delivered = 0;
    for t in tasks {
        let (last, l, burst, d) = t.await??;
        if last > 0 {
            complete += 1;
        }
        lags.extend(l);
        during_attach += burst;
        delivered += d;
    }
    let cpu_after = (server.cpu_ms(), process_cpu_ms(own_pid));
    window("end");
    let per_event_us = |before: Option<f64>, after: Option<f64>| match (before, after) {
        (Some(b), Some(a)) if delivered > 0 => (a - b) * 1000.0 / delivered as f64,
        _ => f64::NAN,
    };
    let gateway_us = per_event_us(cpu_before.0, cpu_after.0);
    let client_us = per_event_us(cpu_before.1, cpu_after.1);
    anyhow::ensure!(
        complete == watchers,
        "only {complete} of {watchers} watchers got everything"
    );
    anyhow::ensure!(
        !lags.is_empty(),
        "every token was published before the watchers were attached ({attach_ms:.0} ms): \
         the jobs' first token must wait longer"
    );
    let lag = summary(lags);
    let per_watcher_kib = (rss_after.saturating_sub(rss_before)) as f64 / watchers as f64;
    report.push(row(
        &format!("Fan-out, {watchers} watchers of {} jobs", scale.fanout_jobs),
        "every watcher got every event; delivery lag p50 / p99 (ms)",
        "-",
        format!(
            "all {watchers}; {:.2} / {:.2} ({} tokens published while {watchers} watchers attached in {attach_ms:.0} ms not counted)",
            lag.p50, lag.p99, during_attach
        ),
        "lag p99 ≤ 100",
        Some(lag.p99 <= 100.0),
    ));
    report.push(row(
        &format!("Fan-out, {watchers} watchers of {} jobs", scale.fanout_jobs),
        "CPU per delivered event (µs): gateway; the benchmark's clients and upstream",
        "-",
        format!("{gateway_us:.2}; {client_us:.2} ({delivered} events)"),
        "-",
        None,
    ));
    report.push(row(
        &format!("Fan-out, {watchers} watchers of {} jobs", scale.fanout_jobs),
        "gateway memory per watcher",
        format!("{:.1} MiB before", rss_before as f64 / 1024.0),
        format!(
            "{per_watcher_kib:.1} KiB ({:.1} MiB with all attached)",
            rss_after as f64 / 1024.0
        ),
        "≤ 16 KiB",
        Some(per_watcher_kib <= 16.0),
    ));
    report.raw.insert(
        "fanout".into(),
        json!({"watchers": watchers, "jobs": scale.fanout_jobs, "lag_ms": [lag.p50, lag.p99], "attach_ms": attach_ms, "tokens_during_attach": during_attach,
               "delivered": delivered, "gateway_cpu_us_per_event": gateway_us, "client_cpu_us_per_event": client_us,
               "rss_before_kib": rss_before, "rss_after_kib": rss_after, "kib_per_watcher": per_watcher_kib}),
    );
    Ok(())
}
