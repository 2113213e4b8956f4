//! Redis holds live work only (issue #20): when a job ends its whole event log goes to the
//! store and its live keys expire after a short window (`--event-log-ttl-secs`, 1 s here);
//! later replays come from the store, token by token, exactly as live watchers saw them.

use std::time::Duration;

use llm_jobs::proto::v1::{self, job_event::Kind};

use crate::support::{
    PATIENCE, TestApp, assert_well_formed, embedded, request, text_of,
    upstream::{Reply, TestUpstream},
};

/// The test's window for a finished job's live keys.
const WINDOW_SECS: &str = "1";

async fn app_with_window(upstream: &TestUpstream) -> anyhow::Result<TestApp> {
    TestApp::builder()
        .upstream(upstream.base_url())
        .arg("--event-log-ttl-secs", WINDOW_SECS)
        .arg("--progress-ttl-secs", WINDOW_SECS)
        .start()
        .await
}

/// Redis keys of this test that belong to `job_id`.
async fn job_keys(app: &TestApp, job_id: &str) -> anyhow::Result<Vec<String>> {
    let mut r = app.redis().await?;
    Ok(redis::cmd("KEYS")
        .arg(format!("{}:{{{job_id}}}:*", app.prefix))
        .query_async(&mut r)
        .await?)
}

