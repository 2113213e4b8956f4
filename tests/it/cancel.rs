//! Cancelling queued and running jobs. How the event log orders a cancel and an attempt's
//! end is part of the log's contract (`contract::events`).

use llm_jobs::proto::v1::{self, job_event::Kind};

use crate::support::{
    PATIENCE, TestApp, assert_well_formed, request, set_cancel_flag,
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
    // The blocker holds the only slot until the cancel is in, however slow the calls.
    let (held, end) = Reply::held_end(3);
    upstream.push_reply(held);
    let blocker = app.submit(request("blocker", "gpt-4o-mini")).await?;
    assert!(upstream.wait_for_requests(1, PATIENCE).await);
    let queued = app.submit(request("never runs", "gpt-4o-mini")).await?;
    let cancelled = cancel(&app, &queued.id).await?;
    assert_eq!(cancelled.status(), v1::JobStatus::Cancelled);
    end.add_permits(1);

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

/// Every event of a job's log, through a watcher that ends after the terminal event.
fn terminal_kinds(events: &[v1::JobEvent]) -> Vec<&Kind> {
    events
        .iter()
        .filter_map(|e| e.kind.as_ref())
        .filter(|k| matches!(k, Kind::Completed(_) | Kind::Failed(_) | Kind::Cancelled(_)))
        .collect()
}

/// The whole answer is out and the upstream has not ended its stream yet when the client
/// cancels: the cancel wins, and the job keeps every token as its partial output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_after_the_last_token_before_the_end_wins() -> anyhow::Result<()> {
    let (reply, end) = Reply::held_end(5);
    let upstream = TestUpstream::start(reply).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let job = app.submit(request("short story", "gpt-4o-mini")).await?;
    app.wait_for_job(&job.id, |j| j.output_tokens >= 5).await?;
    let returned = cancel(&app, &job.id).await?;
    // Held streams end once the cancel is in: a worker that had not stopped would complete.
    end.add_permits(1);
    assert_eq!(returned.status(), v1::JobStatus::Cancelled);

    let events = app.watch(&job.id, 0).await?;
    assert_well_formed(&events, 0);
    assert!(matches!(
        terminal_kinds(&events).as_slice(),
        [Kind::Cancelled(_)]
    ));
    let result = app.result(&job.id).await?;
    assert_eq!(result.status(), v1::JobStatus::Cancelled);
    assert_eq!(result.content, "tok0 tok1 tok2 tok3 tok4 ");
    app.stop().await
}

/// A cancel sent after the job ended returns it as it ended and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_after_completion_returns_it_completed() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::fixture("basic.sse")).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let job = app.submit(request("hello", "gpt-4o-mini")).await?;
    let done = app
        .wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Completed)
        .await?;
    let returned = cancel(&app, &job.id).await?;
    assert_eq!(returned.status(), v1::JobStatus::Completed);
    assert_eq!(returned.end_time, done.end_time);
    let events = app.watch(&job.id, 0).await?;
    assert_well_formed(&events, 0);
    assert!(matches!(
        terminal_kinds(&events).as_slice(),
        [Kind::Completed(_)]
    ));
    let result = app.result(&job.id).await?;
    assert_eq!(result.status(), v1::JobStatus::Completed);
    app.stop().await
}

/// Tests about Redis itself: the embedded pass filters them out by name
/// (`-- --skip ::servers::`).
mod servers {
    use super::*;

    /// The race of the soak: the cancel's flag reaches Redis after the worker's last token and
    /// before its end, and its pub/sub signal never reaches the worker. The attempt's claim on
    /// its end reads the flag, so the job ends cancelled, not completed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancel_flag_set_between_the_last_token_and_the_end_wins_without_its_signal()
    -> anyhow::Result<()> {
        crate::support::needs_servers(
            "sets the cancel flag in Redis without its pub/sub signal; the in-process order is \
             part of the event log's contract",
        );
        let (reply, end) = Reply::held_end(5);
        let upstream = TestUpstream::start(reply).await?;
        let app = TestApp::builder()
            .upstream(upstream.base_url())
            .start()
            .await?;
        let job = app.submit(request("short story", "gpt-4o-mini")).await?;
        app.wait_for_job(&job.id, |j| j.output_tokens >= 5).await?;

        set_cancel_flag(&app, &job.id, "signal lost").await?;
        end.add_permits(1);

        let done = app
            .wait_for_job(&job.id, |j| {
                matches!(
                    j.status(),
                    v1::JobStatus::Completed | v1::JobStatus::Failed | v1::JobStatus::Cancelled
                )
            })
            .await?;
        assert_eq!(done.status(), v1::JobStatus::Cancelled);
        let events = app.watch(&job.id, 0).await?;
        assert_well_formed(&events, 0);
        let Some(Kind::Cancelled(c)) = events.last().and_then(|e| e.kind.clone()) else {
            panic!("ends cancelled: {events:?}");
        };
        assert_eq!(c.reason, "signal lost");
        assert_eq!(terminal_kinds(&events).len(), 1);
        let result = app.result(&job.id).await?;
        assert_eq!(result.content, "tok0 tok1 tok2 tok3 tok4 ");
        // Asked again, the cancel gets the truth and sets nothing new.
        let again = cancel(&app, &job.id).await?;
        assert_eq!(again.status(), v1::JobStatus::Cancelled);
        app.stop().await
    }
}
