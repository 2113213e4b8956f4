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

/// A call's deadline holds for the whole stream: a `StreamJob` whose `grpc-timeout` passes
/// while its job still streams ends with DEADLINE_EXCEEDED (tonic alone kept the stream open
/// for as long as the job ran), and resuming after the last event received gets exactly the
/// rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_at_its_deadline_and_resumes_without_a_gap() -> anyhow::Result<()> {
    // About 4 s of tokens: far past the deadline, well within the test's patience.
    let upstream = TestUpstream::start(Reply::slow(80, 10, 50)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let job = app
        .submit(request("past the deadline", "gpt-4o-mini"))
        .await?;
    let mut call = tonic::Request::new(v1::StreamJobRequest {
        job_id: job.id.clone(),
        after_sequence: 0,
    });
    call.set_timeout(Duration::from_millis(800));
    let mut stream = app.client.clone().stream_job(call).await?.into_inner();
    let mut got = Vec::new();
    let (status, last) = read_to_the_status(&mut stream, &mut got).await?;
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");

    let rest = app.watch(&job.id, last).await?;
    let whole = app.watch(&job.id, 0).await?;
    assert!(
        rest.len() > 1,
        "the job was still streaming at the deadline"
    );
    assert_eq!(
        [got, rest].concat(),
        whole,
        "the events before the deadline and the rest make the whole log"
    );
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

/// An upstream answer of `pieces` pieces of `size` bytes each, then `stop`.
fn long_answer(pieces: usize, size: usize) -> String {
    let mut body = String::new();
    for i in 0..pieces {
        let text = format!("{i:>6}{}", "x".repeat(size.saturating_sub(6)));
        let chunk = serde_json::json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
        body.push_str(&format!("data: {chunk}\n\n"));
    }
    let stop = serde_json::json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    body.push_str(&format!("data: {stop}\n\ndata: [DONE]\n\n"));
    body
}

/// A `StreamJob` of `job_id` from the start, on a client that takes no more than HTTP/2's
/// default 64 KiB window before it reads (tonic's own default window is 2 MiB, which would
/// take a whole long answer in).
async fn narrow_stream(
    app: &TestApp,
    job_id: &str,
) -> anyhow::Result<tonic::Streaming<v1::JobEvent>> {
    let narrow = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))?
        .initial_stream_window_size(Some(65_535))
        .initial_connection_window_size(Some(65_535))
        .connect()
        .await?;
    let mut client = v1::job_service_client::JobServiceClient::new(crate::support::with_key(
        narrow,
        Some(&app.key),
    )?);
    Ok(client
        .stream_job(v1::StreamJobRequest {
            job_id: job_id.into(),
            after_sequence: 0,
        })
        .await?
        .into_inner())
}

/// Reads a stream cut short to its end, after the events in `got`: it must end with an error
/// status before its job's end, and everything received (`got`) run gap-free from sequence 1.
/// Returns the status and the last sequence received.
async fn read_to_the_status(
    stream: &mut tonic::Streaming<v1::JobEvent>,
    got: &mut Vec<v1::JobEvent>,
) -> anyhow::Result<(tonic::Status, u64)> {
    let status = loop {
        match tokio::time::timeout(crate::support::PATIENCE, stream.message()).await? {
            Ok(Some(ev)) => got.push(ev),
            Ok(None) => anyhow::bail!("the stream ended without a status: {got:?}"),
            Err(status) => break status,
        }
    };
    for (i, ev) in got.iter().enumerate() {
        assert_eq!(ev.sequence, i as u64 + 1, "gap-free up to {status:?}");
    }
    Ok((status, got.last().map_or(0, |e| e.sequence)))
}

/// [`read_to_the_status`] of a stalled client's stream, which must end with
/// RESOURCE_EXHAUSTED.
async fn read_to_the_stall(
    stalled: &mut tonic::Streaming<v1::JobEvent>,
    got: &mut Vec<v1::JobEvent>,
) -> anyhow::Result<(tonic::Status, u64)> {
    let (status, last) = read_to_the_status(stalled, got).await?;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    Ok((status, last))
}

/// The whole of the job's events, watched as soon as the key's only stream slot is free (a
/// stalled stream holds it until its patience has passed): retried every 200 ms, for at
/// most [`crate::support::PATIENCE`].
async fn watch_once_admitted(app: &TestApp, job_id: &str) -> anyhow::Result<Vec<v1::JobEvent>> {
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    loop {
        match app.watch(job_id, 0).await {
            Ok(events) => return Ok(events),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "the slot is still held");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.context("the stalled stream never freed its slot")),
        }
    }
}

/// A client that stops reading holds a bounded queue: once it has stayed full for the stall
/// patience, the watcher ends (what waited is dropped, the key's stream slot is free again
/// while the client still reads nothing), the stream ends with RESOURCE_EXHAUSTED naming the
/// most it may resume after, and resuming from the last event received gets exactly the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_ended_with_a_resume_point() -> anyhow::Result<()> {
    // About 1.2 MB of events: far more than the client's HTTP/2 window and the server's queue.
    let upstream = TestUpstream::start(Reply::sse(long_answer(3000, 400))).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .arg("--stream-stall-secs", "1")
        .arg("--client-max-open-streams", "1")
        .start()
        .await?;
    let job = app.submit(request("a long answer", "gpt-4o-mini")).await?;
    let done = app
        .wait_for_job(&job.id, |j| j.status == v1::JobStatus::Completed as i32)
        .await?;

    let mut stalled = narrow_stream(&app, &job.id).await?;
    // Reading nothing, the stalled stream lets go of the key's only slot after the patience.
    let replay = watch_once_admitted(&app, &job.id).await?;
    assert_well_formed(&replay, 0);
    let mut first = Vec::new();
    let (status, last) = read_to_the_stall(&mut stalled, &mut first).await?;
    assert!(
        last < done.last_sequence,
        "the stalled client got only part of the log ({last} of {})",
        done.last_sequence
    );
    let most: u64 = status
        .message()
        .rsplit("(at most ")
        .next()
        .and_then(|rest| rest.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no resume point in {:?}", status.message()));
    assert!(
        most >= last,
        "the resume point ({most}) is at least the last event received ({last})"
    );

    let rest = app.watch(&job.id, last).await?;
    assert_well_formed(&rest, last);
    let mut all = first;
    all.extend(rest);
    assert_eq!(
        crate::support::text_of(&all),
        (0..3000)
            .map(|i| format!("{i:>6}{}", "x".repeat(394)))
            .collect::<String>()
    );
    app.stop().await
}

