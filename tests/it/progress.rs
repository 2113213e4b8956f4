//! Progress tracking: stages in order for normal, retried and cancelled runs, progress that
//! never exceeds 1 nor falls within an attempt, milestones, the stored history and its paging,
//! and GetJobProgress while running and after the end.

use std::{collections::HashSet, time::Duration};

use llm_jobs::proto::v1::job_service_client::JobServiceClient;
use llm_jobs::proto::v1::{
    self, MilestoneKind, Stage, StageStatus, job_event::Kind, progress_event,
};

use crate::support::{
    TestApp, assert_well_formed, collect, request,
    upstream::{Reply, TestUpstream},
};

/// (current stage, previous stage and its status) of every stage change, in order.
type StageRow = (u32, Stage, Option<(Stage, StageStatus)>);

fn stage_rows(events: &[v1::JobEvent]) -> Vec<StageRow> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::StageChanged(c)) => Some(change_row(c)),
            _ => None,
        })
        .collect()
}

fn change_row(c: &v1::StageChanged) -> StageRow {
    (
        c.attempt,
        c.current.unwrap_or_default().stage(),
        c.previous.map(|p| (p.stage(), p.status())),
    )
}

fn milestones(events: &[v1::JobEvent]) -> Vec<MilestoneKind> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Milestone(m)) => Some(m.kind()),
            _ => None,
        })
        .collect()
}

/// The job's progress, through GetJobProgress.
async fn progress_of(
    c: &mut JobServiceClient<llm_jobs::cli::client::Channel>,
    job_id: impl Into<String>,
) -> anyhow::Result<v1::JobProgress> {
    Ok(c.get_job_progress(v1::GetJobProgressRequest {
        job_id: job_id.into(),
    })
    .await?
    .into_inner())
}

