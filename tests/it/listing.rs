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
