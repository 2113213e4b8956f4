//! Crashes and faults: a SIGKILLed worker process, a worker paused past its lease (fencing),
//! long streams under a short lease, SIGTERM drain, Redis losing the job's keys, and Postgres
//! connections cut mid-run. Workers run as real child processes where a process must die.

use std::time::Duration;

use llm_jobs::proto::v1::{self, job_event::Kind};

use crate::support::{
    PATIENCE, TestApp, assert_well_formed, attempts_started, request, text_of,
    upstream::{Reply, TestUpstream},
};

fn tokens(n: usize) -> String {
    (0..n).map(|i| format!("tok{i} ")).collect()
}

fn slow(n: usize, interval_ms: u64) -> Reply {
    Reply::Slow {
        tokens: n,
        first_token_delay: Duration::from_millis(10),
        interval: Duration::from_millis(interval_ms),
    }
}

/// Submits `req` to a server without a worker of its own, lets a `llm-jobs worker` process
/// (2 s leases) stream its 40 tokens, then kills that process while the upstream holds the
/// stream's end (later attempts get the whole stream). Needs the servers: worker processes
/// cannot share the in-process backends.
async fn a_job_whose_worker_was_killed(
    req: v1::SubmitJobRequest,
) -> anyhow::Result<Option<(TestUpstream, TestApp, v1::Job)>> {
    crate::support::needs_worker_processes();
    let upstream = TestUpstream::start(slow(40, 25)).await?;
    // Held for good: the attempt cannot end before the kill, however slow the machine.
    let (held, _never) = Reply::held_end(40);
    upstream.push_reply(held);
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .without_worker()
        .arg("--lease-secs", "2")
        .start()
        .await?;
    let mut first = app.spawn_worker(&[])?;
    let job = app.submit(req).await?;
    app.wait_for_job(&job.id, |j| j.output_tokens >= 3).await?;
    first.signal("KILL")?;
    first.wait().await?;
    Ok(Some((upstream, app, job)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_longer_than_several_leases_is_never_reclaimed_while_its_worker_lives()
-> anyhow::Result<()> {
    let upstream = TestUpstream::start(slow(60, 50)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .arg("--lease-secs", "1")
        .start()
        .await?;
    let job = app
        .submit(request("three leases long", "gpt-4o-mini"))
        .await?;
    let done = app
        .wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Completed)
        .await?;
    assert_eq!(done.attempts, 1);
    assert_eq!(upstream.requests().len(), 1);
    assert_eq!(app.result(&job.id).await?.content, tokens(60));
    app.stop().await
}

fn is_terminal(status: v1::JobStatus) -> bool {
    matches!(
        status,
        v1::JobStatus::Completed | v1::JobStatus::Failed | v1::JobStatus::Cancelled
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_end_with_unavailable_when_the_server_shuts_down() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(slow(10_000, 20)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let job = app.submit(request("endless", "gpt-4o-mini")).await?;
    let mut c = app.client.clone();
    let mut stream = c
        .stream_job(v1::StreamJobRequest {
            job_id: job.id.clone(),
            after_sequence: 0,
        })
        .await?
        .into_inner();
    app.wait_for_job(&job.id, |j| j.output_tokens >= 1).await?;
    let watcher = tokio::spawn(async move {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status.code()),
            }
        }
    });
    app.stop().await?;
    let code = tokio::time::timeout(PATIENCE, watcher).await??;
    assert_eq!(code, Some(tonic::Code::Unavailable));
    Ok(())
}

/// Tests about Redis or Postgres themselves, or about processes sharing them: the embedded
/// pass filters them out by name (`-- --skip ::servers::`, as `scripts/test` does).
mod servers {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_worker_process_loses_its_lease_and_another_worker_finishes_the_job()
    -> anyhow::Result<()> {
        let Some((upstream, app, job)) =
            a_job_whose_worker_was_killed(request("survive a crash", "gpt-4o-mini")).await?
        else {
            return Ok(());
        };
        let _second = app.spawn_worker(&[])?;
        let done = app
            .wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
        assert_eq!(done.attempts, 2);
        let result = app.result(&job.id).await?;
        assert_eq!(result.content, tokens(40));
        // The lost attempt is on record, as an attempt error and in the log before attempt 2.
        let errors: Vec<_> = result
            .attempt_errors
            .iter()
            .map(|e| (e.attempt, e.error.as_ref().map(|e| e.code.as_str())))
            .collect();
        assert_eq!(errors, [(1, Some("worker_lost"))]);
        let events = app.watch(&job.id, 0).await?;
        assert_well_formed(&events, 0);
        assert_eq!(attempts_started(&events), [1, 2]);
        let lost = events
            .iter()
            .position(|e| {
                matches!(&e.kind, Some(Kind::AttemptFailed(f))
                if f.attempt == 1 && f.will_retry
                    && f.error.as_ref().is_some_and(|e| e.code == "worker_lost"))
            })
            .expect("attempt_failed for the lost attempt");
        let second = events
            .iter()
            .position(|e| matches!(&e.kind, Some(Kind::Started(s)) if s.attempt == 2))
            .expect("attempt 2 started");
        assert!(
            lost < second,
            "the loss is reported before attempt 2 starts"
        );
        assert_eq!(text_of(&events), tokens(40));
        assert_eq!(upstream.requests().len(), 2, "one request per attempt");
        app.stop().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attempts_lost_with_their_worker_count_against_max_attempts() -> anyhow::Result<()> {
        let Some((upstream, app, job)) = a_job_whose_worker_was_killed(v1::SubmitJobRequest {
            max_attempts: Some(1),
            ..request("crash me once", "gpt-4o-mini")
        })
        .await?
        else {
            return Ok(());
        };

        // The lost attempt was the only one allowed: the next worker fails the job instead of
        // calling the upstream again.
        let _second = app.spawn_worker(&[])?;
        let failed = app
            .wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Failed)
            .await?;
        let error = failed.error.unwrap_or_default();
        assert_eq!(error.code, "attempts_exhausted");
        assert!(
            error.message.contains("1 earlier attempt(s)"),
            "{}",
            error.message
        );
        assert_eq!(upstream.requests().len(), 1, "no second upstream call");
        let events = app.watch(&job.id, 0).await?;
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(
                    e.kind,
                    Some(Kind::Completed(_) | Kind::Failed(_) | Kind::Cancelled(_))
                ))
                .count(),
            1
        );
        assert!(matches!(
            events.last().and_then(|e| e.kind.as_ref()),
            Some(Kind::Failed(_))
        ));
        assert!(
            events
                .iter()
                .any(|e| matches!(&e.kind, Some(Kind::AttemptFailed(f))
            if f.attempt == 1 && !f.will_retry
                && f.error.as_ref().is_some_and(|e| e.code == "worker_lost"))),
            "the lost attempt is reported, with no retry to come"
        );
        app.stop().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_paused_past_its_lease_is_fenced_off() -> anyhow::Result<()> {
        crate::support::needs_worker_processes();
        let upstream = TestUpstream::start(slow(40, 25)).await?;
        let app = TestApp::builder()
            .upstream(upstream.base_url())
            .without_worker()
            .arg("--lease-secs", "1")
            .start()
            .await?;
        let paused = app.spawn_worker(&[])?;
        let job = app.submit(request("fence me", "gpt-4o-mini")).await?;
        app.wait_for_job(&job.id, |j| j.output_tokens >= 2).await?;
        paused.signal("STOP")?;
        let _other = app.spawn_worker(&[])?;
        app.wait_for_job(&job.id, |j| j.attempts == 2).await?;
        // The first worker wakes up still streaming attempt 1; nothing of it may land.
        paused.signal("CONT")?;
        let done = app
            .wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
        assert_eq!(done.attempts, 2);
        let events = app.watch(&job.id, 0).await?;
        assert_well_formed(&events, 0);
        assert_eq!(attempts_started(&events), [1, 2]);
        assert_eq!(
            text_of(&events),
            tokens(40),
            "no stale token after attempt 2 started"
        );
        assert_eq!(app.result(&job.id).await?.content, tokens(40));
        app.stop().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigterm_drains_running_jobs_and_hands_back_the_rest() -> anyhow::Result<()> {
        crate::support::needs_worker_processes();
        let upstream = TestUpstream::start(slow(10_000, 20)).await?;
        let app = TestApp::builder()
            .upstream(upstream.base_url())
            .without_worker()
            .start()
            .await?;
        let mut worker = app.spawn_worker(&["--shutdown-grace-secs", "2", "--concurrency", "2"])?;
        upstream.push_reply(slow(50, 20));
        let short = app
            .submit(request("finishes in time", "gpt-4o-mini"))
            .await?;
        app.wait_for_job(&short.id, |j| j.output_tokens >= 1)
            .await?;
        let long = app
            .submit(request("too long to drain", "gpt-4o-mini"))
            .await?;
        app.wait_for_job(&long.id, |j| j.output_tokens >= 1).await?;

        worker.signal("TERM")?;
        let status = worker.wait().await?;
        assert!(status.success(), "clean exit: {status:?}");
        let short_done = app
            .wait_for_job(&short.id, |j| is_terminal(j.status()))
            .await?;
        assert_eq!(
            short_done.status(),
            v1::JobStatus::Completed,
            "finished within the drain"
        );
        let handed_back = app.wait_for_job(&long.id, |_| true).await?;
        assert_eq!(
            handed_back.status(),
            v1::JobStatus::Queued,
            "given back, not failed"
        );
        let mut c = app.client.clone();
        let mut s = c
            .stream_job(v1::StreamJobRequest {
                job_id: long.id.clone(),
                after_sequence: 0,
            })
            .await?
            .into_inner();
        let mut handed_back_event = None;
        while let Some(ev) = s.message().await? {
            if let Some(Kind::AttemptFailed(f)) = ev.kind {
                handed_back_event = Some(f);
                break;
            }
        }
        let f = handed_back_event.expect("an attempt-failed event");
        assert!(f.will_retry);
        assert_eq!(f.error.unwrap_or_default().code, "worker_shutdown");
        assert!(
            upstream.wait_for_disconnects(1, PATIENCE).await,
            "its upstream request dropped"
        );

        upstream.push_reply(Reply::fixture("basic.sse"));
        let _next = app.spawn_worker(&[])?;
        let done = app
            .wait_for_job(&long.id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
        assert_eq!(done.attempts, 2);
        app.stop().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_survive_redis_losing_their_keys() -> anyhow::Result<()> {
        crate::support::needs_servers("deletes Redis keys");
        let upstream = TestUpstream::start(slow(40, 25)).await?;
        let app = TestApp::builder()
            .upstream(upstream.base_url())
            .concurrency(1)
            .arg("--lease-secs", "2")
            .arg("--reconcile-secs", "1")
            .start()
            .await?;
        let running = app.submit(request("running", "gpt-4o-mini")).await?;
        app.wait_for_job(&running.id, |j| j.output_tokens >= 3)
            .await?;
        let queued = app.submit(request("queued", "gpt-4o-mini")).await?;
        let watcher = app.watch_in_background(&running.id);
        // The watcher must be following the job's live channel before its keys go.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while crate::watchers::subscriptions(&app, &running.id).await? == 0 {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the watcher never subscribed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        app.flush_redis().await?;

        let mut done = Vec::new();
        for id in [&running.id, &queued.id] {
            done.push(
                app.wait_for_job(id, |j| j.status() == v1::JobStatus::Completed)
                    .await?,
            );
            assert_eq!(app.result(id).await?.content, tokens(40));
        }
        // The running job's worker claimed it again and its attempt went on; the queued one
        // was put back in its queue by the reconciler, its log restarted above the lost one.
        assert_eq!(done[0].attempts, 1, "{:?}", done[0]);
        assert_eq!(done[1].attempts, 1, "{:?}", done[1]);
        assert!(
            done[1].last_sequence > llm_jobs::reconciler::EPOCH,
            "the new log continues above the old one: {}",
            done[1].last_sequence
        );
        let events = watcher.await??;
        let seqs: Vec<_> = events.iter().map(|e| e.sequence).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "sequences only rise: {seqs:?}"
        );
        let terminal = events
            .iter()
            .filter(|e| {
                matches!(
                    e.kind,
                    Some(Kind::Completed(_) | Kind::Failed(_) | Kind::Cancelled(_))
                )
            })
            .count();
        assert_eq!(terminal, 1);
        assert_eq!(text_of(&events), tokens(40));
        app.stop().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cut_postgres_connections_do_not_lose_a_result() -> anyhow::Result<()> {
        crate::support::needs_servers(
            "kills Postgres backend processes: SQLite has no connections",
        );
        let upstream = TestUpstream::start(slow(30, 30)).await?;
        let app = TestApp::builder()
            .upstream(upstream.base_url())
            .start()
            .await?;
        let job = app.submit(request("keep going", "gpt-4o-mini")).await?;
        app.wait_for_job(&job.id, |j| j.output_tokens >= 3).await?;
        use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
        let admin = std::env::var("LLMJOBS_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let mut conn = AsyncPgConnection::establish(&format!("{admin}/postgres")).await?;
        diesel::sql_query(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
        app.database
    ))
    .execute(&mut conn)
    .await?;
        let done = app
            .wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
        assert_eq!(done.attempts, 1);
        assert_eq!(app.result(&job.id).await?.content, tokens(30));
        app.stop().await
    }
}

/// A `SubmitJob` whose deadline passes between its two writes (the job's row, then its queue
/// entry): the client gets DEADLINE_EXCEEDED, and the submit still finishes, so the job runs
/// at once. Before, the dropped call left the stored job for the reconciler (here an hour
/// away), and a retry without its idempotency key made a second job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (scripts/test passes it)"
)]
async fn a_submit_cut_short_by_its_deadline_still_queues_its_job() -> anyhow::Result<()> {
    hold_submits()?;
    let upstream = TestUpstream::start(Reply::fixture("basic.sse")).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .arg("--reconcile-secs", "3600")
        .start()
        .await?;
    let mut submit = request("q", HELD);
    submit.idempotency_key = "cut-short".into();
    let job = cut_short(&app, submit, Call::SubmitJob).await?;
    let done = crate::support::wait_for_job_on(&app.client, &job.id, |j| {
        j.status() == v1::JobStatus::Completed
    })
    .await?;
    assert_eq!(done.attempts, 1, "{done:?}");
    let result = app.result(&job.id).await?;
    assert_eq!(
        result.content,
        "The queue is a line of work waiting its turn."
    );
    app.stop().await
}

/// The model whose submits `hold_submits` holds.
const HELD: &str = "gpt-held-submit";

/// Holds stored jobs of [`HELD`] for a second before their queue entry (the same setting
/// for every test that uses it); tests running beside these are untouched.
fn hold_submits() -> anyhow::Result<()> {
    #[cfg(feature = "failpoints")]
    fail::cfg("submit-stored", &format!("return({HELD})")).map_err(anyhow::Error::msg)?;
    Ok(())
}

/// The call that [`cut_short`] makes.
enum Call {
    SubmitJob,
    SubmitAndStream,
}

/// Makes `call` with `submit` (a held job's, with an idempotency key) under a 200 ms
/// deadline, which passes while the job is held: the call must fail with DEADLINE_EXCEEDED
/// or CANCELLED. Returns the job the cut call stored, found by submitting the same request
/// with its key again.
async fn cut_short(
    app: &TestApp,
    submit: v1::SubmitJobRequest,
    call: Call,
) -> anyhow::Result<v1::Job> {
    let mut c = app.client.clone();
    let mut request = tonic::Request::new(submit.clone());
    request.set_timeout(Duration::from_millis(200));
    let answered = match call {
        Call::SubmitJob => c.submit_job(request).await.map(drop),
        Call::SubmitAndStream => c.submit_and_stream(request).await.map(drop),
    };
    let status = answered
        .err()
        .ok_or_else(|| anyhow::anyhow!("the held submit answered within its deadline"))?;
    assert!(
        matches!(
            status.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{status:?}"
    );
    c.submit_job(submit)
        .await?
        .into_inner()
        .job
        .ok_or_else(|| anyhow::anyhow!("no job"))
}

/// A `SubmitAndStream` with `cancel_on_disconnect` whose call ends before its stream starts:
/// the submit finishes on the server, and the job is then cancelled, as for a client that
/// goes away later. (Before, the job ran to its end.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (scripts/test passes it)"
)]
async fn a_stream_call_gone_before_its_stream_cancels_its_job_when_asked() -> anyhow::Result<()> {
    hold_submits()?;
    // Long enough that only a cancel ends it within the test's patience.
    let upstream = TestUpstream::start(Reply::slow(200, 10, 200)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let mut submit = request("q", HELD);
    submit.idempotency_key = "gone-before-stream".into();
    submit.cancel_on_disconnect = true;
    let job = cut_short(&app, submit, Call::SubmitAndStream).await?;
    let done = crate::support::wait_for_job_on(&app.client, &job.id, |j| {
        j.status() == v1::JobStatus::Cancelled
    })
    .await?;
    assert_eq!(done.status(), v1::JobStatus::Cancelled, "{done:?}");
    app.stop().await
}
