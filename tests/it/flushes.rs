//! What one append of the event log carries: many events reach live watchers in order and
//! gap-free, and a running attempt's flush of token deltas learns of a cancel even when the
//! cancel signal never reached its worker.
//!
//! The event-log tests drive the library's event log directly (the backend under test: Redis
//! with this test's own prefix, or the in-process twin), since a gRPC watcher repairs any
//! missed live event from the log and so cannot show whether the live path delivered it.

use std::sync::Arc;

use llm_jobs::{
    events::{CancelCheck, CancelRequest, EventLog, Fence, Live, Subscription, event},
    job::JobId,
    proto::v1::{self, JobCompleted, JobQueued, TokenDelta, job_event::Kind},
    queue::Queue,
};

use crate::support::{
    PATIENCE, TestApp, assert_well_formed, embedded, request, set_cancel_flag,
    upstream::{Reply, TestUpstream},
};

/// An event log and the queue whose cancel flags it reads and sets, wired as `serve` wires them, under
/// a fresh prefix; the prefix's Redis keys are deleted by [`Backend::clean`].
pub(crate) struct Backend {
    pub(crate) events: Arc<dyn EventLog>,
    pub(crate) queue: Arc<dyn Queue>,
    prefix: String,
}

impl Backend {
    pub(crate) fn new() -> anyhow::Result<Backend> {
        let prefix = format!("it-{}", uuid::Uuid::new_v4().simple());
        if embedded() {
            let queue = Arc::new(llm_jobs::queue::memory::MemoryQueue::new());
            let events = llm_jobs::events::memory::MemoryEventLog::new(60, 60)
                .with_cancel_flags(queue.clone());
            return Ok(Backend {
                events: Arc::new(events),
                queue,
                prefix,
            });
        }
        let redis = llm_jobs::backend::Redis::new(&llm_jobs::config::Redis {
            url: crate::support::redis_url(),
            prefix: prefix.clone(),
            pool_size: 2,
        })
        .map_err(anyhow::Error::msg)?;
        Ok(Backend {
            events: Arc::new(llm_jobs::events::redis::RedisEventLog::new(
                redis.clone(),
                60,
                60,
            )),
            queue: Arc::new(llm_jobs::queue::redis::RedisQueue::new(redis)),
            prefix,
        })
    }

    pub(crate) async fn clean(self) -> anyhow::Result<()> {
        if embedded() {
            return Ok(());
        }
        let mut r = redis::Client::open(crate::support::redis_url())?
            .get_multiplexed_async_connection()
            .await?;
        for pattern in [
            format!("{}:*", self.prefix),
            format!("{{{}}}:*", self.prefix),
        ] {
            let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut r).await?;
            if !keys.is_empty() {
                let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut r).await?;
            }
        }
        Ok(())
    }
}

fn delta(i: usize) -> v1::JobEvent {
    event(Kind::TokenDelta(TokenDelta {
        text: format!("t{i} "),
        output_tokens: i as u64 + 1,
        ..Default::default()
    }))
}

