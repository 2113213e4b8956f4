//! The fleet's upstream budget: two worker processes share one requests-per-window budget in
//! Redis, counted where it matters, at the upstream.

use std::collections::BTreeMap;

use llm_jobs::proto::v1;

use crate::support::{
    TestApp, request,
    upstream::{Reply, TestUpstream},
};

/// Tests about Redis or Postgres themselves, or about processes sharing them: the embedded
/// pass filters them out by name (`-- --skip ::servers::`, as `scripts/test` does).
mod servers {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_workers_stay_under_the_shared_requests_per_window() -> anyhow::Result<()> {
        crate::support::needs_servers(
            "two `llm-jobs worker` processes sharing the budget through Redis",
        );
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upstream_429_halves_the_shared_budget_until_its_retry_after() -> anyhow::Result<()>
    {
        crate::support::needs_servers("reads the penalty key in Redis");
        let upstream = TestUpstream::start(Reply::slow(1, 0, 1)).await?;
        upstream.push_reply(Reply::Status {
            status: 429,
            error_type: "rate_limit_error",
            retry_after_secs: Some(60),
        });
        // 3 requests per minute; halved: 2.
        let app = TestApp::builder()
            .upstream(upstream.base_url())
            .arg("--upstream-rpm", "3")
            // The penalty lasts the Retry-After capped as retries are: the whole 60 s here,
            // so the third request cannot slip through a penalty already over.
            .arg("--retry-cap-ms", "60000")
            .start()
            .await?;
        let penalty = format!("{}:ub:gpt-4o-mini:penalty", app.prefix);
        let mut redis = app.redis().await?;
        let pttl = redis::cmd("PTTL").arg(&penalty).clone();
        let ttl: i64 = pttl.query_async(&mut redis).await?;
        assert_eq!(ttl, -2, "no penalty before a 429");

        // Request 1: a 429, which fails this one-attempt job and shrinks the budget.
        let mut limited = request("first", "gpt-4o-mini");
        limited.max_attempts = Some(1);
        let a = app.submit(limited).await?;
        let a = app
            .wait_for_job(&a.id, |j| j.status() == v1::JobStatus::Failed)
            .await?;
        assert_eq!(
            a.error.map(|e| e.code).as_deref(),
            Some("upstream_rate_limited")
        );
        let ttl: i64 = pttl.query_async(&mut redis).await?;
        assert!(
            (50_000..=60_000).contains(&ttl),
            "the budget is halved for the Retry-After (60 s): PTTL {ttl}"
        );

        // Request 2 fits the halved budget of 2 per minute; request 3 would fit the full 3 but
        // not the halved 2, so it waits at the budget, not at the upstream.
        let b = app.submit(request("second", "gpt-4o-mini")).await?;
        app.wait_for_job(&b.id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
        let c = app.submit(request("third", "gpt-4o-mini")).await?;
        app.wait_for_job(&c.id, |j| j.status() == v1::JobStatus::Running)
            .await?;
        // Not a timing assertion: on a slow machine the third request only arrives later still.
        assert!(
            !upstream
                .wait_for_requests(3, std::time::Duration::from_millis(500))
                .await,
            "the third request waited for the halved budget"
        );
        assert_eq!(upstream.requests().len(), 2);

        // Once the penalty is over (here: lifted by hand instead of waiting a minute), the full
        // budget lets it through.
        let _: i64 = redis::cmd("DEL")
            .arg(&penalty)
            .query_async(&mut redis)
            .await?;
        app.wait_for_job(&c.id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
        assert_eq!(upstream.requests().len(), 3);
        app.stop().await
    }
}
