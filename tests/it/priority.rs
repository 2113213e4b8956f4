//! Claim order: strict priority inside a job type, turns across job types.

use std::time::Duration;

use llm_jobs::proto::v1;

use crate::support::{
    PATIENCE, TestApp, request,
    upstream::{Reply, TestUpstream},
};

fn prompt_of(body: &serde_json::Value) -> String {
    body["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Occupies the single worker slot until the job's slow stream ends.
async fn occupy(app: &TestApp, upstream: &TestUpstream) -> anyhow::Result<v1::Job> {
    upstream.push_reply(Reply::Slow {
        tokens: 2,
        first_token_delay: Duration::from_millis(400),
        interval: Duration::from_millis(10),
    });
    let blocker = app.submit(request("blocker", "gpt-4o-mini")).await?;
    anyhow::ensure!(
        upstream.wait_for_requests(1, PATIENCE).await,
        "blocker never ran"
    );
    Ok(blocker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_runs_first_and_low_last() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::fixture("basic.sse")).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .concurrency(1)
        .start()
        .await?;
    occupy(&app, &upstream).await?;
    let mut ids = Vec::new();
    for (name, p) in [
        ("low", v1::Priority::Low),
        ("normal", v1::Priority::Normal),
        ("high", v1::Priority::High),
        ("urgent", v1::Priority::Urgent),
    ] {
        let mut req = request(name, "gpt-4o-mini");
        req.priority = p.into();
        let job = app.submit(req).await?;
        let expected_queue = match name {
            "normal" => "openai-general".to_owned(),
            other => format!("openai-general-{other}"),
        };
        assert_eq!(job.queue, expected_queue);
        ids.push(job.id);
    }
    for id in &ids {
        app.wait_for_job(id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
    }
    let order: Vec<_> = upstream
        .requests()
        .iter()
        .map(|r| prompt_of(&r.body))
        .collect();
    assert_eq!(order, ["blocker", "urgent", "high", "normal", "low"]);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_types_take_turns() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::fixture("basic.sse")).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .concurrency(1)
        .job_types("general,code_review")
        .start()
        .await?;
    occupy(&app, &upstream).await?;
    let mut ids = Vec::new();
    for name in ["g1", "g2", "g3", "c1", "c2", "c3"] {
        let mut req = request(name, "gpt-4o-mini");
        req.job_type = if name.starts_with('g') {
            "general"
        } else {
            "code_review"
        }
        .into();
        ids.push(app.submit(req).await?.id);
    }
    for id in &ids {
        app.wait_for_job(id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
    }
    let order: Vec<_> = upstream
        .requests()
        .iter()
        .skip(1)
        .map(|r| prompt_of(&r.body))
        .collect();
    let kinds: String = order
        .iter()
        .map(|p| p.chars().next().unwrap_or('?'))
        .collect();
    assert!(
        kinds == "gcgcgc" || kinds == "cgcgcg",
        "types alternate: {order:?}"
    );
    for prefix in ["g", "c"] {
        let same: Vec<_> = order
            .iter()
            .filter(|p| p.starts_with(prefix))
            .cloned()
            .collect();
        assert_eq!(
            same,
            [1, 2, 3].map(|i| format!("{prefix}{i}")),
            "FIFO inside a queue"
        );
    }
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_job_type_does_not_give_its_turn_to_a_neighbour() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::fixture("basic.sse")).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .concurrency(1)
        .job_types("general,code_review,security_analysis")
        .start()
        .await?;
    occupy(&app, &upstream).await?;
    let mut ids = Vec::new();
    for name in ["c1", "c2", "c3", "s1", "s2", "s3"] {
        let mut req = request(name, "gpt-4o-mini");
        req.job_type = if name.starts_with('c') {
            "code_review"
        } else {
            "security_analysis"
        }
        .into();
        ids.push(app.submit(req).await?.id);
    }
    for id in &ids {
        app.wait_for_job(id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
    }
    let kinds: String = upstream
        .requests()
        .iter()
        .skip(1)
        .map(|r| prompt_of(&r.body).chars().next().unwrap_or('?'))
        .collect();
    assert!(
        kinds == "cscscs" || kinds == "scscsc",
        "types alternate: {kinds}"
    );
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_cap_limits_how_many_jobs_of_one_queue_run_at_once() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::fixture("basic.sse")).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .concurrency(4)
        .job_types("general,code_review")
        .arg("--queue-cap", "1")
        .start()
        .await?;
    // Three slow jobs in one queue: the cap lets one run at a time.
    for _ in 0..3 {
        upstream.push_reply(Reply::Slow {
            tokens: 20,
            first_token_delay: Duration::from_millis(10),
            interval: Duration::from_millis(20),
        });
    }
    let mut jobs = Vec::new();
    for i in 0..3 {
        jobs.push(
            app.submit(request(&format!("capped {i}"), "gpt-4o-mini"))
                .await?,
        );
    }
    app.wait_for_job(&jobs[0].id, |j| j.status() == v1::JobStatus::Running)
        .await?;
    let mut most_running = 0;
    for _ in 0..20 {
        let mut running = 0;
        for j in &jobs {
            let now = app.wait_for_job(&j.id, |_| true).await?;
            if now.status() == v1::JobStatus::Running {
                running += 1;
            }
        }
        most_running = most_running.max(running);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(most_running, 1, "queue cap 1");
    for j in &jobs {
        app.wait_for_job(&j.id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
    }
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_balancing_serves_the_bigger_backlog_first() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::fixture("basic.sse")).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .concurrency(1)
        .job_types("general,code_review")
        .arg("--balance", "auto")
        .start()
        .await?;
    occupy(&app, &upstream).await?;
    let mut ids = Vec::new();
    for name in ["g1", "c1", "c2", "c3"] {
        let mut req = request(name, "gpt-4o-mini");
        req.job_type = if name.starts_with('g') {
            "general"
        } else {
            "code_review"
        }
        .into();
        ids.push(app.submit(req).await?.id);
    }
    for id in &ids {
        app.wait_for_job(id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
    }
    let order: Vec<_> = upstream
        .requests()
        .iter()
        .skip(1)
        .map(|r| prompt_of(&r.body))
        .collect();
    assert_eq!(order[0], "c1", "three waiting outweigh one: {order:?}");
    assert!(order.contains(&"g1".to_owned()), "{order:?}");
    app.stop().await
}