/// The next live item, within [`PATIENCE`].
async fn next_live(live: &mut Subscription) -> anyhow::Result<Live> {
    tokio::time::timeout(PATIENCE, live.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the live feed ended"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_events_of_one_append_reach_a_live_watcher_in_order_and_gap_free() -> anyhow::Result<()>
{
    let backend = Backend::new()?;
    let log = &backend.events;
    let id = JobId::now_v7();
    let mut live = log.subscribe(id).await?;
    let queued = event(Kind::Queued(JobQueued::default()));
    assert_eq!(log.append(id, &queued, Fence::None).await?, Some(1));
    // As many events as a watcher's live buffer holds, less the few around them.
    let deltas: Vec<v1::JobEvent> = (0..1000).map(delta).collect();
    assert_eq!(
        log.append_tracked(id, &deltas, Fence::None, None).await?,
        Some(1001)
    );
    let completed = event(Kind::Completed(JobCompleted::default()));
    assert_eq!(log.append(id, &completed, Fence::None).await?, Some(1002));

    let mut got = Vec::new();
    while got.len() < 1002 {
        match next_live(&mut live).await? {
            Live::Event(e) if e.sequence == got.len() as u64 + 1 => got.push(e),
            Live::Event(e) => anyhow::bail!(
                "live event {} after {}: the live path lost some",
                e.sequence,
                got.len()
            ),
            Live::Resync => anyhow::bail!(
                "a resync after {} live events: the live path lost some",
                got.len()
            ),
        }
    }
    let sequences: Vec<u64> = got.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=1002).collect::<Vec<u64>>());
    assert!(got.iter().all(|e| e.job_id == id.to_string()));
    for (i, e) in got[1..1001].iter().enumerate() {
        match &e.kind {
            Some(Kind::TokenDelta(d)) => {
                assert_eq!(
                    (d.text.as_str(), d.output_tokens),
                    (&*format!("t{i} "), i as u64 + 1)
                )
            }
            other => anyhow::bail!("event {}: {other:?}", e.sequence),
        }
    }
    assert!(matches!(got[0].kind, Some(Kind::Queued(_))));
    assert!(matches!(got[1001].kind, Some(Kind::Completed(_))));
    // The log agrees with what went out live.
    let read = log.read_after(id, 0).await?.expect("a log");
    assert_eq!(read.events, got);
    assert_eq!(read.terminal_sequence, Some(1002));
    backend.clean().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_larger_than_one_redis_command_takes_is_kept_whole() -> anyhow::Result<()> {
    let backend = Backend::new()?;
    let log = &backend.events;
    let id = JobId::now_v7();
    // More values than Lua's unpack takes at once.
    let deltas: Vec<v1::JobEvent> = (0..10_000).map(delta).collect();
    assert_eq!(
        log.append_tracked(id, &deltas, Fence::None, None).await?,
        Some(10_000)
    );
    let read = log.read_after(id, 9_990).await?.expect("a log");
    let sequences: Vec<u64> = read.events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (9_991..=10_000).collect::<Vec<u64>>());
    assert!(matches!(
        &read.events[9].kind,
        Some(Kind::TokenDelta(d)) if d.text == "t9999 "
    ));
    assert_eq!(
        log.read_after(id, 0).await?.expect("a log").events.len(),
        10_000
    );
    // A page reads at most the count asked for, from where it is asked.
    let page = log.read_page(id, 100, 256).await?.expect("a log");
    let sequences: Vec<u64> = page.events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (101..=356).collect::<Vec<u64>>());
    backend.clean().await
}

/// An append at a known end of the log (`Fence::At`), resent because its answer was lost:
/// added when the log is where it was, answered without adding when an earlier try already
/// put it in, refused otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_append_goes_in_once() -> anyhow::Result<()> {
    let backend = Backend::new()?;
    let log = &backend.events;
    let id = JobId::now_v7();
    let started = llm_jobs::events::event(Kind::Started(v1::JobStarted {
        attempt: 1,
        ..Default::default()
    }));
    assert_eq!(log.append(id, &started, Fence::Start(1)).await?, Some(1));
    let batch = [delta(0), delta(1)];
    let again = Fence::At {
        attempt: 1,
        head: 1,
    };
    // The first try never ran: the retry adds the batch.
    assert_eq!(log.append_tracked(id, &batch, again, None).await?, Some(3));
    // The first try ran after all (or the retry is retried): nothing is added twice.
    assert_eq!(log.append_tracked(id, &batch, again, None).await?, Some(3));
    // The log moved on in some other way: refused.
    assert_eq!(
        log.append_tracked(id, &[delta(2)], again, None).await?,
        None
    );
    // Only the current attempt may retry.
    let stale = Fence::At {
        attempt: 0,
        head: 3,
    };
    assert_eq!(
        log.append_tracked(id, &[delta(2)], stale, None).await?,
        None
    );
    let read = log.read_after(id, 0).await?.expect("a log");
    let sequences: Vec<u64> = read.events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, vec![1, 2, 3]);
    backend.clean().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_that_asks_reports_the_jobs_cancel_flag() -> anyhow::Result<()> {
    let backend = Backend::new()?;
    let log = &backend.events;
    let id = JobId::now_v7();
    let started = event(Kind::Started(v1::JobStarted {
        attempt: 1,
        ..Default::default()
    }));
    let opened = log
        .append_events(id, &[started], Fence::Start(1), None, CancelCheck::Read)
        .await?;
    assert_eq!((opened.sequence, opened.cancel_requested), (Some(1), false));
    assert_eq!(
        log.request_cancel(id, "changed my mind").await?,
        CancelRequest::Flagged
    );
    let flushed = log
        .append_events(id, &[delta(0)], Fence::Attempt(1), None, CancelCheck::Read)
        .await?;
    assert_eq!(
        (flushed.sequence, flushed.cancel_requested),
        (Some(2), true)
    );
    let unasked = log
        .append_events(id, &[delta(1)], Fence::Attempt(1), None, CancelCheck::Skip)
        .await?;
    assert_eq!(
        (unasked.sequence, unasked.cancel_requested),
        (Some(3), false)
    );
    // Another job's flag is its own.
    let other = log
        .append_events(
            JobId::now_v7(),
            &[delta(0)],
            Fence::None,
            None,
            CancelCheck::Read,
        )
        .await?;
    assert!(!other.cancel_requested);
    backend.clean().await
}

