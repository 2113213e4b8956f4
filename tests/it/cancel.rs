//! Cancelling queued and running jobs.

use llm_jobs::proto::v1::{self, job_event::Kind};

use crate::support::{
    PATIENCE, TestApp, assert_well_formed, request,
    upstream::{Reply, TestUpstream},
};

async fn cancel(app: &TestApp, id: &str) -> anyhow::Result<v1::Job> {
    let mut c = app.client.clone();
    Ok(c.cancel_job(v1::CancelJobRequest {
        job_id: id.into(),
        reason: String::new(),
    })
    .await?
    .into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_stops_it_and_closes_the_upstream_connection() -> anyhow::Result<()>
{
    let upstream = TestUpstream::start(Reply::slow(10_000, 10, 20)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let job = app.submit(request("long story", "gpt-4o-mini")).await?;
    let watcher = app.watch_in_background(&job.id);
    app.wait_for_job(&job.id, |j| j.output_tokens >= 3).await?;
    let returned = cancel(&app, &job.id).await?;
    assert!(matches!(
        returned.status(),
        v1::JobStatus::Running | v1::JobStatus::Cancelled
    ));

    let events = watcher.await??;
    assert_well_formed(&events, 0);
    assert!(matches!(
        events.last().and_then(|e| e.kind.clone()),
        Some(Kind::Cancelled(_))
    ));
    assert!(
        upstream.wait_for_disconnects(1, PATIENCE).await,
        "upstream connection closed"
    );

    let done = app
        .wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Cancelled)
        .await?;
    assert!(done.end_time.is_some());
    let result = app.result(&job.id).await?;
    assert_eq!(result.status(), v1::JobStatus::Cancelled);
    assert!(
        result.content.starts_with("tok0 tok1 tok2 "),
        "partial text kept: {:?}",
        result.content
    );

    // Cancelling again changes nothing.
    let again = cancel(&app, &job.id).await?;
    assert_eq!(again.status(), v1::JobStatus::Cancelled);
    assert_eq!(upstream.requests().len(), 1);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_queued_job_removes_it_from_its_queue() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::fixture("basic.sse")).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .concurrency(1)
        .start()
        .await?;
    upstream.push_reply(Reply::slow(3, 300, 10));
    let blocker = app.submit(request("blocker", "gpt-4o-mini")).await?;
    assert!(upstream.wait_for_requests(1, PATIENCE).await);
    let queued = app.submit(request("never runs", "gpt-4o-mini")).await?;
    let cancelled = cancel(&app, &queued.id).await?;
    assert_eq!(cancelled.status(), v1::JobStatus::Cancelled);

    let events = app.watch(&queued.id, 0).await?;
    assert_well_formed(&events, 0);
    assert!(matches!(events[0].kind, Some(Kind::Queued(_))));
    assert!(matches!(events[1].kind, Some(Kind::StageChanged(_))));
    assert!(matches!(events[2].kind, Some(Kind::Cancelled(_))));

    app.wait_for_job(&blocker.id, |j| j.status() == v1::JobStatus::Completed)
        .await?;
    // A job submitted after the cancel runs, so the worker is free; the cancelled one never did.
    let after = app.submit(request("runs", "gpt-4o-mini")).await?;
    app.wait_for_job(&after.id, |j| j.status() == v1::JobStatus::Completed)
        .await?;
    let prompts: Vec<_> = upstream
        .requests()
        .iter()
        .map(|r| r.body["messages"][0]["content"].clone())
        .collect();
    assert_eq!(prompts, ["blocker", "runs"]);

    // A finished job is returned unchanged.
    let finished = cancel(&app, &after.id).await?;
    assert_eq!(finished.status(), v1::JobStatus::Completed);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_returns_it_cancelled_with_the_reason() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::slow(10_000, 10, 20)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let job = app.submit(request("long", "gpt-4o-mini")).await?;
    app.wait_for_job(&job.id, |j| j.output_tokens >= 2).await?;
    let mut c = app.client.clone();
    // A reason that would rewrite a watcher's terminal is refused, and cancels nothing.
    let refused = c
        .cancel_job(v1::CancelJobRequest {
            job_id: job.id.clone(),
            reason: "\u{1b}[2J".repeat(3),
        })
        .await
        .expect_err("terminal escapes");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let cancelled = c
        .cancel_job(v1::CancelJobRequest {
            job_id: job.id.clone(),
            reason: "user pressed stop".into(),
        })
        .await?
        .into_inner();
    assert_eq!(cancelled.status(), v1::JobStatus::Cancelled);
    let events = app.watch(&job.id, 0).await?;
    let Some(Kind::Cancelled(c)) = events.last().and_then(|e| e.kind.clone()) else {
        panic!("ends cancelled: {events:?}");
    };
    assert_eq!(c.reason, "user pressed stop");
    // Resuming at the terminal event ends at once; past it, the bookmark is wrong and the
    // stream says so instead of ending quietly.
    let terminal = events.last().map_or(0, |e| e.sequence);
    assert!(app.watch(&job.id, terminal).await?.is_empty());
    let mut client = app.client.clone();
    let mut past = client
        .stream_job(v1::StreamJobRequest {
            job_id: job.id.clone(),
            after_sequence: terminal + 3,
        })
        .await?
        .into_inner();
    let e = past.message().await.expect_err("past the end");
    assert_eq!(e.code(), tonic::Code::OutOfRange);
    assert!(
        e.message().contains(&format!("last event ({terminal})")),
        "{}",
        e.message()
    );
    // A resume far past the end is refused clearly, not retried forever.
    let mut client = app.client.clone();
    let e = client
        .stream_job(v1::StreamJobRequest {
            job_id: job.id.clone(),
            after_sequence: 1 << 62,
        })
        .await
        .expect_err("too far");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(PATIENCE.as_secs() > 0);
    app.stop().await
}
