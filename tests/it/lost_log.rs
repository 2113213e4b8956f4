//! A running job whose event log Redis loses (FLUSHALL, a restart without persistence) while
//! its attempt goes on to the end: the worker says so, and the job's stored end (a snapshot
//! and its terminal event) sits at fixed sequences just after the last one the lost log
//! published, so that every resume sees the same sequences and a resume past the end is
//! OUT_OF_RANGE, as for any other job.

use std::time::Duration;

use llm_jobs::proto::v1::{self, job_event::Kind};

use crate::support::{
    PATIENCE, TestApp, request, text_of,
    upstream::{Reply, TestUpstream},
};

fn tokens(n: usize) -> String {
    (0..n).map(|i| format!("tok{i} ")).collect()
}

fn is_terminal(e: &v1::JobEvent) -> bool {
    matches!(
        e.kind,
        Some(Kind::Completed(_) | Kind::Failed(_) | Kind::Cancelled(_))
    )
}

/// Tests about Redis itself: the embedded pass filters them out by name
/// (`-- --skip ::servers::`, as `scripts/test` does).
mod servers {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_that_lost_its_log_ends_at_fixed_sequences() -> anyhow::Result<()> {
        crate::support::needs_worker_processes();
        let upstream = TestUpstream::start(Reply::slow(40, 10, 25)).await?;
        // The attempt, not the reconciler, ends this job: the reconciler waits an hour, and
        // the worker's first heartbeat after its start comes 20 s later, long after the job.
        let app = TestApp::builder()
            .upstream(upstream.base_url())
            .without_worker()
            .concurrency(1)
            .arg("--lease-secs", "60")
            .arg("--reconcile-secs", "3600")
            .start()
            .await?;
        let log_path = std::env::temp_dir().join(format!("llmjobs_it_{}_worker.log", app.prefix));
        let outcome = async {
            let worker = app.spawn_worker_logging(&[], std::fs::File::create(&log_path)?.into())?;
            let job = app.submit(request("lose my log", "gpt-4o-mini")).await?;
            let live = app.watch_in_background(&job.id);
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while crate::watchers::subscriptions(&app, &job.id).await? == 0 {
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "the watcher never subscribed"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            app.wait_for_job(&job.id, |j| j.output_tokens >= 5).await?;
            app.flush_redis().await?;

            let done = app
                .wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Completed)
                .await?;
            assert_eq!(done.attempts, 1, "the attempt went on to the end");
            assert_eq!(upstream.requests().len(), 1);
            assert_eq!(app.result(&job.id).await?.content, tokens(40));

            // The live watcher saw the lost log up to some sequence, then the stored end.
            let live = live.await??;
            let end = done.last_sequence;
            let seen = live
                .iter()
                .filter(|e| !is_terminal(e) && !matches!(e.kind, Some(Kind::Snapshot(_))))
                .map(|e| e.sequence)
                .max()
                .unwrap_or(0);
            assert!(seen >= 3, "the watcher followed the job live: {live:?}");
            assert!(
                end > seen + 1 && end < llm_jobs::reconciler::EPOCH,
                "the end ({end}) follows what the lost log published (at least {seen})"
            );
            let tail: Vec<_> = live.iter().rev().take(2).rev().collect();
            assert!(
                matches!(tail[0].kind, Some(Kind::Snapshot(_))) && tail[0].sequence == end - 1,
                "{tail:?}"
            );
            assert!(
                matches!(tail[1].kind, Some(Kind::Completed(_))) && tail[1].sequence == end,
                "{tail:?}"
            );
            assert_eq!(text_of(&live), tokens(40));

            // Every resume before the end gets the same snapshot and terminal event.
            for after in [0, 1, seen, end - 2] {
                let events = app.watch(&job.id, after).await?;
                let seqs: Vec<u64> = events.iter().map(|e| e.sequence).collect();
                assert_eq!(seqs, [end - 1, end], "resumed after {after}: {events:?}");
                assert!(matches!(events[0].kind, Some(Kind::Snapshot(_))));
                assert!(matches!(events[1].kind, Some(Kind::Completed(_))));
                assert_eq!(text_of(&events), tokens(40), "resumed after {after}");
            }
            let last = app.watch(&job.id, end - 1).await?;
            assert_eq!(last.len(), 1, "{last:?}");
            assert!(matches!(last[0].kind, Some(Kind::Completed(_))) && last[0].sequence == end);
            assert!(app.watch(&job.id, end).await?.is_empty());
            for after in [end + 1, end + 100] {
                let status = app
                    .watch(&job.id, after)
                    .await
                    .expect_err("past the terminal event")
                    .downcast::<tonic::Status>()?;
                assert_eq!(status.code(), tonic::Code::OutOfRange, "after {after}");
                assert!(
                    status.message().contains(&format!("({end})")),
                    "names the last sequence: {}",
                    status.message()
                );
            }

            drop(worker);
            let log = std::fs::read_to_string(&log_path)?;
            assert!(
                log.lines()
                    .any(|l| l.contains(" WARN ") && l.contains("event log was lost")),
                "the worker warned: {log}"
            );
            Ok::<_, anyhow::Error>(())
        }
        .await;
        let _ = std::fs::remove_file(&log_path);
        outcome?;
        app.stop().await
    }