/// Waits until the live keys of `ids` are gone: on Redis, polled until none is left; in
/// process, where nothing outside the server shows them, for the window and a margin.
async fn wait_for_window(app: &TestApp, ids: &[&str]) -> anyhow::Result<()> {
    if embedded() {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for id in ids {
        loop {
            let keys = job_keys(app, id).await?;
            if keys.is_empty() {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "job {id} still has Redis keys: {keys:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// The events of a live watch without heartbeats (not part of the log).
fn logged(events: Vec<v1::JobEvent>) -> Vec<v1::JobEvent> {
    events
        .into_iter()
        .filter(|e| !matches!(e.kind, Some(Kind::Heartbeat(_))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_jobs_replay_after_its_keys_expired_is_its_live_log() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::slow(25, 20, 5)).await?;
    let app = app_with_window(&upstream).await?;
    let job = app.submit(request("keep my tokens", "gpt-4o-mini")).await?;
    let live = logged(app.watch(&job.id, 0).await?);
    assert_well_formed(&live, 0);
    let deltas = live
        .iter()
        .filter(|e| matches!(e.kind, Some(Kind::TokenDelta(_))))
        .count();
    assert!(deltas >= 25, "token by token live: {live:?}");

    wait_for_window(&app, &[&job.id]).await?;
    let rows = app
        .sql(&format!(
            "SELECT CAST(event_count AS TEXT) AS v FROM job_event_logs WHERE job_id = '{}'",
            job.id
        ))
        .await?;
    assert_eq!(rows, [live.len().to_string()], "the whole log is stored");

    // From the start, from the middle and from the end: exactly what live watchers saw, with
    // the same sequences, times and text, no snapshot.
    let replay = app.watch(&job.id, 0).await?;
    assert_eq!(replay, live, "the stored log replays as it went live");
    assert!(
        !replay
            .iter()
            .any(|e| matches!(e.kind, Some(Kind::Snapshot(_))))
    );
    assert_eq!(text_of(&replay), app.result(&job.id).await?.content);
    let last = live.len() as u64;
    for after in [1, last / 2, last - 1] {
        let rest = app.watch(&job.id, after).await?;
        assert_eq!(rest, live[after as usize..], "resumed after {after}");
    }
    assert!(app.watch(&job.id, last).await?.is_empty());
    let past = app.watch(&job.id, last + 1).await;
    let status = past
        .expect_err("past the terminal event")
        .downcast::<tonic::Status>()?;
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_jobs_stored_log_keeps_its_first_attempt() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::slow(10, 5, 5)).await?;
    upstream.push_reply(Reply::raw(500, None, "upstream broke"));
    let app = app_with_window(&upstream).await?;
    let job = app.submit(request("try twice", "gpt-4o-mini")).await?;
    let live = logged(app.watch(&job.id, 0).await?);
    assert_well_formed(&live, 0);
    assert!(
        live.iter()
            .any(|e| matches!(&e.kind, Some(Kind::AttemptFailed(f)) if f.will_retry)),
        "the first attempt failed and was retried: {live:?}"
    );
    wait_for_window(&app, &[&job.id]).await?;
    assert_eq!(app.watch(&job.id, 0).await?, live);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_while_queued_replays_its_stored_log() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::slow(5, 5, 5)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .arg("--event-log-ttl-secs", WINDOW_SECS)
        .without_worker()
        .start()
        .await?;
    let job = app.submit(request("never run", "gpt-4o-mini")).await?;
    let mut c = app.client.clone();
    c.cancel_job(v1::CancelJobRequest {
        job_id: job.id.clone(),
        reason: "changed my mind".into(),
    })
    .await?;
    let live = app.watch(&job.id, 0).await?;
    assert_well_formed(&live, 0);
    assert!(
        matches!(&live.last().and_then(|e| e.kind.clone()), Some(Kind::Cancelled(c)) if c.reason == "changed my mind"),
        "{live:?}"
    );
    wait_for_window(&app, &[&job.id]).await?;
    assert_eq!(app.watch(&job.id, 0).await?, live, "the reason is kept too");
    app.stop().await
}

/// A finished job whose log is neither live nor stored and whose store has no terminal
/// sequence (its worker died before storing either) replays a snapshot and its terminal event
/// at fixed sequences, at the start of the next epoch: the same for every resume, above any
/// sequence its log had, and OUT_OF_RANGE past them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_a_stored_log_or_end_replays_at_fixed_sequences() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::slow(10, 5, 5)).await?;
    let app = app_with_window(&upstream).await?;
    let job = app.submit(request("forget my end", "gpt-4o-mini")).await?;
    let live = logged(app.watch(&job.id, 0).await?);
    assert_well_formed(&live, 0);
    wait_for_window(&app, &[&job.id]).await?;
    app.sql(&format!(
        "DELETE FROM job_event_logs WHERE job_id = '{}'",
        job.id
    ))
    .await?;
    app.sql(&format!(
        "UPDATE jobs SET last_sequence = 0 WHERE id = '{}'",
        job.id
    ))
    .await?;

    let end = llm_jobs::reconciler::EPOCH + 2;
    for after in [0, 3, live.len() as u64, live.len() as u64 + 5, end - 2] {
        let events = app.watch(&job.id, after).await?;
        let seqs: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(seqs, [end - 1, end], "resumed after {after}: {events:?}");
        assert!(matches!(events[0].kind, Some(Kind::Snapshot(_))));
        assert!(matches!(events[1].kind, Some(Kind::Completed(_))));
        assert_eq!(text_of(&events), text_of(&live), "resumed after {after}");
    }
    assert!(app.watch(&job.id, end).await?.is_empty());
    let status = app
        .watch(&job.id, end + 1)
        .await
        .expect_err("past the terminal event")
        .downcast::<tonic::Status>()?;
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    assert!(status.message().contains(&format!("({end})")), "{status:?}");
    app.stop().await
}

/// Tests of Redis itself: the embedded pass filters them out by name (`-- --skip ::servers::`).
mod servers {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_holds_no_finished_jobs_keys_after_the_window() -> anyhow::Result<()> {
        crate::support::needs_servers("looks at Redis keys");
        let upstream = TestUpstream::start(Reply::slow(8, 5, 5)).await?;
        let app = app_with_window(&upstream).await?;
        let mut ids = Vec::new();
        for i in 0..4 {
            let job = app
                .submit(request(&format!("job {i}"), "gpt-4o-mini"))
                .await?;
            ids.push(job.id);
        }
        // Watched live, so that each job also had a watch mark and a progress snapshot.
        for id in &ids {
            assert_well_formed(&logged(app.watch(id, 0).await?), 0);
        }
        assert!(
            !job_keys(&app, &ids[3]).await?.is_empty(),
            "the live keys stay for the window, for watchers still catching up"
        );
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        wait_for_window(&app, &refs).await?;
        let mut r = app.redis().await?;
        let all: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", app.prefix))
            .query_async(&mut r)
            .await?;
        let left: Vec<&String> = all
            .iter()
            .filter(|k| ids.iter().any(|id| k.contains(id.as_str())))
            .collect();
        assert!(left.is_empty(), "finished jobs' keys left: {left:?}");
        // A late watcher marks the job as watched (the state hash), but not for long: a minute,
        // the mark's own lease, not the week an unfinished job's state lives.
        for id in &ids {
            assert_well_formed(&app.watch(id, 0).await?, 0);
            for key in job_keys(&app, id).await? {
                let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(&mut r).await?;
                assert!((1..=60).contains(&ttl), "{key} lives {ttl} s");
            }
        }
        app.stop().await
    }
}
