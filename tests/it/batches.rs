//! Batches: all-or-nothing submits, counts that add up while jobs run, a progress stream that
//! ends after the last job, cancelling a batch, cleanup, and the `batch` CLI.

use std::{collections::HashSet, time::Duration};

use futures::StreamExt;
use llm_jobs::cli::client::Channel;
use llm_jobs::proto::v1::{
    self, batch_event, batch_service_client::BatchServiceClient, job_event::Kind,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::{
    PATIENCE, TestApp, request,
    upstream::{Reply, TestUpstream},
};

async fn batches(app: &TestApp) -> anyhow::Result<BatchServiceClient<Channel>> {
    app.batch_client()
}

fn batch_of(requests: Vec<v1::SubmitJobRequest>) -> v1::SubmitBatchRequest {
    v1::SubmitBatchRequest {
        requests,
        ..Default::default()
    }
}

/// Asserts the five counts add up to `job_count`.
fn assert_adds_up(b: &v1::Batch) {
    assert_eq!(
        b.queued_count + b.running_count + b.completed_count + b.failed_count + b.cancelled_count,
        b.job_count,
        "counts add up: {b:?}"
    );
}

/// Completed, failed and cancelled counts.
fn terminal(b: &v1::Batch) -> [u32; 3] {
    [b.completed_count, b.failed_count, b.cancelled_count]
}

/// Collects a StreamBatch to its end (an error status fails).
async fn collect(
    mut c: BatchServiceClient<Channel>,
    batch_id: String,
) -> anyhow::Result<Vec<v1::BatchEvent>> {
    let mut stream = c
        .stream_batch(v1::StreamBatchRequest { batch_id })
        .await?
        .into_inner();
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE * 2, async {
        while let Some(ev) = stream.next().await {
            out.push(ev?);
        }
        Ok::<_, anyhow::Error>(())
    })
    .await??;
    Ok(out)
}

fn finished(events: &[v1::BatchEvent]) -> Vec<v1::JobEvent> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(batch_event::Kind::JobFinished(j)) => Some(j.clone()),
            _ => None,
        })
        .collect()
}