    /// Redis loses everything (its keys: queue, lease, log) while a job's only attempt runs,
    /// with the worker's heartbeat and the reconciler both active: the worker claims the job
    /// again at its next heartbeat and the attempt goes on to the end. Neither is the attempt
    /// stopped for a lost lease nor is the job run a second time (which with one attempt
    /// allowed would fail it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_running_job_whose_claim_redis_lost_goes_on_to_the_end() -> anyhow::Result<()> {
        crate::support::needs_worker_processes();
        // 40 tokens 100 ms apart: after the loss the attempt outlives several heartbeats
        // (every 2/3 s with a lease of 2 s) and reconciler passes (every second, acting on
        // jobs last changed more than 5 s ago).
        let upstream = TestUpstream::start(Reply::slow(40, 10, 150)).await?;
        let app = TestApp::builder()
            .upstream(upstream.base_url())
            .without_worker()
            .concurrency(1)
            .max_attempts(1)
            .arg("--lease-secs", "2")
            .arg("--reconcile-secs", "1")
            .start()
            .await?;
        let log_path =
            std::env::temp_dir().join(format!("llmjobs_it_{}_worker_claim.log", app.prefix));
        let outcome = async {
            let worker = app.spawn_worker_logging(&[], std::fs::File::create(&log_path)?.into())?;
            let job = app.submit(request("lose my claim", "gpt-4o-mini")).await?;
            app.wait_for_job(&job.id, |j| j.output_tokens >= 3).await?;
            app.flush_redis().await?;

            let done = app
                .wait_for_job(&job.id, |j| {
                    matches!(j.status(), v1::JobStatus::Completed | v1::JobStatus::Failed)
                })
                .await?;
            assert_eq!(done.status(), v1::JobStatus::Completed, "{done:?}");
            assert_eq!(done.attempts, 1, "the first attempt went on to the end");
            assert_eq!(upstream.requests().len(), 1, "the job ran once");
            assert_eq!(app.result(&job.id).await?.content, tokens(40));
            assert!(
                done.last_sequence < llm_jobs::reconciler::EPOCH,
                "the reconciler did not restart the job's log: {}",
                done.last_sequence
            );

            // The restored claim ends with the job: no lease is left to expire and run it again.
            let mut r = app.redis().await?;
            let leases = format!("{{{}}}:leases", app.prefix);
            let deadline = tokio::time::Instant::now() + PATIENCE;
            loop {
                let n: i64 = redis::cmd("ZCARD").arg(&leases).query_async(&mut r).await?;
                if n == 0 {
                    break;
                }
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "{n} leases left after the job ended"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }

            drop(worker);
            let log = std::fs::read_to_string(&log_path)?;
            assert!(
                log.lines()
                    .any(|l| l.contains(" WARN ") && l.contains("claimed it again")),
                "the worker said it claimed the job again: {log}"
            );
            assert!(
                !log.contains("stopping the attempt"),
                "the attempt was never stopped: {log}"
            );
            Ok::<_, anyhow::Error>(())
        }
        .await;
        let _ = std::fs::remove_file(&log_path);
        outcome?;
        app.stop().await
    }
}