/// The same for a client that stops reading while its job is still running, when the events
/// reach its stream straight from the live feed (issue 14): the watcher notices that its
/// stream pulls nothing, queues what the client missed from the log, and once that queue has
/// stayed full for the stall patience ends the stream with RESOURCE_EXHAUSTED and frees the
/// key's slot; the client's events up to there are gap-free and a resume gets the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_client_that_stops_reading_is_ended_with_a_resume_point() -> anyhow::Result<()> {
    // About 5,000 events over five seconds: far more than the client's window and the queue.
    let (reply, start) = Reply::held_start(5000, 1);
    let upstream = TestUpstream::start(reply).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .arg("--stream-stall-secs", "1")
        .arg("--client-max-open-streams", "1")
        .start()
        .await?;
    let job = app.submit(request("a live answer", "gpt-4o-mini")).await?;
    let mut stalled = narrow_stream(&app, &job.id).await?;
    // The first event read makes sure the stream is live before the answer begins.
    let first_event = stalled.message().await?.expect("the queued event");
    start.add_permits(1);
    // The stalled stream lets go of the key's only slot while the client still reads nothing;
    // this watcher follows the job to its end meanwhile.
    let whole = watch_once_admitted(&app, &job.id).await?;
    assert_well_formed(&whole, 0);
    let mut first = vec![first_event];
    let (_, last) = read_to_the_stall(&mut stalled, &mut first).await?;
    let end = whole.last().map_or(0, |e| e.sequence);
    assert!(
        last < end,
        "the stalled client got part of the log ({last} of {end})"
    );
    let rest = app.watch(&job.id, last).await?;
    assert_well_formed(&rest, last);
    first.extend(rest);
    assert_eq!(
        first, whole,
        "what the stalled client got, then its resume, is the log"
    );
    app.stop().await
}

/// Tests that edit Redis (filtered out of the embedded pass, as `servers` above).
mod repair {
    pub(super) mod servers {
        use super::super::*;

        /// A job the store says has ended, whose live log lost its terminal event (its writer
        /// died between the two): a watcher reads the log, finds no end, asks the store once the
        /// log's newest event is older than the idle check, and writes the terminal event back
        /// from the stored log; it and every later watcher get exactly the log they would have.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_log_that_lost_its_terminal_event_is_repaired_from_the_store()
        -> anyhow::Result<()> {
            crate::support::needs_servers("edits a job's live log in Redis");
            let upstream = TestUpstream::start(Reply::slow(5, 0, 0)).await?;
            let app = TestApp::builder()
                .upstream(upstream.base_url())
                .start()
                .await?;
            let job = app.submit(request("repair me", "gpt-4o-mini")).await?;
            app.wait_for_job(&job.id, |j| j.status == v1::JobStatus::Completed as i32)
                .await?;
            let whole = app.watch(&job.id, 0).await?;
            assert_well_formed(&whole, 0);
            // The log loses its terminal event, as if its writer had died before appending it.
            let mut r = app.redis().await?;
            let key = |name: &str| format!("{}:{{{}}}:{name}", app.prefix, job.id);
            let popped: Vec<u8> = redis::cmd("RPOP")
                .arg(key("events"))
                .query_async(&mut r)
                .await?;
            anyhow::ensure!(!popped.is_empty(), "the log had a terminal event to lose");
            let _: i64 = redis::cmd("HDEL")
                .arg(key("state"))
                .arg("done")
                .query_async(&mut r)
                .await?;
            // Older than the idle check (3 s), so that the repair is due at once.
            tokio::time::sleep(Duration::from_millis(3500)).await;
            let repaired = tokio::time::timeout(crate::support::PATIENCE, app.watch(&job.id, 0))
                .await
                .map_err(|_| anyhow::anyhow!("the watcher never got the job's end"))??;
            assert_eq!(repaired, whole, "the repaired log is the log as it was");
            assert_eq!(app.watch(&job.id, 0).await?, whole, "and stays so");
            app.stop().await
        }
    }
}

/// A compressed request to an event stream is refused as to every other method: UNIMPLEMENTED,
/// naming the encodings the server accepts, so that a client can send it again uncompressed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_stream_request_is_unimplemented_like_any_other() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let mut client = app
        .client
        .clone()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let id = llm_jobs::job::JobId::now_v7().to_string();
    let stream = client
        .stream_job(v1::StreamJobRequest {
            job_id: id.clone(),
            after_sequence: 0,
        })
        .await
        .expect_err("refused");
    let unary = client
        .get_job(v1::GetJobRequest { job_id: id })
        .await
        .expect_err("refused");
    for status in [&stream, &unary] {
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
        assert_eq!(
            status
                .metadata()
                .get("grpc-accept-encoding")
                .and_then(|v| v.to_str().ok()),
            Some("identity"),
            "{status:?}"
        );
    }
    app.stop().await
}
