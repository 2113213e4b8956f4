//! Metrics at `GET /metrics` (Prometheus text), and the admin listener's liveness and
//! readiness, as a scraper and a probe see them: over HTTP, after real jobs.

use std::collections::HashMap;

use anyhow::Context;
use llm_jobs::proto::v1;

use crate::support::{
    PATIENCE, TestApp, request,
    upstream::{Reply, TestUpstream},
};

/// Tokens of `with-usage.sse`, as its usage chunk reports them.
const FIXTURE_INPUT_TOKENS: f64 = 19.0;
const FIXTURE_OUTPUT_TOKENS: f64 = 11.0;

/// One scrape: each series (`name{labels}` as the text spells it) and its value.
struct Scrape(HashMap<String, f64>);

impl Scrape {
    /// The value of the series named `name` whose labels include every one of `labels`
    /// (`key="value"` each); `None` when no series matches, an error when several do.
    fn get(&self, name: &str, labels: &[&str]) -> anyhow::Result<Option<f64>> {
        let found: Vec<f64> = self
            .0
            .iter()
            .filter(|(series, _)| {
                let (n, rest) = series.split_once('{').unwrap_or((series, ""));
                n == name && labels.iter().all(|l| rest.contains(l))
            })
            .map(|(_, v)| *v)
            .collect();
        anyhow::ensure!(found.len() <= 1, "{name} {labels:?} matches {found:?}");
        Ok(found.first().copied())
    }

    /// As [`Scrape::get`], 0 when the series is absent.
    fn value(&self, name: &str, labels: &[&str]) -> anyhow::Result<f64> {
        Ok(self.get(name, labels)?.unwrap_or(0.0))
    }
}

/// Scrapes `GET /metrics` at `addr` once; checks the content type.
async fn scrape(addr: &str) -> anyhow::Result<Scrape> {
    let response = reqwest::get(format!("http://{addr}/metrics")).await?;
    anyhow::ensure!(response.status() == 200, "status {}", response.status());
    let content_type = response
        .headers()
        .get("content-type")
        .context("no content type")?
        .to_str()?
        .to_owned();
    anyhow::ensure!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await?;
    let mut series = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name, value) = line.rsplit_once(' ').context("a series and its value")?;
        series.insert(name.to_owned(), value.parse()?);
    }
    Ok(Scrape(series))
}

