//! Many watchers of one job see the same events in the same order; resuming after sequence N
//! yields exactly the rest.

use std::time::Duration;

use llm_jobs::proto::v1;

use crate::support::{
    TestApp, assert_well_formed, core_events, request,
    upstream::{Reply, TestUpstream},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_watchers_agree_and_resume_gets_exactly_the_rest() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::slow(20, 50, 10)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let job = app.submit(request("watch me", "gpt-4o-mini")).await?;

    let (a, b) = tokio::join!(app.watch(&job.id, 0), app.watch(&job.id, 0));
    let (a, b) = (a?, b?);
    assert_well_formed(&a, 0);
    assert_eq!(a, b, "two watchers see identical event sequences");
    // queued, started, 20 deltas, completed (and the progress events between them)
    assert_eq!(core_events(&a).len(), 23);

    let last = a.len() as u64;
    for n in [1, 5, last / 2, last - 2, last - 1] {
        let rest = app.watch(&job.id, n).await?;
        assert_eq!(rest[..], a[n as usize..], "resume after {n}");
    }
    let none = app.watch(&job.id, last).await?;
    assert!(
        none.is_empty(),
        "nothing after the terminal event: {none:?}"
    );
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_joins_mid_stream_gets_replay_then_live() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::slow(10, 10, 40)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let job = app.submit(request("late watcher", "gpt-4o-mini")).await?;
    app.wait_for_job(&job.id, |j| j.output_tokens >= 3).await?;
    let late = app.watch(&job.id, 0).await?;
    assert_well_formed(&late, 0);
    assert_eq!(core_events(&late).len(), 13);
    assert_eq!(
        crate::support::text_of(&late),
        (0..10).map(|i| format!("tok{i} ")).collect::<String>()
    );
    // As soon as a watcher has the terminal event, the job says it has ended at that
    // sequence (the store records it a moment later; until then the log answers).
    let terminal = late.last().expect("events").sequence;
    let ended = app.wait_for_job(&job.id, |_| true).await?;
    assert_eq!(ended.status(), v1::JobStatus::Completed);
    assert_eq!(ended.last_sequence, terminal, "{ended:?}");
    app.stop().await
}

/// Number of Redis pub/sub subscriptions on a job's live channel.
pub(crate) async fn subscriptions(app: &TestApp, job_id: &str) -> anyhow::Result<i64> {
    let mut r = app.redis().await?;
    let channel = format!("{}:events:{job_id}", app.prefix);
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(&channel)
        .query_async(&mut r)
        .await?;
    Ok(n)
}

/// Tests about Redis or Postgres themselves, or about processes sharing them: the embedded
/// pass filters them out by name (`-- --skip ::servers::`, as `scripts/test` does).
mod servers {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hundred_watchers_share_one_subscription_and_leave_nothing_behind()
    -> anyhow::Result<()> {
        crate::support::needs_servers("counts Redis pub/sub subscriptions");
        let upstream = TestUpstream::start(Reply::slow(10_000, 10, 20)).await?;
        let app = TestApp::builder()
            .upstream(upstream.base_url())
            .start()
            .await?;
        let job = app.submit(request("popular", "gpt-4o-mini")).await?;
        let mut streams = Vec::new();
        for _ in 0..100 {
            let mut c = app.client.clone();
            let mut s = c
                .stream_job(llm_jobs::proto::v1::StreamJobRequest {
                    job_id: job.id.clone(),
                    after_sequence: 0,
                })
                .await?
                .into_inner();
            s.message().await?.expect("the queued event");
            streams.push(s);
        }
        assert_eq!(
            subscriptions(&app, &job.id).await?,
            1,
            "one Redis subscription for 100 watchers"
        );
        drop(streams);
        let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
        while subscriptions(&app, &job.id).await? != 0 {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "subscription never released"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        app.stop().await
    }
}
