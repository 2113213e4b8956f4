//! Token throughput: many streams of long answers at once, in `BUFFERED` and `REALTIME`, every
//! stream's text checked against the upstream's.

use std::time::Instant;

use serde_json::{Value, json};

use llm_jobs::proto::v1;

use crate::{
    Scale,
    harness::{Received, expected_text, request, through},
    report::{Report, row},
    server::Server,
};

/// Runs the scenario and adds its rows.
pub(crate) async fn run(server: &Server, scale: Scale, report: &mut Report) -> anyhow::Result<()> {
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
        let cpu_before = server.cpu_ms();
        let start = Instant::now();
        let all = futures::future::join_all((0..n).map(|i| {
            through(
                channels[i % channels.len()].clone(),
                request(format!("tokens {i}"), "bench-tokens", mode),
            )
        }))
        .await;
        let secs = start.elapsed().as_secs_f64();
        let cpu_after = server.cpu_ms();
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
        // The server's CPU per delivered token, from upstream chunk to client frame: what
        // bounds the rate on a machine the clients and the upstream share.
        let cpu_us = cpu_before
            .zip(cpu_after)
            .map(|(before, after)| (after - before) * 1000.0 / total);
        let cpu = cpu_us.map_or_else(|| "-".to_owned(), |us| format!("{us:.1}"));
        report.push(row(
            &format!("Token throughput, {name}"),
            &format!(
                "{n} streams × {} tokens, all checked",
                scale.tokens_per_stream
            ),
            "-",
            format!("{rate:.0} tokens/s ({secs:.2} s); server CPU {cpu} µs per token"),
            &format!("≥ {target:.0} tokens/s"),
            Some(rate >= target),
        ));
        results.insert(
            name.into(),
            json!({
                "streams": n,
                "tokens": total,
                "secs": secs,
                "tokens_per_second": rate,
                "server_cpu_us_per_token": cpu_us,
            }),
        );
    }
    report.raw.insert("tokens".into(), Value::Object(results));
    Ok(())
}
