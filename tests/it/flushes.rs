//! What a flush of token deltas carries beyond the event log's contract (`contract::events`,
//! which runs the log's own checks on Redis and in process): a running attempt learns of a
//! cancel even when the cancel signal never reached its worker, and in Redis an append
//! publishes only while someone watches the job.

use llm_jobs::{
    events::{
        CancelCheck, Event, EventKind, Fence, Live, event,
        event::{Started, TokenDelta},
    },
    job::JobId,
    proto::v1::{self, job_event::Kind},
};

use crate::{
    contract::{Backend, WINDOW_SECS, next_live},
    support::{
        PATIENCE, TestApp, assert_well_formed, request, set_cancel_flag,
        upstream::{Reply, TestUpstream},
    },
};

fn delta(i: usize) -> Event {
    event(EventKind::TokenDelta(TokenDelta {
        text: format!("t{i} "),
        output_tokens: i as u64 + 1,
        ..Default::default()
    }))
}

/// Tests about Redis or Postgres themselves, or about processes sharing them: the embedded
/// pass filters them out by name (`-- --skip ::servers::`, as `scripts/test` does).
mod servers {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancel_whose_signal_was_lost_still_stops_the_running_job() -> anyhow::Result<()> {
        crate::support::needs_servers(
            "sets the cancel flag in Redis without its pub/sub signal; in process the signal \
         cannot be lost (the in-process flag check is part of the event log's contract)",
        );
        // 10,000 tokens 20 ms apart: minutes of work unless the cancel lands.
        let upstream = TestUpstream::start(Reply::slow(10_000, 10, 20)).await?;
        let app = TestApp::builder()
            .upstream(upstream.base_url())
            .start()
            .await?;
        let job = app.submit(request("long story", "gpt-4o-mini")).await?;
        let watcher = app.watch_in_background(&job.id);
        let before = app.wait_for_job(&job.id, |j| j.output_tokens >= 3).await?;

        set_cancel_flag(&app, &job.id, "signal lost").await?;

        let events = tokio::time::timeout(PATIENCE, watcher)
            .await
            .map_err(|_| {
                anyhow::anyhow!("the job went on streaming: the cancel never landed")
            })???;
        assert_well_formed(&events, 0);
        match events.last().and_then(|e| e.kind.clone()) {
            Some(Kind::Cancelled(c)) => assert_eq!(c.reason, "signal lost"),
            other => anyhow::bail!("ended with {other:?}"),
        }
        let done = app
            .wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Cancelled)
            .await?;
        let tokens_after = done.output_tokens.saturating_sub(before.output_tokens);
        eprintln!(
            "cancelled after {} tokens, {tokens_after} after the flag was set",
            done.output_tokens
        );
        assert!(done.output_tokens < 10_000, "stopped before the end");
        assert!(
            upstream.wait_for_disconnects(1, PATIENCE).await,
            "upstream connection closed"
        );
        app.stop().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_publish_only_while_someone_watches_and_a_new_watcher_misses_nothing()
    -> anyhow::Result<()> {
        crate::support::needs_servers(
            "counts messages on the job's Redis channel; in process there is none",
        );
        let backend = Backend::redis(WINDOW_SECS).await?;
        let log = backend.events();
        let id = JobId::now_v7();
        // A bare subscriber on the job's channel: it sees what appends publish without marking the
        // job as watched, as a service's watcher does.
        let channel = llm_jobs::redis::Keys::new(&backend.prefix).events_channel(&id);
        let mut bare = redis::Client::open(crate::support::redis_url())?
            .get_async_pubsub()
            .await?;
        bare.subscribe(&channel).await?;
        let started = event(EventKind::Started(Started {
            attempt: 1,
            ..Default::default()
        }));
        let unwatched = log
            .append_events(
                id,
                &[started, delta(0)],
                Fence::Start(1),
                None,
                CancelCheck::Skip,
            )
            .await?;
        assert_eq!(unwatched.sequence, Some(2));

        let mut live = log.subscribe(id).await?;
        let watched = log
            .append_events(id, &[delta(1)], Fence::Attempt(1), None, CancelCheck::Skip)
            .await?;
        assert_eq!(watched.sequence, Some(3));
        // Messages arrive in order: had the first append published, its message would be first.
        let mut messages = bare.on_message();
        let first = tokio::time::timeout(PATIENCE, futures::StreamExt::next(&mut messages))
            .await?
            .ok_or_else(|| anyhow::anyhow!("the bare subscription ended"))?;
        assert!(
            first.get_payload_bytes().starts_with(b"3/1:"),
            "the first message is the watched append's, got {:?}",
            String::from_utf8_lossy(first.get_payload_bytes())
        );
        match next_live(&mut live).await? {
            Live::Event(e) => assert_eq!(e.event().sequence, 3),
            Live::Resync => anyhow::bail!("a resync instead of the watched append"),
        }
        // What came before the mark is in the log, gap-free.
        let read = log.read_after(id, 0).await?.expect("a log");
        let sequences: Vec<u64> = read.events.iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, [1, 2, 3]);
        backend.clean().await
    }
}
