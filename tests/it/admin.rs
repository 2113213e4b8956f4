//! QueueAdminService: exact stats, pause/resume/toggle, purge, failed jobs, retry, forget, and
//! what a tenant's admin may do of it.

use std::time::Duration;

use anyhow::Context;
use llm_jobs::auth::Role;
use llm_jobs::cli::client::Channel;
use llm_jobs::proto::v1::{
    self, job_event::Kind, job_service_client::JobServiceClient,
    queue_admin_service_client::QueueAdminServiceClient,
};
use tonic::Code;

use crate::support::{
    TestApp, request,
    upstream::{Reply, TestUpstream},
};

const BASIC: &str = "The queue is a line of work waiting its turn.";

async fn admin(app: &TestApp) -> anyhow::Result<QueueAdminServiceClient<Channel>> {
    app.admin_client()
}

fn with_priority(prompt: &str, p: v1::Priority) -> v1::SubmitJobRequest {
    v1::SubmitJobRequest {
        priority: p.into(),
        ..request(prompt, "gpt-4o-mini")
    }
}

async fn stats(
    a: &mut QueueAdminServiceClient<Channel>,
    queue: &str,
) -> anyhow::Result<v1::QueueStats> {
    let all = a
        .get_queue_stats(v1::GetQueueStatsRequest {})
        .await?
        .into_inner()
        .queues;
    all.into_iter()
        .find(|q| q.name == queue)
        .ok_or_else(|| anyhow::anyhow!("no queue {queue}"))
}

