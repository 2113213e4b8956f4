//! Fan-out: many `StreamJob` watchers per running job; every watcher must see every event;
//! delivery lag and the gateway's memory per watcher.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use serde_json::json;

use llm_jobs::proto::v1::{self, job_event::Kind};

use crate::{
    Scale,
    harness::{request, summary},
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
    report.push(row(
        &format!("Fan-out, {watchers} watchers of {} jobs", scale.fanout_jobs),
        "every watcher got every event; delivery lag p50 / p99 (ms)",
        "-",
        format!("all {watchers}; {:.2} / {:.2}", lag.p50, lag.p99),
        "lag p99 ≤ 50",
        Some(lag.p99 <= 50.0),
    ));
    report.push(row(
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
    report.raw.insert(
        "fanout".into(),
        json!({"watchers": watchers, "jobs": scale.fanout_jobs, "lag_ms": [lag.p50, lag.p99],
               "rss_before_kib": rss_before, "rss_after_kib": rss_after, "kib_per_watcher": per_watcher_kib}),
    );
    Ok(())
}
