//! Idle: the server's resident memory after start-up and its CPU time over a quiet interval
//! (no busy polling).

use std::time::Duration;

use serde_json::json;

use crate::{
    Scale,
    report::{Report, row},
    server::Server,
};

/// Runs the scenario and adds its rows.
pub(crate) async fn run(server: &Server, scale: Scale, report: &mut Report) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = server.cpu_ms().unwrap_or(0.0);
    tokio::time::sleep(Duration::from_secs(scale.idle_secs)).await;
    let busy_ms = (server.cpu_ms().unwrap_or(0.0) - t0).max(0.0);
    let cpu = 100.0 * busy_ms / (scale.idle_secs as f64 * 1000.0);
    let rss_mib = server.rss_kib().unwrap_or(0) as f64 / 1024.0;
    report.push(row(
        "Idle",
        "resident memory",
        "-",
        format!("{rss_mib:.1} MiB"),
        "≤ 64 MiB",
        Some(rss_mib <= 64.0),
    ));
    report.push(row(
        "Idle",
        &format!("CPU over {} s", scale.idle_secs),
        "-",
        format!("{cpu:.2} %"),
        "~0 (no busy polling)",
        Some(cpu < 1.0),
    ));
    report.raw.insert(
        "idle".into(),
        json!({"rss_mib": rss_mib, "cpu_percent": cpu, "secs": scale.idle_secs}),
    );
    Ok(())
}
