//! Added latency: the same streams straight from the upstream and through `SubmitAndStream`
//! at 1, 100 and 500 at once; time to first token and the gaps between tokens, compared.

use serde_json::{Value, json};

use llm_jobs::proto::v1;

use crate::{
    Scale,
    harness::{Received, direct, expected_text, request, summary, through},
    report::{Report, row},
    server::Server,
    upstream::TestUpstream,
};

/// Runs the scenario and adds its rows.
pub(crate) async fn run(
    server: &Server,
    upstream: &TestUpstream,
    scale: Scale,
    report: &mut Report,
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
        // at least `latency_samples` streams each way, and at least `latency_min_rounds`
        // bursts: one burst's p50 moves by tens of ms from one run to the next.
        let rounds = 1 + scale
            .latency_samples
            .div_ceil(n)
            .max(scale.latency_min_rounds);
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
        report.push(row(
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
        report.push(row(
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
    report.raw.insert("latency".into(), Value::Array(results));
    Ok(())
}