/// The worker gathers a REALTIME job's deltas into timed flushes while nobody follows it, so
/// each append must say truly whether someone does: no before the first watcher, yes while
/// one is subscribed, no again once the last has gone (in process at once; in Redis once the
/// watch mark lapses, which this test does not wait for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_says_whether_anyone_watches_the_job() -> anyhow::Result<()> {
    let backend = Backend::new()?;
    let log = &backend.events;
    let id = JobId::now_v7();
    let started = event(Kind::Started(v1::JobStarted {
        attempt: 1,
        ..Default::default()
    }));
    let alone = log
        .append_events(id, &[started], Fence::Start(1), None, CancelCheck::Skip)
        .await?;
    assert_eq!((alone.sequence, alone.watched), (Some(1), false));
    let watcher = log.subscribe(id).await?;
    let followed = log
        .append_events(id, &[delta(0)], Fence::Attempt(1), None, CancelCheck::Skip)
        .await?;
    assert_eq!((followed.sequence, followed.watched), (Some(2), true));
    // Another job is not watched because this one is.
    let other = log
        .append_events(
            JobId::now_v7(),
            &[delta(0)],
            Fence::None,
            None,
            CancelCheck::Skip,
        )
        .await?;
    assert!(!other.watched);
    drop(watcher);
    if embedded() {
        let left = log
            .append_events(id, &[delta(1)], Fence::Attempt(1), None, CancelCheck::Skip)
            .await?;
        assert_eq!((left.sequence, left.watched), (Some(3), false));
    }
    backend.clean().await
}

/// Tests about Redis or Postgres themselves, or about processes sharing them: the embedded
/// pass filters them out by name (`-- --skip ::servers::`, as `scripts/test` does).
mod servers {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancel_whose_signal_was_lost_still_stops_the_running_job() -> anyhow::Result<()> {
        crate::support::needs_servers(
            "sets the cancel flag in Redis without its pub/sub signal; in process the signal \
         cannot be lost (the in-process flag check is tested through the event log above)",
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
        let backend = Backend::new()?;
        let log = &backend.events;
        let id = JobId::now_v7();
        // A bare subscriber on the job's channel: it sees what appends publish without marking the
        // job as watched, as a service's watcher does.
        let channel = llm_jobs::backend::Keys::new(&backend.prefix).events_channel(&id);
        let mut bare = redis::Client::open(crate::support::redis_url())?
            .get_async_pubsub()
            .await?;
        bare.subscribe(&channel).await?;
        let started = event(Kind::Started(v1::JobStarted {
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
            Live::Event(e) => assert_eq!(e.sequence, 3),
            Live::Resync => anyhow::bail!("a resync instead of the watched append"),
        }
        // What came before the mark is in the log, gap-free.
        let read = log.read_after(id, 0).await?.expect("a log");
        let sequences: Vec<u64> = read.events.iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, [1, 2, 3]);
        backend.clean().await
    }
}