/// Submits a job whose only attempt gets a truncated stream, and waits until it has failed.
pub(crate) async fn fail_one(
    app: &TestApp,
    upstream: &TestUpstream,
    prompt: &str,
) -> anyhow::Result<v1::Job> {
    upstream.push_reply(Reply::fixture("truncated.sse"));
    let mut req = request(prompt, "gpt-4o-mini");
    req.max_attempts = Some(1);
    let job = app.submit(req).await?;
    app.wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Failed)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_pause_resume_toggle_and_purge() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::fixture("basic.sse")).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .concurrency(1)
        .start()
        .await?;
    let mut a = admin(&app).await?;
    fail_one(&app, &upstream, "fails").await?;

    upstream.push_reply(Reply::slow(100_000, 10, 20));
    let blocker = app.submit(request("blocker", "gpt-4o-mini")).await?;
    app.wait_for_job(&blocker.id, |j| j.output_tokens >= 1)
        .await?;
    let high = [
        app.submit(with_priority("h1", v1::Priority::High)).await?,
        app.submit(with_priority("h2", v1::Priority::High)).await?,
    ];
    let low = app.submit(with_priority("l1", v1::Priority::Low)).await?;

    // The failed job's claim ends with the next claim call, or on its own within 100 ms when
    // the slot it freed went straight to the blocker; until then it counts as running.
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    let normal = loop {
        let normal = stats(&mut a, "openai-general").await?;
        if normal.running <= 1 || tokio::time::Instant::now() >= deadline {
            break normal;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        (
            normal.pending,
            normal.running,
            normal.delayed,
            normal.failed_last_hour
        ),
        (0, 1, 0, 1)
    );
    let h = stats(&mut a, "openai-general-high").await?;
    assert_eq!((h.pending, h.running, h.paused), (2, 0, false));
    assert!(h.oldest_wait_ms < 60_000);
    assert_eq!(stats(&mut a, "openai-general-low").await?.pending, 1);
    assert_eq!(stats(&mut a, "openai-general-urgent").await?.pending, 0);

    // Paused: its jobs stay pending while the low queue runs.
    let state = a
        .pause_queue(v1::PauseQueueRequest {
            queue: "openai-general-high".into(),
        })
        .await?
        .into_inner();
    assert!(state.paused);
    let mut c = app.client.clone();
    c.cancel_job(v1::CancelJobRequest {
        job_id: blocker.id.clone(),
        reason: String::new(),
    })
    .await?;
    app.wait_for_job(&low.id, |j| j.status() == v1::JobStatus::Completed)
        .await?;
    for j in &high {
        let now = app.wait_for_job(&j.id, |_| true).await?;
        assert_eq!(
            now.status(),
            v1::JobStatus::Queued,
            "a paused queue's jobs stay pending"
        );
    }
    assert_eq!(stats(&mut a, "openai-general-high").await?.pending, 2);

    // Toggle twice: resumed, then paused again; resume runs them.
    assert!(
        !a.toggle_queue(v1::ToggleQueueRequest {
            queue: "openai-general-high".into()
        })
        .await?
        .into_inner()
        .paused
    );
    assert!(
        a.toggle_queue(v1::ToggleQueueRequest {
            queue: "openai-general-high".into()
        })
        .await?
        .into_inner()
        .paused
    );
    assert!(
        !a.resume_queue(v1::ResumeQueueRequest {
            queue: "openai-general-high".into()
        })
        .await?
        .into_inner()
        .paused
    );
    for j in &high {
        app.wait_for_job(&j.id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
    }

    // Purge cancels pending jobs only.
    a.pause_queue(v1::PauseQueueRequest {
        queue: "openai-general-low".into(),
    })
    .await?;
    let mut pending = Vec::new();
    for i in 0..3 {
        pending.push(
            app.submit(with_priority(&format!("p{i}"), v1::Priority::Low))
                .await?,
        );
    }
    let purged = a
        .purge_queue(v1::PurgeQueueRequest {
            queue: "openai-general-low".into(),
        })
        .await?
        .into_inner();
    assert_eq!(purged.purged, 3);
    for j in &pending {
        let events = app.watch(&j.id, 0).await?;
        assert!(matches!(
            events.last().and_then(|e| e.kind.clone()),
            Some(Kind::Cancelled(_))
        ));
        assert_eq!(
            app.wait_for_job(&j.id, |_| true).await?.status(),
            v1::JobStatus::Cancelled
        );
    }
    assert_eq!(stats(&mut a, "openai-general-low").await?.pending, 0);

    // A huge name is refused without being echoed back (it would not fit in the trailers).
    let huge = "q".repeat(10_000);
    for (queue, code) in [
        ("nope", Code::NotFound),
        ("", Code::InvalidArgument),
        (huge.as_str(), Code::InvalidArgument),
    ] {
        let e = a
            .pause_queue(v1::PauseQueueRequest {
                queue: queue.into(),
            })
            .await
            .expect_err("bad queue");
        assert_eq!(e.code(), code);
        let e = a
            .purge_queue(v1::PurgeQueueRequest {
                queue: queue.into(),
            })
            .await
            .expect_err("bad queue");
        assert_eq!(e.code(), code);
        assert!(e.message().len() < 300, "{}", e.message().len());
    }
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_jobs_are_listed_retried_and_forgotten() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::fixture("basic.sse")).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let mut a = admin(&app).await?;
    let first = fail_one(&app, &upstream, "first").await?;
    let second = fail_one(&app, &upstream, "second").await?;

    let page = a
        .list_failed_jobs(v1::ListFailedJobsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(page.failed_jobs.len(), 1);
    let newest = page.failed_jobs[0].clone();
    assert_eq!(
        newest.job.as_ref().map(|j| j.id.clone()),
        Some(second.id.clone()),
        "newest first"
    );
    assert_eq!(newest.attempt_errors.len(), 1);
    assert_eq!(
        newest.attempt_errors[0]
            .error
            .clone()
            .unwrap_or_default()
            .code,
        "upstream_stream_truncated"
    );
    let page2 = a
        .list_failed_jobs(v1::ListFailedJobsRequest {
            page_size: 1,
            page_token: page.next_page_token,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        page2.failed_jobs[0].job.as_ref().map(|j| j.id.clone()),
        Some(first.id.clone())
    );
    let filtered = a
        .list_failed_jobs(v1::ListFailedJobsRequest {
            error_code: "timeout".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(filtered.failed_jobs.is_empty());

    // Retry the first: it runs again and completes, keeping its history.
    let seen = app.watch(&first.id, 0).await?;
    let last_seen = seen.last().map_or(0, |e| e.sequence);
    let unknown = uuid::Uuid::now_v7().to_string();
    let retried = a
        .retry_jobs(v1::RetryJobsRequest {
            job_ids: vec![first.id.clone(), unknown.clone()],
            filter: None,
        })
        .await?
        .into_inner();
    assert_eq!(retried.retried_job_ids, std::slice::from_ref(&first.id));
    let skipped: Vec<_> = retried
        .skipped
        .iter()
        .map(|s| (s.job_id.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(skipped, [(unknown.as_str(), "no such job")]);
    // Retrying it again while it is queued or running skips it, saying so.
    let again = a
        .retry_jobs(v1::RetryJobsRequest {
            job_ids: vec![first.id.clone()],
            filter: None,
        })
        .await?
        .into_inner();
    assert!(again.retried_job_ids.is_empty());
    assert!(
        again.skipped.len() == 1 && again.skipped[0].reason.contains("not failed"),
        "{again:?}"
    );
    let done = app
        .wait_for_job(&first.id, |j| j.status() == v1::JobStatus::Completed)
        .await?;
    assert_eq!(done.attempts, 2);
    assert_eq!(app.result(&first.id).await?.content, BASIC);
    let rest = app.watch(&first.id, last_seen).await?;
    assert_eq!(
        rest.first().map(|e| e.sequence),
        Some(last_seen + 1),
        "the retried log continues the old one"
    );
    assert!(matches!(
        rest.last().and_then(|e| e.kind.clone()),
        Some(Kind::Completed(_))
    ));

    // Forget the second: gone from the list, row kept.
    let forgotten = a
        .forget_failed_jobs(v1::ForgetFailedJobsRequest {
            job_ids: vec![second.id.clone()],
            filter: None,
        })
        .await?
        .into_inner();
    assert_eq!(forgotten.forgotten, 1);
    let left = a
        .list_failed_jobs(v1::ListFailedJobsRequest::default())
        .await?
        .into_inner();
    assert!(left.failed_jobs.is_empty(), "{left:?}");
    assert_eq!(
        app.wait_for_job(&second.id, |_| true).await?.status(),
        v1::JobStatus::Failed
    );

    let e = a
        .list_failed_jobs(v1::ListFailedJobsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad token");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = a
        .retry_jobs(v1::RetryJobsRequest {
            job_ids: vec!["x".into()],
            filter: None,
        })
        .await
        .expect_err("bad id");
    assert_eq!(e.code(), Code::InvalidArgument);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_cli_prints_stats_and_pauses() -> anyhow::Result<()> {
    let app = TestApp::builder()
        .job_types("general,code_review")
        .start()
        .await?;
    let run = |args: &[&str]| app.cli(&[&["admin"], args].concat());
    let table = run(&["stats"])?;
    for q in [
        "openai-general-urgent",
        "openai-code_review",
        "openai-code_review-low",
    ] {
        assert!(table.lines().any(|l| l.starts_with(q)), "{q} in {table}");
    }
    assert_eq!(
        run(&["pause", "openai-code_review"])?.trim(),
        "openai-code_review: paused"
    );
    let paused_row = run(&["stats"])?
        .lines()
        .find(|l| l.split_whitespace().next() == Some("openai-code_review"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(paused_row.contains(" yes "), "{paused_row}");
    let json: serde_json::Value = serde_json::from_str(&run(&["stats", "--json"])?)?;
    let queues = json["queues"].as_array().map_or(0, Vec::len);
    assert_eq!(queues, 8, "two job types x four priorities: {json}");
    assert!(
        json["queues"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|q| q["name"] == "openai-code_review" && q["paused"] == true)
    );
    let refused = app
        .cli(&["admin", "purge", "nope", "--yes"])
        .expect_err("unknown queue");
    assert!(refused.to_string().contains("NotFound"), "{refused}");
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn performance_percentiles_come_from_known_durations() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    // Ten completed jobs with runtimes 100, 200, ..., 1000 ms and one failed job.
    for i in 1..=11 {
        let status = if i == 11 { "failed" } else { "completed" };
        let id = uuid::Uuid::now_v7();
        app.sql(&format!(
            "INSERT INTO jobs (id, status, job_type, priority, queue, messages, params, model, streaming_mode, max_attempts, finished_at) \
             VALUES ('{id}', '{status}', 'general', 'normal', 'openai-general', '[]', '{{}}', 'm', 'realtime', 1, {now})",
            now = app.now_sql(),
        ))
        .await?;
        app.sql(&format!(
            "INSERT INTO job_results (job_id, content, model, provider, simulated, input_tokens, output_tokens, total_tokens, usage_estimated, time_to_first_token_ms, duration_ms, output_tokens_per_second, queue_wait_ms) \
             VALUES ('{id}', '', 'model-x', 'openai', false, 10, 20, 30, false, {ttft}, {dur}, 50, 0)",
            ttft = i * 10,
            dur = i * 100,
        ))
        .await?;
    }
    let mut a = admin(&app).await?;
    let perf = a
        .get_performance_metrics(v1::GetPerformanceMetricsRequest {})
        .await?
        .into_inner();
    let names: Vec<_> = perf.windows.iter().map(|w| w.window.as_str()).collect();
    assert_eq!(names, ["1m", "5m", "1h", "24h"]);
    let m = perf.windows[0]
        .by_model
        .iter()
        .find(|m| m.key == "model-x")
        .expect("model-x");
    assert_eq!((m.completed, m.failed), (10, 1));
    // percentile_cont over 100..=1000: p50 = 550, p95 = 955, p99 = 991.
    let near = |v: Option<f64>, want: f64| v.is_some_and(|v| (v - want).abs() < 1e-6);
    assert!(near(m.runtime_p50_ms, 550.0), "{m:?}");
    assert!(near(m.runtime_p95_ms, 955.0), "{m:?}");
    assert!(near(m.runtime_p99_ms, 991.0), "{m:?}");
    assert!(near(m.time_to_first_token_p50_ms, 55.0), "{m:?}");
    assert!((m.failure_rate - 1.0 / 11.0).abs() < 1e-9);
    assert_eq!((m.input_tokens, m.output_tokens), (100, 200));
    assert!(
        (m.throughput_per_minute - 10.0).abs() < 1e-9,
        "10 jobs in the 1-minute window"
    );
    assert_eq!(m.cost_usd, None, "no pricing table yet: absent, not zero");
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_streams_updates_until_the_client_leaves() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let mut a = admin(&app).await?;
    let e = a
        .watch_dashboard(v1::WatchDashboardRequest {
            interval_seconds: 61,
        })
        .await
        .expect_err("too slow");
    assert_eq!(e.code(), Code::InvalidArgument);
    let mut stream = a
        .watch_dashboard(v1::WatchDashboardRequest {
            interval_seconds: 1,
        })
        .await?
        .into_inner();
    let first = stream.message().await?.expect("an update");
    let second = stream.message().await?.expect("another update");
    let secs = |d: &v1::Dashboard| d.time.map_or(0, |t| t.seconds);
    assert!(secs(&second) > secs(&first), "a later update");
    assert_eq!(first.queues.len(), 4);
    assert_eq!(first.health.map(|h| h.status), Some("ok".to_owned()));
    drop(stream);
    let one = a
        .get_dashboard(v1::GetDashboardRequest {})
        .await?
        .into_inner();
    assert_eq!(one.workload.len(), 4);
    assert_eq!(one.performance.map(|p| p.windows.len()), Some(4));
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_and_load_test_run_against_the_sim_model() -> anyhow::Result<()> {
    let app = TestApp::builder()
        .job_types("general,code_review,security_analysis")
        .start()
        .await?;
    let run = |args: &[&str]| app.cli(args);
    let demo = run(&["demo", "--model", "sim"])?;
    for title in ["smart contract", "small diff", "general question"] {
        assert!(demo.contains(title), "{title} in {demo}");
    }
    let report = run(&[
        "load-test",
        "--jobs",
        "20",
        "--concurrency",
        "5",
        "--model",
        "sim",
    ])?;
    assert!(
        report.contains(r#"final states:         {"completed": 20}"#),
        "{report}"
    );
    assert!(report.contains("errors by code:       {}"), "{report}");
    assert!(report.contains("time to first token:  p50 "), "{report}");
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_upstream_only_the_simulated_model_is_accepted() -> anyhow::Result<()> {
    let app = TestApp::builder().without_api_key().start().await?;
    let mut c = app.client.clone();
    let e = c
        .submit_job(request("hi", "gpt-4o-mini"))
        .await
        .expect_err("no key");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("generation_config.model") && e.message().contains("OPENAI_API_KEY"),
        "{}",
        e.message()
    );
    let job = app.submit(request("hi", "")).await?;
    assert_eq!(
        job.generation_config.map(|g| g.model),
        Some("sim".to_owned()),
        "the default model is sim"
    );
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_and_forget_take_at_most_a_thousand_ids_a_call() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::fixture("basic.sse")).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let failed = fail_one(&app, &upstream, "fails").await?;
    let mut a = admin(&app).await?;
    let ids = |n: usize| -> Vec<String> {
        let mut ids: Vec<String> = (1..n).map(|_| uuid::Uuid::now_v7().to_string()).collect();
        ids.push(failed.id.clone());
        ids
    };

    // One over the limit: refused whole, naming the field and the limit; nothing is done.
    let too_many = a
        .retry_jobs(v1::RetryJobsRequest {
            job_ids: ids(1001),
            filter: None,
        })
        .await
        .expect_err("1001 ids");
    let forget_too_many = a
        .forget_failed_jobs(v1::ForgetFailedJobsRequest {
            job_ids: ids(1001),
            filter: None,
        })
        .await
        .expect_err("1001 ids");
    for e in [too_many, forget_too_many] {
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let bad = tonic_types::StatusExt::get_details_bad_request(&e).expect("BadRequest");
        assert_eq!(bad.field_violations[0].field, "job_ids");
        assert!(
            bad.field_violations[0].description.contains("1000"),
            "names the limit: {:?}",
            bad.field_violations[0]
        );
    }
    assert_eq!(
        app.wait_for_job(&failed.id, |_| true).await?.status(),
        v1::JobStatus::Failed
    );

    // The limit itself is fine (one statement's worth of ids on either store).
    let forgotten = a
        .forget_failed_jobs(v1::ForgetFailedJobsRequest {
            job_ids: ids(1000),
            filter: None,
        })
        .await?
        .into_inner();
    assert_eq!(forgotten.forgotten, 1);
    app.stop().await
}

/// `admin forget` names each job it did not forget and why: not failed, already forgotten,
/// or not found, which is also what another tenant's job reads as (its existence is not
/// revealed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_forget_names_the_jobs_it_did_not_forget() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::fixture("basic.sse")).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let failed = fail_one(&app, &upstream, "fails").await?;
    let done = app.submit(request("completes", "gpt-4o-mini")).await?;
    app.wait_for_job(&done.id, |j| j.status() == v1::JobStatus::Completed)
        .await?;
    let unknown = "0190b4d2-0000-7000-8000-000000000000";

    // Another tenant's admin: the other tenant's job reads exactly as an unknown one.
    let admin_b = app.key_for("tenant-b", Role::Admin).await?;
    let out = app
        .cli_command(&["admin", "forget", &failed.id, unknown])
        .env("LLMJOBS_API_KEY", &admin_b)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("0 failed job(s) forgotten"), "{stdout}");
    for id in [failed.id.as_str(), unknown] {
        assert!(
            stdout.contains(&format!("skipped {id}: no such job")),
            "{stdout}"
        );
    }

    // The operator: one forgotten, the others named with why.
    let stdout = app.cli(&["admin", "forget", &failed.id, &done.id, unknown])?;
    assert!(stdout.contains("1 failed job(s) forgotten"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "skipped {}: job is completed, not failed",
            done.id
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("skipped {unknown}: no such job")),
        "{stdout}"
    );
    assert!(
        !stdout.contains(&format!("skipped {}", failed.id)),
        "{stdout}"
    );
    let again = app.cli(&["admin", "forget", &failed.id])?;
    assert!(
        again.contains(&format!("skipped {}: already forgotten", failed.id)),
        "{again}"
    );
    app.stop().await
}

/// Tests about Redis or Postgres themselves, or about processes sharing them: the embedded
/// pass filters them out by name (`-- --skip ::servers::`, as `scripts/test` does).
mod servers {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn workers_come_and_go_and_health_notices() -> anyhow::Result<()> {
        crate::support::needs_worker_processes();
        let app = TestApp::builder()
            .without_worker()
            .arg("--lease-secs", "1")
            .start()
            .await?;
        let mut a = admin(&app).await?;
        assert!(
            a.list_workers(v1::ListWorkersRequest {})
                .await?
                .into_inner()
                .workers
                .is_empty()
        );
        // Waiting work and no worker: degraded.
        app.submit(request("waits", "sim")).await?;
        let h = a
            .get_system_health(v1::GetSystemHealthRequest {})
            .await?
            .into_inner();
        assert_eq!(h.status, "degraded", "{h:?}");
        assert!(
            h.reasons.iter().any(|r| r.contains("no live worker")),
            "{h:?}"
        );
        assert!(h.redis_latency_ms.is_some() && h.postgres_latency_ms.is_some());
        assert_eq!(h.backlog, 1);

        let mut worker = app.spawn_worker(&["--concurrency", "3"])?;
        let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
        let listed = loop {
            let w = a
                .list_workers(v1::ListWorkersRequest {})
                .await?
                .into_inner()
                .workers;
            if let Some(w) = w.into_iter().find(|w| w.pid == worker.0.id()) {
                break w;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "worker never listed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(listed.total_slots, 3);
        assert_eq!(listed.job_types, ["general"]);
        assert!(listed.resident_memory_mib.is_some_and(|m| m > 1.0));
        let h = a
            .get_system_health(v1::GetSystemHealthRequest {})
            .await?
            .into_inner();
        assert!(h.workers >= 1);

        worker.signal("KILL")?;
        worker.wait().await?;
        while a
            .list_workers(v1::ListWorkersRequest {})
            .await?
            .into_inner()
            .workers
            .iter()
            .any(|w| w.pid == listed.pid)
        {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "killed worker never dropped off"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        app.stop().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_of_a_dead_worker_wait_as_queued_with_true_waits_and_can_be_purged()
    -> anyhow::Result<()> {
        crate::support::needs_worker_processes();
        let upstream = TestUpstream::start(Reply::slow(100_000, 10, 20)).await?;
        let app = TestApp::builder()
            .upstream(upstream.base_url())
            .without_worker()
            .arg("--lease-secs", "1")
            .arg("--reconcile-secs", "1")
            .start()
            .await?;
        let mut a = admin(&app).await?;
        let mut worker = app.spawn_worker(&[])?;
        let mut jobs = Vec::new();
        for i in 0..2 {
            jobs.push(
                app.submit(with_priority(&format!("k{i}"), v1::Priority::High))
                    .await?,
            );
        }
        for j in &jobs {
            app.wait_for_job(&j.id, |j| j.output_tokens >= 1).await?;
        }
        a.pause_queue(v1::PauseQueueRequest {
            queue: "openai-general-high".into(),
        })
        .await?;
        // A surviving worker's claims reclaim expired leases; its reconciler updates the store.
        let _survivor = app.spawn_worker(&[])?;
        worker.signal("KILL")?;
        worker.wait().await?;
        // The leases expire, the reclaim puts the jobs back, and the reconciler tells the store.
        for j in &jobs {
            app.wait_for_job(&j.id, |j| j.status() == v1::JobStatus::Queued)
                .await?;
        }
        let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
        let high = loop {
            let s = stats(&mut a, "openai-general-high").await?;
            if s.pending == 2 {
                break s;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "never pending again: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            high.oldest_wait_ms < 60_000,
            "a true wait, not the epoch: {high:?}"
        );
        let purged = a
            .purge_queue(v1::PurgeQueueRequest {
                queue: "openai-general-high".into(),
            })
            .await?
            .into_inner();
        assert_eq!(purged.purged, 2);
        for j in &jobs {
            assert_eq!(
                app.wait_for_job(&j.id, |_| true).await?.status(),
                v1::JobStatus::Cancelled
            );
        }
        app.stop().await
    }
}

/// A tenant's admin manages its own tenant's failed jobs and reads its own audit events;
/// another tenant's failed jobs are invisible to it (unknown when named), and queue-wide
/// operations need the operator role (issue 15, item 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_admin_manages_only_its_own_tenant() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::fixture("basic.sse")).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let user_a = app.key_for("tenant-a", Role::User).await?;
    let admin_a = app.key_for("tenant-a", Role::Admin).await?;
    let admin_b = app.key_for("tenant-b", Role::Admin).await?;
    upstream.push_reply(Reply::fixture("truncated.sse"));
    let mut req = request("tenant A's failure", "gpt-4o-mini");
    req.max_attempts = Some(1);
    let job = JobServiceClient::new(app.keyed(Some(&user_a))?)
        .submit_job(req)
        .await?
        .into_inner()
        .job
        .context("no job")?;
    app.wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Failed)
        .await?;
    let failed_ids = |page: v1::ListFailedJobsResponse| -> Vec<String> {
        page.failed_jobs
            .into_iter()
            .filter_map(|f| f.job.map(|j| j.id))
            .collect()
    };

    // Tenant B's admin sees nothing of it and cannot touch it, named or not.
    let mut b = QueueAdminServiceClient::new(app.keyed(Some(&admin_b))?);
    let seen = b
        .list_failed_jobs(v1::ListFailedJobsRequest::default())
        .await?
        .into_inner();
    assert!(failed_ids(seen).is_empty());
    let named = b
        .retry_jobs(v1::RetryJobsRequest {
            job_ids: vec![job.id.clone()],
            filter: None,
        })
        .await?
        .into_inner();
    assert!(named.retried_job_ids.is_empty(), "{named:?}");
    assert_eq!(
        named
            .skipped
            .iter()
            .map(|s| (s.job_id.as_str(), s.reason.as_str()))
            .collect::<Vec<_>>(),
        [(job.id.as_str(), "no such job")]
    );
    let all = b.retry_jobs(v1::RetryJobsRequest::default()).await?;
    assert!(all.into_inner().retried_job_ids.is_empty());
    let forgotten = b
        .forget_failed_jobs(v1::ForgetFailedJobsRequest {
            job_ids: vec![job.id.clone()],
            filter: None,
        })
        .await?
        .into_inner();
    assert_eq!(forgotten.forgotten, 0);
    assert_eq!(
        forgotten
            .skipped
            .iter()
            .map(|s| (s.job_id.as_str(), s.reason.as_str()))
            .collect::<Vec<_>>(),
        [(job.id.as_str(), "no such job")],
        "as an unknown job reads"
    );
    let asked = b
        .list_audit_events(v1::ListAuditEventsRequest {
            tenant: "tenant-a".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(asked.audit_events.is_empty(), "{asked:?}");
    let own = b
        .list_audit_events(v1::ListAuditEventsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .audit_events;
    assert!(own.iter().all(|e| e.tenant == "tenant-b"), "{own:?}");
    for denied in [
        b.pause_queue(v1::PauseQueueRequest {
            queue: "openai-general-normal".into(),
        })
        .await
        .map(|_| ()),
        b.get_queue_stats(v1::GetQueueStatsRequest {})
            .await
            .map(|_| ()),
    ] {
        let status = denied.expect_err("queue-wide operations need the operator role");
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(status.message().contains("operator"), "{status:?}");
    }

    // Tenant A's admin lists it and runs it again; the operator sees it too.
    let operator = app.admin_client()?;
    let listed = operator
        .clone()
        .list_failed_jobs(v1::ListFailedJobsRequest::default())
        .await?
        .into_inner();
    assert_eq!(failed_ids(listed), [job.id.as_str()]);
    let mut a = QueueAdminServiceClient::new(app.keyed(Some(&admin_a))?);
    let listed = a
        .list_failed_jobs(v1::ListFailedJobsRequest::default())
        .await?
        .into_inner();
    assert_eq!(failed_ids(listed), [job.id.as_str()]);
    let retried = a
        .retry_jobs(v1::RetryJobsRequest {
            job_ids: vec![job.id.clone()],
            filter: None,
        })
        .await?
        .into_inner();
    assert_eq!(retried.retried_job_ids, [job.id.as_str()]);
    app.wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Completed)
        .await?;
    app.stop().await
}
