//! Cancellation: `CancelJob` on a streaming job, timed until the upstream sees its connection
//! closed.

use std::time::{Duration, Instant};

use serde_json::json;

use llm_jobs::proto::v1::{self, job_event::Kind};

use crate::{
    Scale,
    harness::{ms, request, summary},
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
    report.push(row(
        "Cancellation",
        "CancelJob returned → upstream connection closed, p50 / p99 (ms)",
        format!("from the call: {:.2} / {:.2}", call.p50, call.p99),
        format!("{:.2} / {:.2}", ret.p50, ret.p99),
        "p99 ≤ 50",
        Some(ret.p99 <= 50.0),
    ));
    report.raw.insert(
        "cancel".into(),
        json!({"n": scale.cancels, "from_call_ms": [call.p50, call.p99], "from_return_ms": [ret.p50, ret.p99]}),
    );
    Ok(())
}
