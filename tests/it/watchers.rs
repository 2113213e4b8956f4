//! Many watchers of one job see the same events in the same order; resuming after sequence N
//! yields exactly the rest.

use std::time::Duration;

use crate::support::{
    TestApp, assert_well_formed, request,
    upstream::{Reply, TestUpstream},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_watchers_agree_and_resume_gets_exactly_the_rest() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::Slow {
        tokens: 20,
        first_token_delay: Duration::from_millis(50),
        interval: Duration::from_millis(10),
    })
    .await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let job = app.submit(request("watch me", "gpt-4o-mini")).await?;

    let (a, b) = tokio::join!(app.watch(&job.id, 0), app.watch(&job.id, 0));
    let (a, b) = (a?, b?);
    assert_well_formed(&a, 0);
    assert_eq!(a, b, "two watchers see identical event sequences");
    // queued, started, 20 deltas, completed
    assert_eq!(a.len(), 23);

    for n in [1, 5, 21, 22] {
        let rest = app.watch(&job.id, n).await?;
        assert_eq!(rest[..], a[n as usize..], "resume after {n}");
    }
    let none = app.watch(&job.id, 23).await?;
    assert!(
        none.is_empty(),
        "nothing after the terminal event: {none:?}"
    );
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_joins_mid_stream_gets_replay_then_live() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::Slow {
        tokens: 10,
        first_token_delay: Duration::from_millis(10),
        interval: Duration::from_millis(40),
    })
    .await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let job = app.submit(request("late watcher", "gpt-4o-mini")).await?;
    app.wait_for_job(&job.id, |j| j.output_tokens >= 3).await?;
    let late = app.watch(&job.id, 0).await?;
    assert_well_formed(&late, 0);
    assert_eq!(late.len(), 13);
    assert_eq!(
        crate::support::text_of(&late),
        (0..10).map(|i| format!("tok{i} ")).collect::<String>()
    );
    app.stop().await
}