/// Every entry of the job's stored history, read `page_size` at a time.
async fn history(
    app: &TestApp,
    job_id: &str,
    page_size: i32,
) -> anyhow::Result<Vec<v1::ProgressEvent>> {
    let mut c = app.client.clone();
    let mut all = Vec::new();
    let mut page_token = String::new();
    for _ in 0..1000 {
        let page = c
            .list_job_progress_events(v1::ListJobProgressEventsRequest {
                job_id: job_id.to_owned(),
                page_size,
                page_token,
            })
            .await?
            .into_inner();
        assert!(page.events.len() <= page_size as usize);
        all.extend(page.events);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
    anyhow::bail!("the history never ended")
}

use Stage as S;
use StageStatus as St;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_run_walks_the_stages_and_reports_bounded_monotonic_progress() -> anyhow::Result<()>
{
    // 30 tokens, 20 ms apart: ~600 ms of generation, so the 250 ms limit on progress events
    // allows a few updates, far fewer than one per token.
    let upstream = TestUpstream::start(Reply::slow(30, 50, 20)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let mut req = request("stages", "gpt-4o-mini");
    req.generation_config.get_or_insert_default().max_tokens = Some(40);
    let mut c = app.client.clone();
    let stream = c.submit_and_stream(req).await?.into_inner();
    let events = collect(stream).await?;
    assert_well_formed(&events, 0);
    let job_id = events[0].job_id.clone();

    assert_eq!(
        stage_rows(&events),
        [
            (1, S::Dispatched, Some((S::Queued, St::Completed))),
            (1, S::Connecting, Some((S::Dispatched, St::Completed))),
            (
                1,
                S::AwaitingFirstToken,
                Some((S::Connecting, St::Completed))
            ),
            (
                1,
                S::Generating,
                Some((S::AwaitingFirstToken, St::Completed))
            ),
            (1, S::Finalizing, Some((S::Generating, St::Completed))),
            (1, S::Completed, Some((S::Finalizing, St::Completed))),
        ]
    );
    // The generating stage starts before the first token reaches the client.
    let first_delta = events
        .iter()
        .position(|e| matches!(e.kind, Some(Kind::TokenDelta(_))))
        .expect("deltas");
    let generating = events
        .iter()
        .position(|e| matches!(&e.kind, Some(Kind::StageChanged(c)) if c.current.unwrap_or_default().stage() == S::Generating))
        .expect("generating");
    assert!(generating < first_delta);

    let updates: Vec<&v1::ProgressUpdate> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Progress(p)) => Some(p),
            _ => None,
        })
        .collect();
    assert!(!updates.is_empty(), "progress was reported");
    assert!(
        updates.len() < 30 / 2,
        "progress is rate-limited, not per token: {} updates",
        updates.len()
    );
    let mut last = (0u64, 0.0f64);
    for u in &updates {
        let f = u.fraction.expect("max_tokens gives an estimate");
        assert!(f <= 1.0, "fraction {f} above 1");
        assert!(
            u.output_tokens >= last.0 && f >= last.1,
            "progress fell: {updates:?}"
        );
        assert_eq!(u.estimated_output_tokens, Some(40));
        last = (u.output_tokens, f);
    }
    // 30 of 40 estimated tokens: 75 %.
    let m = milestones(&events);
    assert_eq!(m.first(), Some(&MilestoneKind::FirstToken));
    assert!(m.contains(&MilestoneKind::Progress25), "{m:?}");
    assert!(m.contains(&MilestoneKind::Progress50), "{m:?}");

    let p = progress_of(&mut c, job_id.clone()).await?;
    assert_eq!(p.stage(), S::Completed);
    assert_eq!(p.status(), v1::JobStatus::Completed);
    assert_eq!(p.fraction, Some(1.0));
    assert_eq!(p.output_tokens, 30);
    assert_eq!(p.estimate_basis(), v1::EstimateBasis::MaxTokens);
    assert!(p.time_to_first_token_ms.is_some());
    let statuses: Vec<(Stage, StageStatus)> =
        p.stages.iter().map(|s| (s.stage(), s.status())).collect();
    assert_eq!(
        statuses,
        [
            (S::Queued, St::Completed),
            (S::Dispatched, St::Completed),
            (S::Connecting, St::Completed),
            (S::AwaitingFirstToken, St::Completed),
            (S::Generating, St::Completed),
            (S::Finalizing, St::Completed),
            (S::Completed, St::Completed),
        ]
    );
    assert!(
        p.stages[..6]
            .iter()
            .all(|s| s.duration_ms.is_some() && s.start_time.is_some()),
        "every stage has a start and a duration: {:?}",
        p.stages
    );

    // The stored history holds exactly the stage changes and milestones that were streamed,
    // in order, whatever the page size.
    let streamed: Vec<progress_event::Kind> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::StageChanged(c)) => Some(progress_event::Kind::StageChanged(c.clone())),
            Some(Kind::Milestone(m)) => Some(progress_event::Kind::Milestone(m.clone())),
            _ => None,
        })
        .collect();
    for page_size in [1, 3, 1000] {
        let stored: Vec<progress_event::Kind> = history(&app, &job_id, page_size)
            .await?
            .into_iter()
            .filter_map(|e| e.kind)
            .collect();
        assert_eq!(stored, streamed, "history with page_size {page_size}");
    }
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_while_running_shows_the_stage_the_estimate_and_the_worker() -> anyhow::Result<()>
{
    let upstream = TestUpstream::start(Reply::slow(400, 20, 10)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let job = app.submit(request("long", "gpt-4o-mini")).await?;
    app.wait_for_job(&job.id, |j| j.output_tokens >= 20).await?;
    let mut c = app.client.clone();
    let mut tokens = Vec::new();
    for _ in 0..3 {
        // More than the 250 ms progress interval: a fresh snapshot each time.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let p = progress_of(&mut c, job.id.clone()).await?;
        assert_eq!(p.status(), v1::JobStatus::Running);
        assert_eq!(p.stage(), S::Generating);
        assert_eq!(p.attempt, 1);
        // No max_tokens and no completed jobs: no estimate, and nothing invented.
        assert_eq!(p.estimate_basis(), v1::EstimateBasis::None);
        assert_eq!((p.fraction, p.estimated_output_tokens), (None, None));
        assert!(p.estimated_completion_time.is_none());
        let w = p
            .worker
            .as_ref()
            .expect("the worker's figures while it runs");
        assert!(!w.worker_id.is_empty());
        assert!(w.resident_memory_mib.is_some_and(|m| m > 1.0), "{w:?}");
        assert!(p.output_tokens_per_second > 0.0);
        tokens.push(p.output_tokens);
    }
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "progress moves on: {tokens:?}"
    );
    c.cancel_job(v1::CancelJobRequest {
        job_id: job.id.clone(),
        reason: String::new(),
    })
    .await?;
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_run_fails_its_stage_and_queues_the_next_attempt() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::slow(5, 10, 5)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .max_attempts(2)
        .start()
        .await?;
    upstream.push_reply(Reply::Status {
        status: 500,
        error_type: "server_error",
        retry_after_secs: None,
    });
    let mut c = app.client.clone();
    let events = collect(
        c.submit_and_stream(request("retry", "gpt-4o-mini"))
            .await?
            .into_inner(),
    )
    .await?;
    assert_well_formed(&events, 0);
    let rows = stage_rows(&events);
    assert_eq!(
        rows[..4],
        [
            (1, S::Dispatched, Some((S::Queued, St::Completed))),
            (1, S::Connecting, Some((S::Dispatched, St::Completed))),
            // The 500 ends attempt 1 while connecting; attempt 2 waits in the queue.
            (2, S::Queued, Some((S::Connecting, St::Failed))),
            (2, S::Dispatched, Some((S::Queued, St::Completed))),
        ]
    );
    assert_eq!(rows.last().map(|r| r.1), Some(S::Completed));
    let retry = events
        .iter()
        .find_map(|e| match &e.kind {
            Some(Kind::StageChanged(c))
                if c.attempt == 2 && c.current.unwrap_or_default().stage() == S::Queued =>
            {
                Some(c.clone())
            }
            _ => None,
        })
        .expect("the retry's stage change");
    assert_eq!(
        retry.skipped,
        [
            i32::from(S::AwaitingFirstToken),
            i32::from(S::Generating),
            i32::from(S::Finalizing)
        ]
    );
    let retry_milestone = events
        .iter()
        .find_map(|e| match &e.kind {
            Some(Kind::Milestone(m)) if m.kind() == MilestoneKind::Retry => Some(m.clone()),
            _ => None,
        })
        .expect("a retry milestone");
    assert_eq!(
        (retry_milestone.attempt, retry_milestone.detail.as_str()),
        (1, "upstream_server_error")
    );

    let job_id = events[0].job_id.clone();
    let p = progress_of(&mut c, job_id.clone()).await?;
    assert_eq!((p.attempt, p.stage()), (2, S::Completed));

    // The result lists the failed attempt.
    let r = app.result(&job_id).await?;
    assert_eq!(r.attempt_errors.len(), 1);
    assert_eq!(r.attempt_errors[0].attempt, 1);
    assert_eq!(
        r.attempt_errors[0].error.clone().unwrap_or_default().code,
        "upstream_server_error"
    );
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_runs_end_in_the_cancelled_stage_running_or_queued() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::slow(10_000, 10, 20)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let mut c = app.client.clone();
    let job = app.submit(request("cancel me", "gpt-4o-mini")).await?;
    app.wait_for_job(&job.id, |j| j.output_tokens >= 2).await?;
    c.cancel_job(v1::CancelJobRequest {
        job_id: job.id.clone(),
        reason: String::new(),
    })
    .await?;
    let events = app.watch(&job.id, 0).await?;
    let rows = stage_rows(&events);
    assert_eq!(
        rows.last(),
        Some(&(1, S::Cancelled, Some((S::Generating, St::Failed))))
    );
    let last_change = events
        .iter()
        .rev()
        .find_map(|e| match &e.kind {
            Some(Kind::StageChanged(c)) => Some(c.clone()),
            _ => None,
        })
        .expect("stage changes");
    assert_eq!(last_change.skipped, [i32::from(S::Finalizing)]);
    let p = progress_of(&mut c, job.id.clone()).await?;
    assert_eq!(
        (p.status(), p.stage()),
        (v1::JobStatus::Cancelled, S::Cancelled)
    );
    assert_eq!(
        p.fraction, None,
        "a cancelled job has no completion fraction"
    );
    // People read the history: a cancel is not a failure of the stage it stopped.
    let shown = app.cli(&["progress", &job.id, "--history"])?;
    assert!(shown.contains("(after generating stopped in"), "{shown}");
    assert!(!shown.contains("failed"), "{shown}");
    let shown = app.cli(&["progress", &job.id])?;
    assert!(!shown.contains("failed"), "{shown}");
    app.stop().await?;

    // Without a worker the job is cancelled in its queue.
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .without_worker()
        .start()
        .await?;
    let mut c = app.client.clone();
    let mut req = request("never runs", "gpt-4o-mini");
    req.generation_config.get_or_insert_default().max_tokens = Some(300);
    let job = app.submit(req).await?;
    let queued = progress_of(&mut c, job.id.clone()).await?;
    assert_eq!(queued.estimated_output_tokens, Some(300));
    assert_eq!((queued.stage(), queued.attempt), (S::Queued, 0));
    assert_eq!(queued.stages[0].status(), St::Active);
    assert!(queued.stages[1..].iter().all(|s| s.status() == St::Pending));
    c.cancel_job(v1::CancelJobRequest {
        job_id: job.id.clone(),
        reason: String::new(),
    })
    .await?;
    let events = app.watch(&job.id, 0).await?;
    assert_eq!(
        stage_rows(&events),
        [(1, S::Cancelled, Some((S::Queued, St::Failed)))]
    );
    let stored = history(&app, &job.id, 10).await?;
    assert_eq!(stored.len(), 1);
    let p = progress_of(&mut c, job.id.clone()).await?;
    assert_eq!(p.stage(), S::Cancelled);
    assert_eq!(
        (p.estimated_output_tokens, p.estimate_basis()),
        (Some(300), v1::EstimateBasis::MaxTokens),
        "an ended job keeps its estimate"
    );
    let statuses: HashSet<StageStatus> = p.stages[1..6].iter().map(|s| s.status()).collect();
    assert_eq!(statuses, HashSet::from([St::Skipped]));
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_of_unknown_and_malformed_jobs_is_refused() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::slow(1, 1, 1)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .without_worker()
        .start()
        .await?;
    let mut c = app.client.clone();
    let unknown = uuid::Uuid::now_v7().to_string();
    let e = c
        .get_job_progress(v1::GetJobProgressRequest {
            job_id: unknown.clone(),
        })
        .await
        .expect_err("unknown job");
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = c
        .list_job_progress_events(v1::ListJobProgressEventsRequest {
            job_id: unknown,
            ..Default::default()
        })
        .await
        .expect_err("unknown job");
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = c
        .get_job_progress(v1::GetJobProgressRequest {
            job_id: "not-a-uuid".into(),
        })
        .await
        .expect_err("malformed id");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let job = app.submit(request("x", "gpt-4o-mini")).await?;
    for (page_size, page_token) in [(-1, ""), (1001, ""), (10, "garbage"), (10, "p-5")] {
        let e = c
            .list_job_progress_events(v1::ListJobProgressEventsRequest {
                job_id: job.id.clone(),
                page_size,
                page_token: page_token.into(),
            })
            .await
            .expect_err("bad paging");
        assert_eq!(
            e.code(),
            tonic::Code::InvalidArgument,
            "{page_size} {page_token:?}"
        );
    }
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_estimate_comes_from_recent_jobs_of_the_same_type_and_model() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::slow(8, 1, 1)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let mut c = app.client.clone();
    let mut first = None;
    for i in 0..llm_jobs::progress::MIN_ESTIMATE_SAMPLE {
        let mut req = request("size me", "gpt-4o-mini");
        req.generation_config.get_or_insert_default().max_tokens = Some(100);
        let events = collect(c.submit_and_stream(req).await?.into_inner()).await?;
        if i == 0 {
            first = Some(events[0].job_id.clone());
        }
    }
    // The first job had nothing to go on but its max_tokens.
    let p = progress_of(&mut c, first.expect("a first job")).await?;
    assert_eq!(p.output_tokens, 8);
    let events = collect(
        c.submit_and_stream(request("size me too", "gpt-4o-mini"))
            .await?
            .into_inner(),
    )
    .await?;
    let update = events
        .iter()
        .find_map(|e| match &e.kind {
            Some(Kind::Progress(u)) => Some(*u),
            _ => None,
        })
        .expect("a progress update");
    assert_eq!(
        update.estimated_output_tokens,
        Some(8),
        "the median of 5 jobs of 8 tokens"
    );
    let p = progress_of(&mut c, events[0].job_id.clone()).await?;
    // The job ended: progress is rebuilt; the live snapshot it left is used while it lasts.
    assert_eq!(p.estimate_basis(), v1::EstimateBasis::RecentJobs);
    assert_eq!(p.estimate_sample_size, 5);

    // Another model has no history: no estimate.
    let events = collect(
        c.submit_and_stream(request("other", "gpt-4.1-nano"))
            .await?
            .into_inner(),
    )
    .await?;
    let p = progress_of(&mut c, events[0].job_id.clone()).await?;
    assert_eq!(p.estimate_basis(), v1::EstimateBasis::None);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_page_token_continues_only_the_job_it_came_from() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let mut c = app.client.clone();
    let done = app.submit(request("x", "sim")).await?;
    let other = app.submit(request("y", "sim")).await?;
    for id in [&done.id, &other.id] {
        app.wait_for_job(id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
    }
    let first = c
        .list_job_progress_events(v1::ListJobProgressEventsRequest {
            job_id: done.id.clone(),
            page_size: 1,
            page_token: String::new(),
        })
        .await?
        .into_inner();
    assert!(!first.next_page_token.is_empty(), "{first:?}");
    let e = c
        .list_job_progress_events(v1::ListJobProgressEventsRequest {
            job_id: other.id,
            page_size: 1,
            page_token: first.next_page_token,
        })
        .await
        .expect_err("another job's token");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("another list"), "{}", e.message());
    app.stop().await
}