fn progress(events: &[v1::BatchEvent]) -> Vec<v1::Batch> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(batch_event::Kind::Progress(b)) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_fifty_adds_up_at_every_moment_and_its_stream_ends_after_the_last_job()
-> anyhow::Result<()> {
    // Slow enough that the polls below see the batch while it runs.
    let upstream = TestUpstream::start(Reply::Fixture {
        name: "with-usage.sse",
        chunk_bytes: 256,
        delay: Duration::from_millis(5),
    })
    .await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .concurrency(4)
        .start()
        .await?;
    let mut c = batches(&app).await?;
    let submitted = c
        .submit_batch(v1::SubmitBatchRequest {
            requests: (0..50)
                .map(|i| request(&format!("job {i}"), "gpt-4o-mini"))
                .collect(),
            display_name: "fifty".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(submitted.job_count, 50);
    assert_eq!(submitted.job_ids.len(), 50);
    assert_eq!(submitted.display_name, "fifty");
    assert_adds_up(&submitted);

    let stream = tokio::spawn(collect(c.clone(), submitted.id.clone()));
    let mut polls = 0;
    let mut last = [0; 3];
    while !stream.is_finished() {
        let b = c
            .get_batch(v1::GetBatchRequest {
                batch_id: submitted.id.clone(),
            })
            .await?
            .into_inner();
        assert_eq!(b.job_count, 50);
        assert_adds_up(&b);
        let now = terminal(&b);
        assert!(
            now.iter().zip(last).all(|(n, l)| *n >= l),
            "terminal counts never go back: {last:?} then {now:?}"
        );
        last = now;
        polls += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(polls > 0);
    let events = stream.await??;

    // A progress snapshot first and last; one terminal event per job in between.
    let snapshots = progress(&events);
    assert!(matches!(
        <[_]>::first(&events).and_then(|e| e.kind.as_ref()),
        Some(batch_event::Kind::Progress(_))
    ));
    let Some(batch_event::Kind::Progress(end)) = events.last().and_then(|e| e.kind.clone()) else {
        panic!("ends with progress: {events:?}");
    };
    assert_eq!(end.completed_count, 50, "{end:?}");
    assert!(end.end_time.is_some());
    for s in &snapshots {
        assert_adds_up(s);
        assert!(s.job_ids.is_empty(), "progress messages carry no ids");
    }
    let jobs = finished(&events);
    assert_eq!(jobs.len(), 50);
    let ids: HashSet<_> = jobs.iter().map(|e| e.job_id.clone()).collect();
    let expected: HashSet<_> = submitted.job_ids.iter().cloned().collect();
    assert_eq!(ids, expected, "exactly the batch's jobs, each once");
    assert!(
        jobs.iter()
            .all(|e| matches!(e.kind, Some(Kind::Completed(_))))
    );

    let done = c
        .get_batch(v1::GetBatchRequest {
            batch_id: submitted.id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(done.completed_count, 50);
    assert_adds_up(&done);
    assert!(done.end_time.is_some());
    assert!(done.estimated_completion_time.is_none());
    assert_eq!(done.job_ids, submitted.job_ids, "ids in request order");

    let (mut input, mut output, mut cost) = (0, 0, None::<f64>);
    for (i, (id, ev)) in submitted.job_ids.iter().zip(&jobs).enumerate() {
        let r = app.result(id).await?;
        let u = r.usage.unwrap_or_default();
        input += u.input_tokens;
        output += u.output_tokens;
        if let Some(c) = r.cost_usd {
            cost = Some(cost.unwrap_or(0.0) + c);
        }
        // The job's terminal event is the one in its own log.
        let job = app.wait_for_job(id, |_| true).await?;
        let sent = jobs.iter().find(|e| &e.job_id == id).expect("sent");
        assert_eq!(sent.sequence, job.last_sequence, "job {i}: {ev:?}");
        let prompt = &upstream
            .requests()
            .iter()
            .find(|r| r.body["messages"][0]["content"] == format!("job {i}"))
            .map(|r| r.body.clone());
        assert!(prompt.is_some(), "job {i} ran with its own prompt");
    }
    assert!(input > 0 && output > 0);
    assert_eq!((done.input_tokens, done.output_tokens), (input, output));
    assert_eq!(done.cost_usd.is_some(), cost.is_some());
    if let (Some(a), Some(b)) = (done.cost_usd, cost) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }
    assert_eq!(end.input_tokens, input);

    // ListJobs finds exactly the batch's jobs, each naming its batch.
    let mut c = app.client.clone();
    let listed = c
        .list_jobs(llm_jobs::proto::v1::ListJobsRequest {
            batch_id: submitted.id.clone(),
            page_size: 100,
            ..Default::default()
        })
        .await?
        .into_inner();
    let listed_ids: HashSet<_> = listed.jobs.iter().map(|j| j.id.clone()).collect();
    assert_eq!(listed_ids, expected);
    assert!(listed.jobs.iter().all(|j| j.batch_id == submitted.id));
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_request_rejects_the_whole_batch_and_stores_nothing() -> anyhow::Result<()> {
    let app = TestApp::builder()
        .arg("--max-batch-jobs", "4")
        .start()
        .await?;
    let mut c = batches(&app).await?;
    let mut bad = request("three", "sim");
    bad.generation_config = Some(v1::GenerationConfig {
        model: "sim".into(),
        temperature: Some(3.0),
        ..Default::default()
    });
    let mut keyed = request("keyed", "sim");
    keyed.idempotency_key = "mine".into();
    let err = c
        .submit_batch(batch_of(vec![
            request("one", "sim"),
            request("two", "sim"),
            bad,
            request("four", "sim"),
        ]))
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<_> = err
        .get_details_bad_request()
        .expect("BadRequest detail")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["requests[2].generation_config.temperature"]);

    let err = c
        .submit_batch(batch_of(vec![request("one", "sim"), keyed]))
        .await
        .expect_err("per-job key");
    let fields: Vec<_> = err
        .get_details_bad_request()
        .expect("BadRequest detail")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["requests[1].idempotency_key"]);

    for (requests, what) in [
        (Vec::new(), "empty"),
        (
            (0..5).map(|i| request(&format!("p{i}"), "sim")).collect(),
            "over the maximum",
        ),
    ] {
        let err = c.submit_batch(batch_of(requests)).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}");
        let bad = err.get_details_bad_request().expect("BadRequest detail");
        assert_eq!(bad.field_violations[0].field, "requests", "{what}");
    }

    assert_eq!(app.count("jobs").await?, 0, "nothing stored");
    assert_eq!(app.count("batches").await?, 0, "nothing stored");
    let mut jobs = app.client.clone();
    let listed = jobs
        .list_jobs(v1::ListJobsRequest::default())
        .await?
        .into_inner();
    assert!(listed.jobs.is_empty());

    // The maximum itself is accepted.
    let ok = c
        .submit_batch(batch_of(
            (0..4).map(|i| request(&format!("p{i}"), "sim")).collect(),
        ))
        .await?
        .into_inner();
    assert_eq!(ok.job_count, 4);
    assert_eq!(app.count("jobs").await?, 4);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_batch_idempotency_key_returns_the_first_batch() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let mut c = batches(&app).await?;
    let req = v1::SubmitBatchRequest {
        requests: vec![request("a", "sim"), request("b", "sim")],
        idempotency_key: "nightly-2026-11-30".into(),
        ..Default::default()
    };
    let first = c.submit_batch(req.clone()).await?.into_inner();
    let again = c.submit_batch(req.clone()).await?.into_inner();
    assert_eq!(again.id, first.id);
    assert_eq!(again.job_ids, first.job_ids);
    assert_eq!(app.count("jobs").await?, 2);
    // The same key with another request is a conflict, as for single jobs: a changed prompt,
    // one job more, another name.
    let mut changed = vec![req.clone(), req.clone(), req];
    changed[0].requests[1] = request("B", "sim");
    changed[1].requests.push(request("c", "sim"));
    changed[2].display_name = "renamed".into();
    for other in changed {
        let err = c
            .submit_batch(other)
            .await
            .expect_err("a different request under a used key");
        assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
        assert!(err.message().contains(&first.id), "{}", err.message());
    }
    assert_eq!(app.count("jobs").await?, 2);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_batch_cancels_queued_and_running_jobs_and_ends_its_stream()
-> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::slow(10_000, 10, 20)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .concurrency(2)
        .start()
        .await?;
    let mut c = batches(&app).await?;
    let batch = c
        .submit_batch(batch_of(
            (0..6)
                .map(|i| request(&format!("long {i}"), "gpt-4o-mini"))
                .collect(),
        ))
        .await?
        .into_inner();
    let stream = tokio::spawn(collect(c.clone(), batch.id.clone()));
    assert!(upstream.wait_for_requests(2, PATIENCE).await, "two run");

    let cancelled = c
        .cancel_batch(v1::CancelBatchRequest {
            batch_id: batch.id.clone(),
            reason: "not needed".into(),
        })
        .await?
        .into_inner();
    assert_adds_up(&cancelled);
    assert_eq!(
        cancelled.queued_count, 0,
        "queued jobs are cancelled at once"
    );
    assert_eq!(cancelled.completed_count + cancelled.failed_count, 0);

    let events = stream.await??;
    let jobs = finished(&events);
    assert_eq!(jobs.len(), 6);
    for ev in &jobs {
        let Some(Kind::Cancelled(c)) = &ev.kind else {
            panic!("cancelled: {ev:?}");
        };
        assert_eq!(c.reason, "not needed");
    }
    let end = progress(&events).pop().expect("progress");
    assert_eq!(end.cancelled_count, 6);
    assert!(upstream.wait_for_disconnects(2, PATIENCE).await);
    assert_eq!(upstream.requests().len(), 2, "queued jobs never ran");

    // Cancelling again changes nothing.
    let again = c
        .cancel_batch(v1::CancelBatchRequest {
            batch_id: batch.id.clone(),
            reason: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(again.cancelled_count, 6);
    assert!(again.end_time.is_some());
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_batch_stream_ends_with_unavailable_when_the_server_shuts_down()
-> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::slow(10_000, 10, 20)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let mut c = batches(&app).await?;
    let batch = c
        .submit_batch(batch_of(vec![request("endless", "gpt-4o-mini")]))
        .await?
        .into_inner();
    let mut stream = c
        .stream_batch(v1::StreamBatchRequest {
            batch_id: batch.id.clone(),
        })
        .await?
        .into_inner();
    let first = stream.message().await?;
    assert!(matches!(
        first.and_then(|e| e.kind),
        Some(batch_event::Kind::Progress(_))
    ));
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
    assert_eq!(code, Some(Code::Unavailable));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_batches_are_not_found_and_malformed_ids_invalid() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let mut c = batches(&app).await?;
    let unknown = uuid::Uuid::now_v7().to_string();
    for (id, code) in [
        (unknown.as_str(), Code::NotFound),
        ("not-a-uuid", Code::InvalidArgument),
        ("", Code::InvalidArgument),
    ] {
        let get = c
            .get_batch(v1::GetBatchRequest {
                batch_id: id.into(),
            })
            .await
            .expect_err("get");
        let stream = c
            .stream_batch(v1::StreamBatchRequest {
                batch_id: id.into(),
            })
            .await
            .expect_err("stream");
        let cancel = c
            .cancel_batch(v1::CancelBatchRequest {
                batch_id: id.into(),
                reason: String::new(),
            })
            .await
            .expect_err("cancel");
        for e in [get, stream, cancel] {
            assert_eq!(e.code(), code, "{id:?}: {e:?}");
            if code == Code::InvalidArgument {
                let bad = e.get_details_bad_request().expect("BadRequest detail");
                assert_eq!(bad.field_violations[0].field, "batch_id");
            }
        }
    }
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_deletes_a_batch_only_with_all_its_jobs() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let mut c = batches(&app).await?;
    let old = c
        .submit_batch(batch_of(vec![request("a", "sim"), request("b", "sim")]))
        .await?
        .into_inner();
    let mixed = c
        .submit_batch(batch_of(vec![request("c", "sim"), request("d", "sim")]))
        .await?
        .into_inner();
    for b in [&old, &mixed] {
        assert_eq!(finished(&collect(c.clone(), b.id.clone()).await?).len(), 2);
    }
    let ago = app.ago_sql(31 * 86_400);
    app.sql(&format!(
        "UPDATE jobs SET finished_at = {ago} WHERE batch_id = '{}' OR id = '{}'",
        old.id, mixed.job_ids[0]
    ))
    .await?;
    app.sql(&format!("UPDATE batches SET created_at = {ago}"))
        .await?;
    let database_url = app.database_url.clone();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
        .args([
            "cleanup",
            "--older-than",
            "30d",
            "--database-url",
            &database_url,
            "--batch",
            "1",
            "--yes",
        ])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("deleted 2 job(s)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let gone = c
        .get_batch(v1::GetBatchRequest {
            batch_id: old.id.clone(),
        })
        .await
        .expect_err("deleted with its jobs");
    assert_eq!(gone.code(), Code::NotFound);
    let kept = c
        .get_batch(v1::GetBatchRequest {
            batch_id: mixed.id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(
        kept.job_count, 2,
        "a batch keeps all its jobs until all are old"
    );
    assert_eq!(app.count("batches").await?, 1);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_submits_a_jsonl_file_and_watches_the_batch_to_its_end() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let dir = std::env::temp_dir().join(format!("llmjobs-it-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("jobs.jsonl");
    let lines: Vec<String> = (0..5)
        .map(|i| {
            format!(
                r#"{{"prompt":"line {i}","priority":"PRIORITY_LOW","generationConfig":{{"model":"sim"}}}}"#
            )
        })
        .collect();
    std::fs::write(&file, lines.join("\n\n") + "\n")?;
    let path = file.to_string_lossy().into_owned();

    let out = app.cli(&["batch", "submit", &path, "--name", "from-cli"])?;
    let id = out.lines().next().unwrap_or_default().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "prints the id: {out:?}");

    let summary = app.cli(&["batch", "watch", &id])?;
    assert!(
        summary.contains("5 jobs: 0 queued, 0 running, 5 completed, 0 failed, 0 cancelled"),
        "{summary}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&app.cli(&["batch", "get", &id, "--json"])?)?;
    assert_eq!(json["completedCount"], 5);
    assert_eq!(json["displayName"], "from-cli");
    assert_eq!(json["jobIds"].as_array().map(Vec::len), Some(5));

    // A bad line is reported by number and nothing is submitted.
    std::fs::write(&file, format!("{}\n{}\nnot json\n", lines[0], lines[1]))?;
    let err = app.cli(&["batch", "submit", &path]).expect_err("bad line");
    assert!(err.to_string().contains("line 3"), "{err}");
    // A line the server rejects names its request.
    std::fs::write(&file, format!("{}\n{{\"prompt\":\"\"}}\n", lines[0]))?;
    let err = app
        .cli(&["batch", "submit", &path])
        .expect_err("bad request");
    assert!(err.to_string().contains("requests[1].prompt"), "{err}");
    // A file larger than a batch may be is refused before it is sent, saying so.
    let big = format!(r#"{{"prompt":"{}"}}"#, "x".repeat(1024 * 1024));
    std::fs::write(&file, vec![big; 66].join("\n"))?;
    let err = app.cli(&["batch", "submit", &path]).expect_err("too large");
    assert!(err.to_string().contains("split the file"), "{err}");
    assert_eq!(app.count("batches").await?, 1);
    std::fs::remove_dir_all(&dir)?;
    app.stop().await
}

/// Tests about Redis or Postgres themselves, or about processes sharing them: the embedded
/// pass filters them out by name (`-- --skip ::servers::`, as `scripts/test` does).
mod servers {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_redis_down_a_batch_is_unavailable_and_writes_nothing() -> anyhow::Result<()> {
        crate::support::needs_servers("a Redis outage");
        let app = TestApp::builder()
            .arg("--redis-url", "redis://127.0.0.1:1")
            .without_waiting_for_serving()
            .start()
            .await?;
        let mut c = batches(&app).await?;
        let err = c
            .submit_batch(batch_of(vec![request("a", "sim"), request("b", "sim")]))
            .await
            .expect_err("Redis is down");
        assert_eq!(err.code(), Code::Unavailable);
        assert_eq!(app.count("jobs").await?, 0);
        assert_eq!(app.count("batches").await?, 0);
        app.stop().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_redis_never_got_are_enqueued_by_the_reconciler_and_the_batch_ends()
    -> anyhow::Result<()> {
        crate::support::needs_servers("deletes Redis keys and starts a `llm-jobs worker` process");
        let app = TestApp::builder().without_worker().start().await?;
        let mut c = batches(&app).await?;
        let batch = c
            .submit_batch(batch_of(vec![request("a", "sim"), request("b", "sim")]))
            .await?
            .into_inner();
        // As if every enqueue had failed after the commit: Redis knows nothing of the batch.
        app.flush_redis().await?;
        let _worker = app.spawn_worker(&["--reconcile-secs", "1"])?;
        let events = collect(c.clone(), batch.id.clone()).await?;
        assert_eq!(finished(&events).len(), 2);
        assert_eq!(progress(&events).pop().map(|b| b.completed_count), Some(2));
        app.stop().await
    }
}

/// A `StreamBatch` client that stops reading holds a bounded queue, as a job watcher's does:
/// once it has stayed full for the stall patience the watcher ends, its key's stream slot is
/// free again while the client still reads nothing, and the stream ends with
/// RESOURCE_EXHAUSTED (issue 15: before, 64 messages of any size waited and the watcher and
/// its slot lived until the client disconnected).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_client_that_stops_reading_is_ended_and_frees_its_slot() -> anyhow::Result<()> {
    // Jobs that run for a minute, so the batch keeps sending heartbeat progress messages.
    let upstream = TestUpstream::start(Reply::slow(1200, 0, 50)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .arg("--stream-stall-secs", "1")
        .arg("--stream-heartbeat-secs", "1")
        .arg("--client-max-open-streams", "1")
        .start()
        .await?;
    // Every progress message carries the batch's metadata: about 128 KiB, twice the queue.
    let metadata = (0..64)
        .map(|i| (format!("{i:0>1024}"), "v".repeat(1024)))
        .collect();
    let batch = batches(&app)
        .await?
        .submit_batch(v1::SubmitBatchRequest {
            metadata,
            ..batch_of(vec![request("long", "gpt-4o-mini")])
        })
        .await?
        .into_inner();

    // A client that takes no more than HTTP/2's default 64 KiB window before it reads.
    let narrow = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))?
        .initial_stream_window_size(Some(65_535))
        .initial_connection_window_size(Some(65_535))
        .connect()
        .await?;
    let mut stalled = BatchServiceClient::new(crate::support::with_key(narrow, Some(&app.key))?)
        .max_decoding_message_size(4 << 20)
        .stream_batch(v1::StreamBatchRequest {
            batch_id: batch.id.clone(),
        })
        .await?
        .into_inner();
    // Reading nothing, the stalled stream lets go of the key's only slot after the patience
    // (until then a second stream is refused RESOURCE_EXHAUSTED).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut other = loop {
        let opened = batches(&app)
            .await?
            .max_decoding_message_size(4 << 20)
            .stream_batch(v1::StreamBatchRequest {
                batch_id: batch.id.clone(),
            })
            .await;
        match opened {
            Ok(stream) => break stream.into_inner(),
            Err(s) if s.code() == Code::ResourceExhausted => {
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "the stalled stream never freed its slot: {s:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(s) => return Err(s.into()),
        }
    };
    let first = tokio::time::timeout(PATIENCE, other.message()).await??;
    assert!(
        matches!(
            first.and_then(|e| e.kind),
            Some(batch_event::Kind::Progress(_))
        ),
        "a new stream starts with the batch's progress"
    );
    drop(other);

    let status = loop {
        match tokio::time::timeout(PATIENCE, stalled.message()).await? {
            Ok(Some(_)) => {}
            Ok(None) => anyhow::bail!("the stalled stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("StreamBatch"), "{status:?}");
    batches(&app)
        .await?
        .cancel_batch(v1::CancelBatchRequest {
            batch_id: batch.id,
            reason: String::new(),
        })
        .await?;
    app.stop().await
}
