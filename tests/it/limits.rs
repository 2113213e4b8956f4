//! Per-job attempts and timeouts, the first-token timeout, heartbeats on quiet streams, and
//! cancel-on-disconnect.

use std::time::Duration;

use futures::StreamExt;
use llm_jobs::proto::v1::{self, job_event::Kind};
use tonic::Code;

use crate::support::{
    PATIENCE, TestApp, assert_well_formed, collect, request,
    upstream::{Reply, TestUpstream},
};

fn slow(first_token_delay: Duration) -> Reply {
    Reply::Slow {
        tokens: 1000,
        first_token_delay,
        interval: Duration::from_millis(20),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_hits_the_first_token_timeout_and_is_dropped() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(slow(Duration::from_secs(60))).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .arg("--first-token-timeout-secs", "1")
        .start()
        .await?;
    let mut req = request("anyone there?", "gpt-4o-mini");
    req.max_attempts = Some(1);
    let mut c = app.client.clone();
    let events = collect(c.submit_and_stream(req).await?.into_inner()).await?;
    assert_well_formed(&events, 0);
    let Some(Kind::Failed(f)) = events.last().and_then(|e| e.kind.clone()) else {
        panic!("fails: {events:?}");
    };
    assert_eq!(f.error.unwrap_or_default().code, "first_token_timeout");
    assert_eq!(f.attempts, 1, "per-job max_attempts = 1");
    assert!(
        upstream.wait_for_disconnects(1, PATIENCE).await,
        "request dropped"
    );
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_job_timeout_ends_the_attempt() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(slow(Duration::from_millis(10))).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let mut req = request("long", "gpt-4o-mini");
    req.max_attempts = Some(2);
    req.timeout_seconds = Some(1);
    let mut c = app.client.clone();
    let events = collect(c.submit_and_stream(req).await?.into_inner()).await?;
    let Some(Kind::Failed(f)) = events.last().and_then(|e| e.kind.clone()) else {
        panic!("fails: {events:?}");
    };
    assert_eq!(f.error.unwrap_or_default().code, "timeout");
    assert_eq!(f.attempts, 2);
    assert_eq!(upstream.requests().len(), 2);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_job_limits_are_bounded_by_the_caps() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let mut c = app.client.clone();
    for (field, req) in [
        (
            "max_attempts",
            v1::SubmitJobRequest {
                max_attempts: Some(0),
                ..request("x", "sim")
            },
        ),
        (
            "max_attempts",
            v1::SubmitJobRequest {
                max_attempts: Some(11),
                ..request("x", "sim")
            },
        ),
        (
            "timeout_seconds",
            v1::SubmitJobRequest {
                timeout_seconds: Some(0),
                ..request("x", "sim")
            },
        ),
        (
            "timeout_seconds",
            v1::SubmitJobRequest {
                timeout_seconds: Some(3601),
                ..request("x", "sim")
            },
        ),
    ] {
        let s = c.submit_job(req).await.expect_err("rejected");
        assert_eq!(s.code(), Code::InvalidArgument, "{field}");
        assert!(s.message().contains(field), "{field}: {}", s.message());
    }
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_streams_get_heartbeats() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(slow(Duration::from_millis(2500))).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .arg("--stream-heartbeat-secs", "1")
        .start()
        .await?;
    let mut c = app.client.clone();
    let mut stream = c
        .submit_and_stream(request("wait", "gpt-4o-mini"))
        .await?
        .into_inner();
    let mut seen = Vec::new();
    let heartbeat = tokio::time::timeout(PATIENCE, async {
        while let Some(ev) = stream.next().await {
            let ev = ev?;
            if matches!(ev.kind, Some(Kind::Heartbeat(_))) {
                return Ok::<_, anyhow::Error>(ev);
            }
            seen.push(ev);
        }
        anyhow::bail!("stream ended without a heartbeat")
    })
    .await??;
    let last = seen.last().map_or(0, |e| e.sequence);
    assert_eq!(
        heartbeat.sequence, last,
        "heartbeats repeat the last sequence"
    );
    assert!(
        matches!(heartbeat.kind, Some(Kind::Heartbeat(ref h)) if h.status() == v1::JobStatus::Running)
    );
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_on_disconnect_cancels_when_the_client_goes_away() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(slow(Duration::from_millis(10))).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let mut c = app.client.clone();
    let mut req = request("stream then vanish", "gpt-4o-mini");
    req.cancel_on_disconnect = true;
    let mut stream = c.submit_and_stream(req).await?.into_inner();
    let mut job_id = String::new();
    while let Some(ev) = stream.next().await {
        let ev = ev?;
        job_id = ev.job_id.clone();
        if matches!(ev.kind, Some(Kind::TokenDelta(_))) {
            break;
        }
    }
    drop(stream);
    app.wait_for_job(&job_id, |j| j.status() == v1::JobStatus::Cancelled)
        .await?;
    assert!(upstream.wait_for_disconnects(1, PATIENCE).await);

    // Without the flag, the job runs on after the client leaves.
    upstream.push_reply(Reply::slow(5, 10, 20));
    let mut stream = c
        .submit_and_stream(request("stay", "gpt-4o-mini"))
        .await?
        .into_inner();
    let first = stream.next().await.expect("an event")?;
    drop(stream);
    app.wait_for_job(&first.job_id, |j| j.status() == v1::JobStatus::Completed)
        .await?;
    app.stop().await
}

/// A key holds at most `--client-max-open-streams` job and batch streams on a gateway; past it
/// new ones are refused (a refused SubmitAndStream submits nothing), and a stream the client
/// drops gives its slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_per_key_are_capped() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(slow(Duration::from_millis(10))).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .arg("--client-max-open-streams", "2")
        .start()
        .await?;
    let job = app.submit(request("long", "gpt-4o-mini")).await?;
    let mut c = app.client.clone();
    let open = |c: &mut v1::job_service_client::JobServiceClient<_>| {
        let mut c = c.clone();
        let id = job.id.clone();
        async move {
            c.stream_job(v1::StreamJobRequest {
                job_id: id,
                after_sequence: 0,
            })
            .await
        }
    };
    let first = open(&mut c).await?.into_inner();
    let _second = open(&mut c).await?.into_inner();
    let refused = open(&mut c).await.expect_err("a third stream is refused");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("2 open streams"), "{refused:?}");

    let listed = |c: &mut v1::job_service_client::JobServiceClient<_>| {
        let mut c = c.clone();
        async move {
            Ok::<_, anyhow::Error>(
                c.list_jobs(v1::ListJobsRequest::default())
                    .await?
                    .into_inner()
                    .jobs
                    .len(),
            )
        }
    };
    let before = listed(&mut c).await?;
    let refused = c
        .submit_and_stream(request("not submitted", "gpt-4o-mini"))
        .await
        .expect_err("SubmitAndStream is refused too");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(
        listed(&mut c).await?,
        before,
        "a refused stream submits nothing"
    );

    // Dropping a stream gives its slot back (once the server sees the reset).
    drop(first);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match open(&mut c).await {
            Ok(_third) => break,
            Err(s) if s.code() == Code::ResourceExhausted => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the dropped stream's slot never came back"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => return Err(s.into()),
        }
    }
    app.stop().await
}
