//! Job throughput: many jobs of 16 tokens submitted by concurrent callers (`SubmitJob`, no
//! stream), timed until every one of them is completed in the store.

use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use llm_jobs::proto::v1;

use crate::{
    INSTANT_MODEL, INSTANT_TOKENS, Scale,
    harness::{Client, submit_closed_loop},
    report::{Report, row},
    server::Server,
};

/// Concurrent callers of the throughput scenario.
const CALLERS: usize = 128;

/// Runs the scenario and adds its rows.
pub(crate) async fn run(server: &Server, scale: Scale, report: &mut Report) -> anyhow::Result<()> {
    let n = scale.throughput_jobs;
    let client = server.client().await?;
    // Only this scenario's jobs count: the server may hold completed jobs of earlier ones.
    let since = SystemTime::now();
    let start = Instant::now();
    submit_closed_loop(
        &client,
        n,
        CALLERS,
        INSTANT_MODEL,
        v1::StreamingMode::Buffered,
        "job",
    )
    .await?;
    let submit_secs = start.elapsed().as_secs_f64();
    // Completed jobs, counted by listing (newest first) until every job is done.
    let mut c = client.clone();
    let deadline = Instant::now() + Duration::from_secs(600);
    let done_at = loop {
        let completed = count_completed(&mut c, since).await?;
        anyhow::ensure!(
            completed <= n,
            "{completed} completed jobs, {n} were submitted"
        );
        if completed == n {
            break start.elapsed().as_secs_f64();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {completed} of {n} jobs completed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rate = n as f64 / done_at;
    report.push(row(
        "Job throughput",
        &format!("{n} jobs of {INSTANT_TOKENS} tokens, submitted and completed"),
        format!("submit alone: {:.0} jobs/s", n as f64 / submit_secs),
        format!("{rate:.0} jobs/s ({done_at:.1} s)"),
        "≥ 2000 jobs/s",
        Some(rate >= 2000.0),
    ));
    report.raw.insert(
        "throughput".into(),
        json!({"jobs": n, "submit_secs": submit_secs, "completed_secs": done_at, "jobs_per_second": rate}),
    );
    Ok(())
}

/// Completed jobs created after `since` (paging through ListJobs).
async fn count_completed(c: &mut Client, since: SystemTime) -> anyhow::Result<usize> {
    let mut completed = 0;
    let mut page_token = String::new();
    loop {
        let page = c
            .list_jobs(v1::ListJobsRequest {
                page_size: 1000,
                page_token,
                status: v1::JobStatus::Completed.into(),
                created_after: Some(since.into()),
                ..Default::default()
            })
            .await?
            .into_inner();
        completed += page.jobs.len();
        if page.next_page_token.is_empty() {
            return Ok(completed);
        }
        page_token = page.next_page_token;
    }
}
