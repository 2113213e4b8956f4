//! Claim order: strict priority inside a job type, turns across job types.

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

/// Occupies the single worker slot with a job whose stream ends only when the returned gate
/// opens (`add_permits(1)`): every job submitted meanwhile waits, however slow the submits.
async fn occupy(
    app: &TestApp,
    upstream: &TestUpstream,
) -> anyhow::Result<std::sync::Arc<tokio::sync::Semaphore>> {
    let (held, end) = Reply::held_end(2);
    upstream.push_reply(held);
    app.submit(request("blocker", "gpt-4o-mini")).await?;
    anyhow::ensure!(
        upstream.wait_for_requests(1, PATIENCE).await,
        "blocker never ran"
    );
    Ok(end)
}

/// Runs `jobs` (prompt, job type) on one worker slot behind a blocker, with `job_types`
/// configured and `extra` flags; returns the prompts in the order they reached the upstream.
async fn order_behind_blocker(
    job_types: &str,
    extra: &[(&str, &str)],
    jobs: &[(&str, &str)],
) -> anyhow::Result<Vec<String>> {
    let upstream = TestUpstream::start(Reply::fixture("basic.sse")).await?;
    let mut builder = TestApp::builder()
        .upstream(upstream.base_url())
        .concurrency(1)
        .job_types(job_types);
    for (flag, value) in extra {
        builder = builder.arg(flag, value);
    }
    let app = builder.start().await?;
    let blocker = occupy(&app, &upstream).await?;
    let mut ids = Vec::new();
    for (prompt, job_type) in jobs {
        let mut req = request(prompt, "gpt-4o-mini");
        req.job_type = (*job_type).into();
        ids.push(app.submit(req).await?.id);
    }
    // `auto` reuses its weights for 100 ms: past that, the claim after the blocker weighs the
    // backlog just submitted (a lower bound, so a slow machine only waits longer).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    blocker.add_permits(1);
    for id in &ids {
        app.wait_for_job(id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
    }
    let order = upstream
        .requests()
        .iter()
        .skip(1)
        .map(|r| prompt_of(&r.body))
        .collect();
    app.stop().await?;
    Ok(order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_runs_first_and_low_last() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::fixture("basic.sse")).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .concurrency(1)
        .start()
        .await?;
    let blocker = occupy(&app, &upstream).await?;
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
    blocker.add_permits(1);
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

/// A cap of one per queue: the upstream sees one call at a time from the capped queue, while
/// another queue's job, held open the whole time, runs beside them. Counted where the calls
/// land (the upstream's most open streams), not by sampling job states one call at a time,
/// which can see a job start before the read of the one that just ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_cap_limits_how_many_jobs_of_one_queue_run_at_once() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::fixture("basic.sse")).await?;
    let (held, end) = Reply::held_end(2);
    upstream.route("gpt-4o", held);
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .concurrency(4)
        .job_types("general,code_review")
        .arg("--queue-cap", "1")
        .start()
        .await?;
    let mut other = request("other queue", "gpt-4o");
    other.job_type = "code_review".into();
    let other = app.submit(other).await?;
    anyhow::ensure!(
        upstream.wait_for_requests(1, PATIENCE).await,
        "the other queue's job never ran"
    );
    // Three jobs in one queue with free slots for all: the cap runs them one after another.
    for _ in 0..3 {
        upstream.push_reply(Reply::slow(5, 10, 20));
    }
    let mut jobs = Vec::new();
    for i in 0..3 {
        jobs.push(
            app.submit(request(&format!("capped {i}"), "gpt-4o-mini"))
                .await?,
        );
    }
    for j in &jobs {
        app.wait_for_job(&j.id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
    }
    end.add_permits(1);
    app.wait_for_job(&other.id, |j| j.status() == v1::JobStatus::Completed)
        .await?;
    assert_eq!(
        upstream.most_open(),
        2,
        "one capped job at a time, beside the other queue's"
    );
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_types_take_turns() -> anyhow::Result<()> {
    let (g, c) = ("general", "code_review");
    let order = order_behind_blocker(
        "general,code_review",
        &[],
        &[
            ("g1", g),
            ("g2", g),
            ("g3", g),
            ("c1", c),
            ("c2", c),
            ("c3", c),
        ],
    )
    .await?;
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
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_job_type_does_not_give_its_turn_to_a_neighbour() -> anyhow::Result<()> {
    let (c, s) = ("code_review", "security_analysis");
    let order = order_behind_blocker(
        "general,code_review,security_analysis",
        &[],
        &[
            ("c1", c),
            ("c2", c),
            ("c3", c),
            ("s1", s),
            ("s2", s),
            ("s3", s),
        ],
    )
    .await?;
    let kinds: String = order
        .iter()
        .map(|p| p.chars().next().unwrap_or('?'))
        .collect();
    assert!(
        kinds == "cscscs" || kinds == "scscsc",
        "types alternate: {kinds}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_balancing_serves_the_bigger_backlog_first() -> anyhow::Result<()> {
    let (g, c) = ("general", "code_review");
    let order = order_behind_blocker(
        "general,code_review",
        &[("--balance", "auto")],
        &[("g1", g), ("c1", c), ("c2", c), ("c3", c)],
    )
    .await?;
    assert_eq!(order[0], "c1", "three waiting outweigh one: {order:?}");
    assert!(order.contains(&"g1".to_owned()), "{order:?}");
    Ok(())
}
