//! A real Redis restart with data loss: the test runs its own `redis-server` on a free port,
//! SIGKILLs it mid-run and starts an empty one on the same port. Jobs still finish exactly
//! once, and a client that resumes with its last sequence after UNAVAILABLE gets a clean
//! stream.

use std::{process::Stdio, time::Duration};

use llm_jobs::proto::v1;

use crate::support::{
    PATIENCE, TestApp, request, text_of,
    upstream::{Reply, TestUpstream},
    watch_resuming,
};

/// A private `redis-server` (without persistence) on `port`; killed when dropped.
struct PrivateRedis(std::process::Child);

impl PrivateRedis {
    async fn start(port: u16) -> anyhow::Result<PrivateRedis> {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()?;
        let url = format!("redis://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(mut c) = redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return Ok(PrivateRedis(child));
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Tests about Redis or Postgres themselves, or about processes sharing them: the embedded
/// pass filters them out by name (`-- --skip ::servers::`, as `scripts/test` does).
mod servers {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_survive_a_redis_restart_that_loses_everything() -> anyhow::Result<()> {
        crate::support::needs_servers("a Redis restart");
        let port = free_port()?;
        let redis = PrivateRedis::start(port).await?;
        let upstream = TestUpstream::start(Reply::slow(40, 10, 25)).await?;
        let app = TestApp::builder()
            .upstream(upstream.base_url())
            .concurrency(1)
            .arg("--redis-url", &format!("redis://127.0.0.1:{port}"))
            .arg("--lease-secs", "2")
            .arg("--reconcile-secs", "1")
            .start()
            .await?;
        let running = app.submit(request("running", "gpt-4o-mini")).await?;
        let queued = app.submit(request("queued", "gpt-4o-mini")).await?;
        app.wait_for_job(&running.id, |j| j.output_tokens >= 3)
            .await?;
        let watcher = {
            let (app_ref, id) = (&app, running.id.clone());
            async move { watch_resuming(app_ref, &id).await }
        };
        let restart = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(redis);
            PrivateRedis::start(port).await
        };
        let (events, redis) = tokio::join!(watcher, restart);
        let (events, _redis) = (events?, redis?);

        let seqs: Vec<_> = events.iter().map(|e| e.sequence).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "no repeat, no reordering: {seqs:?}"
        );
        assert_eq!(
            text_of(&events),
            (0..40).map(|i| format!("tok{i} ")).collect::<String>()
        );
        for id in [&running.id, &queued.id] {
            let job = app
                .wait_for_job(id, |j| j.status() == v1::JobStatus::Completed)
                .await?;
            assert!(job.attempts >= 1);
            assert_eq!(
                app.result(id).await?.content,
                (0..40).map(|i| format!("tok{i} ")).collect::<String>()
            );
        }
        app.stop().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_redis_outage_delays_deltas_but_loses_none() -> anyhow::Result<()> {
        crate::support::needs_servers("a Redis outage");
        let proxy = crate::support::proxy::Proxy::start(&crate::support::redis_host()).await?;
        let upstream = TestUpstream::start(Reply::slow(40, 10, 25)).await?;
        let app = TestApp::builder()
            .upstream(upstream.base_url())
            .arg("--redis-url", &format!("redis://{}", proxy.addr))
            .start()
            .await?;
        let job = app
            .submit(request("through an outage", "gpt-4o-mini"))
            .await?;
        app.wait_for_job(&job.id, |j| j.output_tokens >= 3).await?;
        proxy.cut();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        proxy.restore();
        let events = watch_resuming(&app, &job.id).await?;
        let full: String = (0..40).map(|i| format!("tok{i} ")).collect();
        assert_eq!(text_of(&events), full, "no delta lost");
        assert_eq!(app.result(&job.id).await?.content, full);
        assert_eq!(
            upstream.requests().len(),
            1,
            "the outage did not restart the attempt"
        );
        app.stop().await
    }

    /// A Redis that hangs for longer than a command's timeout and then runs everything it was
    /// sent: the worker's timed-out append and its retry both reach it, and the deltas are in
    /// the log once, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_redis_does_not_duplicate_deltas() -> anyhow::Result<()> {
        crate::support::needs_servers("a Redis that hangs");
        let proxy = crate::support::proxy::Proxy::start(&crate::support::redis_host()).await?;
        let upstream = TestUpstream::start(Reply::slow(100, 10, 20)).await?;
        let app = TestApp::builder()
            .upstream(upstream.base_url())
            .arg("--redis-url", &format!("redis://{}", proxy.addr))
            .start()
            .await?;
        let job = app.submit(request("through a hang", "gpt-4o-mini")).await?;
        app.wait_for_job(&job.id, |j| j.output_tokens >= 5).await?;
        // Longer than the 500 ms a command waits for its answer, several flushes long.
        proxy.hold();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        proxy.release();
        app.wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
        let events = watch_resuming(&app, &job.id).await?;
        crate::support::assert_well_formed(&events, 0);
        let full: String = (0..100).map(|i| format!("tok{i} ")).collect();
        assert_eq!(text_of(&events), full, "every delta once, in order");
        let counts: Vec<u64> = events
            .iter()
            .filter_map(|e| match &e.kind {
                Some(v1::job_event::Kind::TokenDelta(d)) => Some(d.output_tokens),
                _ => None,
            })
            .collect();
        assert!(
            counts.windows(2).all(|w| w[0] < w[1]),
            "output tokens only rise: {counts:?}"
        );
        assert_eq!(app.result(&job.id).await?.content, full);
        app.stop().await
    }
}
