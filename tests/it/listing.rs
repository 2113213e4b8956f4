//! ListJobs: filters and pages that neither skip nor repeat a job.

use llm_jobs::proto::v1;
use tonic::Code;

use crate::support::{TestApp, request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_cover_every_job_once_newest_first_and_filters_apply() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let mut submitted = Vec::new();
    for i in 0..7 {
        let mut req = request(&format!("job {i}"), "sim");
        req.tags = if i % 2 == 0 {
            vec!["even".into(), "all".into()]
        } else {
            vec!["all".into()]
        };
        submitted.push(app.submit(req).await?.id);
    }
    for id in &submitted {
        app.wait_for_job(id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
    }
    let mut c = app.client.clone();
    let (mut seen, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = c
            .list_jobs(v1::ListJobsRequest {
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        pages += 1;
        seen.extend(page.jobs.iter().map(|j| j.id.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let newest_first: Vec<_> = submitted.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first, "every job once, newest first");
    assert_eq!(pages, 3);

    let even = c
        .list_jobs(v1::ListJobsRequest {
            tag: "even".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(even.jobs.len(), 4);
    assert!(
        even.jobs
            .iter()
            .all(|j| j.tags.contains(&"even".to_owned()))
    );
    let done = c
        .list_jobs(v1::ListJobsRequest {
            status: v1::JobStatus::Completed.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(done.jobs.len(), 7);
    let queued = c
        .list_jobs(v1::ListJobsRequest {
            status: v1::JobStatus::Queued.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(queued.jobs.is_empty());
    let future = c
        .list_jobs(v1::ListJobsRequest {
            created_after: Some(prost_types::Timestamp {
                seconds: chrono::Utc::now().timestamp() + 60,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(future.jobs.is_empty());

    for (req, field) in [
        (
            v1::ListJobsRequest {
                page_size: -1,
                ..Default::default()
            },
            "page_size",
        ),
        (
            v1::ListJobsRequest {
                page_size: 1001,
                ..Default::default()
            },
            "page_size",
        ),
        (
            v1::ListJobsRequest {
                page_token: "nope".into(),
                ..Default::default()
            },
            "page_token",
        ),
    ] {
        let e = c.list_jobs(req).await.expect_err("invalid");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(field));
    }
    let mut bad = request("x", "sim");
    bad.tags = vec![String::new()];
    assert_eq!(
        c.submit_job(bad).await.expect_err("empty tag").code(),
        Code::InvalidArgument
    );
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_deletes_only_jobs_that_ended_long_ago() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let old = app.submit(request("old", "sim")).await?;
    let recent = app.submit(request("recent", "sim")).await?;
    for id in [&old.id, &recent.id] {
        app.wait_for_job(id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
    }
    app.sql(&format!(
        "UPDATE jobs SET finished_at = {} WHERE id = '{}'",
        app.ago_sql(31 * 86_400),
        old.id
    ))
    .await?;
    let history = async |id: &str| -> anyhow::Result<i64> {
        let n = app
            .sql(&format!(
                "SELECT CAST(count(*) AS TEXT) AS v FROM job_progress_events WHERE job_id = '{id}'"
            ))
            .await?;
        Ok(n.first().map_or(Ok(0), |v| v.parse())?)
    };
    assert!(history(&old.id).await? > 0, "a completed job has history");
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
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("deleted 1 job(s)"));
    let mut c = app.client.clone();
    let gone = c
        .get_job(v1::GetJobRequest {
            job_id: old.id.clone(),
        })
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!(
        history(&old.id).await?,
        0,
        "its progress history went with it"
    );
    assert!(
        history(&recent.id).await? > 0,
        "the recent job keeps its history"
    );
    assert_eq!(
        app.wait_for_job(&recent.id, |_| true).await?.status(),
        v1::JobStatus::Completed
    );
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_that_returns_a_job_reports_the_figures_get_job_does() -> anyhow::Result<()> {
    use crate::support::upstream::{Reply, TestUpstream};
    // By default the upstream streams for minutes: the job that gets it is cancelled.
    let upstream = TestUpstream::start(Reply::slow(10_000, 10, 20)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .max_attempts(1)
        .start()
        .await?;
    let mut c = app.client.clone();
    let figures = |j: &v1::Job| (j.output_tokens, j.last_sequence);
    let get = async |c: &mut llm_jobs::proto::v1::job_service_client::JobServiceClient<_>,
                     id: &str|
           -> anyhow::Result<v1::Job> {
        Ok(c.get_job(v1::GetJobRequest { job_id: id.into() })
            .await?
            .into_inner())
    };

    upstream.push_reply(Reply::fixture("basic.sse"));
    let done = app.submit(request("done", "gpt-4o-mini")).await?;
    app.wait_for_job(&done.id, |j| j.status() == v1::JobStatus::Completed)
        .await?;
    upstream.push_reply(Reply::Status {
        status: 400,
        error_type: "invalid_request_error",
        retry_after_secs: None,
    });
    let broken = app.submit(request("broken", "gpt-4o-mini")).await?;
    app.wait_for_job(&broken.id, |j| j.status() == v1::JobStatus::Failed)
        .await?;

    let running = app.submit(request("running", "gpt-4o-mini")).await?;
    app.wait_for_job(&running.id, |j| j.output_tokens >= 3)
        .await?;
    let cancelled = c
        .cancel_job(v1::CancelJobRequest {
            job_id: running.id.clone(),
            reason: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(cancelled.status(), v1::JobStatus::Cancelled);
    let after = get(&mut c, &running.id).await?;
    assert!(after.output_tokens >= 3, "{after:?}");
    assert!(after.last_sequence > 0, "{after:?}");
    assert_eq!(figures(&cancelled), figures(&after), "CancelJob");

    // A repeated submit of a finished job (same idempotency key) shows its figures too.
    let mut keyed = request("keyed", "sim");
    keyed.idempotency_key = "figures".into();
    let first = app.submit(keyed.clone()).await?;
    app.wait_for_job(&first.id, |j| j.status() == v1::JobStatus::Completed)
        .await?;
    let again = app.submit(keyed).await?;
    let keyed_now = get(&mut c, &first.id).await?;
    assert!(keyed_now.output_tokens > 0);
    assert_eq!(figures(&again), figures(&keyed_now), "SubmitJob");

    let listed = c
        .list_jobs(v1::ListJobsRequest::default())
        .await?
        .into_inner()
        .jobs;
    assert_eq!(listed.len(), 4);
    for job in &listed {
        let got = get(&mut c, &job.id).await?;
        assert_eq!(figures(job), figures(&got), "ListJobs {}", job.id);
    }
    assert!(listed.iter().all(|j| j.last_sequence > 0));
    assert!(
        listed
            .iter()
            .find(|j| j.id == done.id)
            .is_some_and(|j| j.output_tokens > 0)
    );

    let failed = app
        .admin_client()?
        .list_failed_jobs(v1::ListFailedJobsRequest::default())
        .await?
        .into_inner()
        .failed_jobs;
    assert_eq!(failed.len(), 1);
    let job = failed[0].job.clone().expect("a job");
    assert_eq!(job.id, broken.id);
    assert_eq!(
        figures(&job),
        figures(&get(&mut c, &broken.id).await?),
        "ListFailedJobs"
    );
    app.stop().await
}