/// Scrapes until `ready` holds (metrics are recorded just after the store has the job's
/// end, so a client can see the end a moment before the counters do).
async fn scrape_until(
    addr: &str,
    ready: impl Fn(&Scrape) -> anyhow::Result<bool>,
) -> anyhow::Result<Scrape> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let last = scrape(addr).await;
        if let Ok(s) = &last
            && ready(s)?
        {
            return last;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "metrics never got there: {:?}",
            last.err()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_count_jobs_by_queue_and_the_tokens_the_upstream_sent() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::fixture("with-usage.sse")).await?;
    // A model of its own streams for ever, until cancelled.
    upstream.route("slow-model", Reply::slow(100_000, 10, 20));
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .job_types("general,code_review")
        .start()
        .await?;
    let addr = app.metrics_addr.to_string();

    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            app.submit(request(&format!("job {i}"), "gpt-4o-mini"))
                .await?
                .id,
        );
    }
    for id in &ids {
        app.wait_for_job(id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
    }
    // A watcher that replays a whole log, and ends.
    let replayed = app.watch(&ids[0], 0).await?;
    assert!(!replayed.is_empty());
    let slow = app.submit(request("long story", "slow-model")).await?;
    app.wait_for_job(&slow.id, |j| j.output_tokens >= 3).await?;
    let mut client = app.client.clone();
    client
        .cancel_job(v1::CancelJobRequest {
            job_id: slow.id.clone(),
            reason: String::new(),
        })
        .await?;
    app.wait_for_job(&slow.id, |j| j.status() == v1::JobStatus::Cancelled)
        .await?;

    let general = r#"queue="openai-general""#;
    let m = scrape_until(&addr, |m| {
        Ok(m.value("llmjobs_jobs_completed_total", &[general])? == 3.0
            && m.value("llmjobs_jobs_cancelled_total", &[general])? == 1.0)
    })
    .await?;
    assert_eq!(m.value("llmjobs_jobs_submitted_total", &[general])?, 4.0);
    assert_eq!(m.value("llmjobs_jobs_failed_total", &[general])?, 0.0);
    for q in ["openai-general", "openai-code_review-urgent"] {
        let label = format!(r#"queue="{q}""#);
        assert_eq!(m.get("llmjobs_queue_depth", &[&label])?, Some(0.0), "{q}");
        assert_eq!(
            m.get("llmjobs_queue_oldest_wait_seconds", &[&label])?,
            Some(0.0)
        );
    }
    assert_eq!(
        m.value("llmjobs_queue_wait_duration_seconds_count", &[general])?,
        4.0,
        "one wait per attempt started"
    );
    let completed = [general, r#"outcome="completed""#];
    assert_eq!(
        m.value("llmjobs_attempt_duration_seconds_count", &completed)?,
        3.0
    );

    // The GenAI conventions: tokens as the upstream reported them, per request model.
    let call = [
        r#"gen_ai_operation_name="chat""#,
        r#"gen_ai_provider_name="openai""#,
        r#"gen_ai_request_model="gpt-4o-mini""#,
    ];
    let with = |extra: &'static str| {
        let mut labels = call.to_vec();
        labels.push(extra);
        labels
    };
    let input = with(r#"gen_ai_token_type="input""#);
    let output = with(r#"gen_ai_token_type="output""#);
    assert_eq!(
        m.value("gen_ai_client_token_usage_sum", &input)?,
        3.0 * FIXTURE_INPUT_TOKENS
    );
    assert_eq!(
        m.value("gen_ai_client_token_usage_sum", &output)?,
        3.0 * FIXTURE_OUTPUT_TOKENS
    );
    assert_eq!(m.value("gen_ai_client_token_usage_count", &output)?, 3.0);
    let mut up_to_16 = output.clone();
    up_to_16.push(r#"le="16""#);
    assert_eq!(
        m.value("gen_ai_client_token_usage_bucket", &up_to_16)?,
        3.0,
        "11 tokens fall in the bucket up to 16"
    );
    for name in [
        "gen_ai_client_operation_duration_seconds_count",
        "gen_ai_server_time_to_first_token_seconds_count",
        "gen_ai_server_time_per_output_token_seconds_count",
    ] {
        assert_eq!(m.value(name, &call)?, 3.0, "{name}");
    }
    // The cancelled call spent tokens, which count; its durations say nothing of the
    // upstream, so they do not.
    let slow_output = [
        r#"gen_ai_request_model="slow-model""#,
        r#"gen_ai_token_type="output""#,
    ];
    assert!(m.value("gen_ai_client_token_usage_sum", &slow_output)? >= 3.0);
    assert_eq!(
        m.value(
            "gen_ai_client_operation_duration_seconds_count",
            &[r#"gen_ai_request_model="slow-model""#]
        )?,
        0.0
    );
    assert_eq!(m.value("llmjobs_upstream_errors_total", &[])?, 0.0);

    // Streaming and the process.
    assert!(m.value("llmjobs_events_published_total", &[])? > 4.0 * 3.0);
    assert_eq!(
        m.get("llmjobs_stream_watchers", &[])?,
        Some(0.0),
        "the watcher is counted while it runs, and no longer"
    );
    assert!(
        m.value("llmjobs_server_connections", &[])? >= 1.0,
        "the test's client"
    );
    if cfg!(target_os = "linux") {
        assert!(m.value("process_memory_usage_bytes", &[])? > 1e6);
        assert!(m.value("process_unix_file_descriptor_count", &[])? >= 3.0);
        assert!(
            m.get("process_cpu_time_seconds_total", &[r#"cpu_mode="user""#])?
                .is_some()
        );
    }
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_gauges_show_what_waits_and_failures_count_by_error_type() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::Status {
        status: 400,
        error_type: "invalid_request_error",
        retry_after_secs: None,
    })
    .await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .without_worker()
        .start()
        .await?;
    let addr = app.metrics_addr.to_string();
    for i in 0..2 {
        app.submit(request(&format!("waiting {i}"), "gpt-4o-mini"))
            .await?;
    }
    let general = r#"queue="openai-general""#;
    let m = scrape(&addr).await?;
    assert_eq!(m.get("llmjobs_queue_depth", &[general])?, Some(2.0));
    assert!(m.value("llmjobs_queue_oldest_wait_seconds", &[general])? >= 0.0);
    assert_eq!(
        m.get("llmjobs_queue_depth", &[r#"queue="openai-general-high""#])?,
        Some(0.0)
    );
    assert_eq!(m.value("llmjobs_jobs_submitted_total", &[general])?, 2.0);

    // A permanent upstream error fails the job at once, counted by its type.
    let app2 = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let job = app2.submit(request("refused", "gpt-4o-mini")).await?;
    app2.wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Failed)
        .await?;
    let error = r#"error_type="upstream_invalid_request""#;
    let m = scrape_until(&app2.metrics_addr.to_string(), |m| {
        Ok(m.value("llmjobs_jobs_failed_total", &[general])? == 1.0)
    })
    .await?;
    assert_eq!(m.value("llmjobs_upstream_errors_total", &[error])?, 1.0);
    assert_eq!(
        m.value("gen_ai_client_operation_duration_seconds_count", &[error])?,
        1.0
    );
    assert_eq!(
        m.value(
            "llmjobs_attempt_duration_seconds_count",
            &[general, r#"outcome="failed""#]
        )?,
        1.0
    );
    app2.stop().await?;
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_liveness_answer_on_the_admin_listener() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let base = format!("http://{}", app.metrics_addr);
    let live = reqwest::get(format!("{base}/healthz")).await?;
    assert_eq!(live.status(), 200);
    assert_eq!(live.text().await?, "ok\n");
    // The server answers health checks SERVING once started; readiness follows the same
    // probes.
    let ready = reqwest::get(format!("{base}/readyz")).await?;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await?, "ready\n");
    let missing = reqwest::get(format!("{base}/nothing-here")).await?;
    assert_eq!(missing.status(), 404);
    app.stop().await
}

mod servers {
    use super::*;
    use crate::support::free_addr;

    /// Polls `url` until it answers 200; returns its body.
    async fn get_when_ok(url: &str) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(r) = reqwest::get(url).await
                && r.status() == 200
            {
                return Ok(r.text().await?);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{url} never answered 200"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_process_answers_liveness_readiness_and_metrics() -> anyhow::Result<()> {
        crate::support::needs_worker_processes();
        let upstream = TestUpstream::start(Reply::fixture("with-usage.sse")).await?;
        let app = TestApp::builder()
            .upstream(upstream.base_url())
            .without_worker()
            .start()
            .await?;
        let addr = free_addr()?;
        let _worker = app.spawn_worker(&["--metrics-listen", &addr])?;
        assert_eq!(
            get_when_ok(&format!("http://{addr}/healthz")).await?,
            "ok\n"
        );
        assert_eq!(
            get_when_ok(&format!("http://{addr}/readyz")).await?,
            "ready\n"
        );

        let job = app.submit(request("for the worker", "gpt-4o-mini")).await?;
        app.wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
        let general = r#"queue="openai-general""#;
        let m = scrape_until(&addr, |m| {
            Ok(m.value("llmjobs_jobs_completed_total", &[general])? == 1.0)
        })
        .await?;
        let output = [
            r#"gen_ai_request_model="gpt-4o-mini""#,
            r#"gen_ai_token_type="output""#,
        ];
        assert_eq!(
            m.value("gen_ai_client_token_usage_sum", &output)?,
            FIXTURE_OUTPUT_TOKENS
        );
        // The worker read the queues for its gauges; it accepted no job itself.
        assert_eq!(m.get("llmjobs_queue_depth", &[general])?, Some(0.0));
        assert_eq!(m.value("llmjobs_jobs_submitted_total", &[general])?, 0.0);
        // The gateway counted the submission and ran nothing.
        let gateway = scrape(&app.metrics_addr.to_string()).await?;
        assert_eq!(
            gateway.value("llmjobs_jobs_submitted_total", &[general])?,
            1.0
        );
        assert_eq!(
            gateway.value("llmjobs_jobs_completed_total", &[general])?,
            0.0
        );
        app.stop().await
    }
}
