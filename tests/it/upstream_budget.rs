//! The fleet's upstream budget: two worker processes share one requests-per-window budget in
//! Redis, counted where it matters, at the upstream.

use std::collections::BTreeMap;

use llm_jobs::proto::v1;

use crate::support::{
    TestApp, request,
    upstream::{Reply, TestUpstream},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_stay_under_the_shared_requests_per_window() -> anyhow::Result<()> {
    const LIMIT: usize = 3;
    const WINDOW_MS: u128 = 2000;
    const JOBS: usize = 9;
    let upstream = TestUpstream::start(Reply::slow(3, 0, 1)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .without_worker()
        .start()
        .await?;
    let budget = [
        "--concurrency",
        "8",
        "--upstream-rpm",
        "3",
        "--upstream-window-ms",
        "2000",
    ];
    let _one = app.spawn_worker(&budget)?;
    let _two = app.spawn_worker(&budget)?;
    let mut ids = Vec::new();
    for i in 0..JOBS {
        ids.push(
            app.submit(request(&format!("job {i}"), "gpt-4o-mini"))
                .await?
                .id,
        );
    }
    for id in &ids {
        app.wait_for_job(id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
    }
    // Requests per budget window, by arrival at the upstream. A request taken at the very end
    // of a window may arrive in the next one, hence one of slack.
    let mut per_window: BTreeMap<u128, usize> = BTreeMap::new();
    for r in upstream.requests() {
        let ms = r.at.duration_since(std::time::UNIX_EPOCH)?.as_millis();
        *per_window.entry(ms / WINDOW_MS).or_default() += 1;
    }
    assert_eq!(per_window.values().sum::<usize>(), JOBS);
    assert!(
        per_window.values().all(|n| *n <= LIMIT + 1),
        "over budget: {per_window:?}"
    );
    assert!(
        per_window.len() >= JOBS / LIMIT,
        "spread out: {per_window:?}"
    );
    app.stop().await
}
