//! One contract for the queue and the event log, run against Redis and against the in-process
//! twins in the same pass, so that the copy of the Lua scripts cannot drift from them.
//!
//! Each behaviour of [`Queue`] and [`EventLog`] is written once, in [`queue`] and [`events`],
//! as an async function over the trait objects. [`contract!`] turns every such check into two
//! tests, whatever `LLMJOBS_TEST_BACKEND` says:
//! - `contract::<file>::in_process::<check>`: `MemoryQueue` and `MemoryEventLog`, wired as
//!   `serve` wires them without Redis (the log reads and sets the queue's cancel flags);
//! - `contract::<file>::servers::redis::<check>`: `RedisQueue` and `RedisEventLog` on the
//!   test Redis (`LLMJOBS_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`), under a key
//!   prefix of its own whose keys are deleted when the check ends, passed or failed. When that
//!   Redis does not answer, the test fails saying so. Like every test that needs the servers,
//!   it sits in a `servers` module, which the embedded pass filters out by name
//!   (`-- --skip ::servers::`): there it counts as filtered out, never as passed.
//!
//! The store's interfaces follow the same pattern on the two SQL backends ([`stores`]): the
//! API keys' contract in [`keys`], the audit log's in [`audit`], the batches' in [`batches`],
//! the failed jobs' in [`reports`] and retention's in [`retention`], each check a test on a
//! SQLite file and one on a Postgres database (`servers::postgres::<check>`).
//!
//! Where the two differ on purpose, the check asserts the documented difference and says why.
//! Checks do not sleep and hope: they poll with a deadline ([`eventually`]); the one wait
//! for time itself is a heartbeat check's, which must see a lease outlive its first deadline.

mod audit;
mod batches;
mod events;
mod keys;
mod queue;
mod reports;
mod retention;
pub(crate) mod stores;

use std::{future::Future, panic::AssertUnwindSafe, sync::Arc, time::Duration};

use anyhow::Context;
use futures::FutureExt;
use llm_jobs::{
    api::event_codec::ProtoCodec,
    events::{EventLog, Live, Subscription, memory::MemoryEventLog, redis::RedisEventLog},
    queue::{Queue, memory::MemoryQueue, redis::RedisQueue},
};

use crate::support::{PATIENCE, redis_url};

/// How long finished logs and their progress snapshots stay live, unless a check asks for a
/// shorter window: long beside any check, so that nothing it wrote expires under it.
pub(crate) const WINDOW_SECS: u64 = 600;

/// Which implementation a check runs against, for the checks that assert a documented
/// difference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `MemoryQueue` and `MemoryEventLog`.
    InProcess,
    /// `RedisQueue` and `RedisEventLog`.
    Redis,
}

/// A queue and the event log that reads and sets its cancel flags, wired as the service wires
/// them.
pub(crate) struct Backend {
    queue: Arc<dyn Queue>,
    events: Arc<dyn EventLog>,
    kind: Kind,
    /// Redis key prefix of this backend (a fresh one each time; unused in process).
    pub(crate) prefix: String,
}

impl Backend {
    /// The in-process queue and event log; finished logs stay `window_secs`.
    pub(crate) fn in_process(window_secs: u64) -> Backend {
        let queue = Arc::new(MemoryQueue::new());
        let events = MemoryEventLog::new(Arc::new(ProtoCodec), window_secs, window_secs)
            .with_cancel_flags(queue.clone());
        Backend {
            queue,
            events: Arc::new(events),
            kind: Kind::InProcess,
            prefix: String::new(),
        }
    }

    /// The Redis queue and event log on the test Redis under a fresh prefix; finished logs
    /// stay `window_secs`. Errors, naming the URL, when that Redis does not answer.
    pub(crate) async fn redis(window_secs: u64) -> anyhow::Result<Backend> {
        let prefix = format!("it-contract-{}", uuid::Uuid::new_v4().simple());
        let url = redis_url();
        let redis = llm_jobs::redis::Redis::new(&llm_jobs::config::Redis {
            url: url.clone(),
            prefix: prefix.clone(),
            pool_size: 4,
        })
        .map_err(anyhow::Error::msg)?;
        let queue = RedisQueue::new(redis.clone());
        queue.ping().await.with_context(|| {
            format!(
                "the Redis half of the queue and event-log contract needs the test Redis at \
                 {url} (LLMJOBS_TEST_REDIS_URL); the embedded pass leaves it out with \
                 `-- --skip ::servers::`"
            )
        })?;
        Ok(Backend {
            queue: Arc::new(queue),
            events: Arc::new(RedisEventLog::new(
                redis,
                Arc::new(ProtoCodec),
                window_secs,
                window_secs,
            )),
            kind: Kind::Redis,
            prefix,
        })
    }

    /// The queue.
    pub(crate) fn queue(&self) -> &dyn Queue {
        &*self.queue
    }

    /// The event log.
    pub(crate) fn events(&self) -> &dyn EventLog {
        &*self.events
    }

    /// Which implementation this is.
    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// Deletes this backend's Redis keys (nothing to do in process).
    pub(crate) async fn clean(&self) -> anyhow::Result<()> {
        if self.kind == Kind::InProcess {
            return Ok(());
        }
        let mut r = redis::Client::open(redis_url())?
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

/// The window a check asked for (`contract!`'s `window N`), else [`WINDOW_SECS`].
pub(crate) fn window(asked: &[u64]) -> u64 {
    asked.first().copied().unwrap_or(WINDOW_SECS)
}

/// Runs `check` on `backend`, then deletes the backend's keys whether the check passed,
/// failed or panicked (an assertion), and reports the check's outcome.
pub(crate) async fn run(
    backend: &Backend,
    check: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let outcome = AssertUnwindSafe(check).catch_unwind().await;
    let cleaned = backend.clean().await;
    match outcome {
        Err(panic) => std::panic::resume_unwind(panic),
        Ok(result) => result.and(cleaned),
    }
}

/// Turns each listed check (an async fn of this file taking the named parts of a
/// [`Backend`]: `queue()`, `events()`, `kind()`) into a test on each implementation:
/// `in_process::<check>` and `servers::redis::<check>`. `window N` runs the check on backends
/// whose finished logs stay N seconds.
macro_rules! contract {
    ($($check:ident($($part:ident),+) $(window $secs:literal)?;)+) => {
        /// The checks on the in-process queue and event log.
        mod in_process {
            $(
                #[tokio::test]
                async fn $check() -> anyhow::Result<()> {
                    let backend =
                        crate::contract::Backend::in_process(crate::contract::window(&[$($secs)?]));
                    let check = super::$check($(backend.$part()),+);
                    crate::contract::run(&backend, check).await
                }
            )+
        }

        /// Tests about Redis itself: the embedded pass filters them out by name
        /// (`-- --skip ::servers::`).
        mod servers {
            /// The checks on the Redis queue and event log.
            mod redis {
                $(
                    #[tokio::test]
                    async fn $check() -> anyhow::Result<()> {
                        let backend =
                            crate::contract::Backend::redis(crate::contract::window(&[$($secs)?]))
                                .await?;
                        let check = super::super::$check($(backend.$part()),+);
                        crate::contract::run(&backend, check).await
                    }
                )+
            }
        }
    };
}
pub(crate) use contract;

/// Polls `step` every 10 ms until it yields a value, for at most [`PATIENCE`]; `what` names
/// what never happened when it does not.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut step: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = step().await? {
            return Ok(value);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The next live item of `live`, within [`PATIENCE`].
pub(crate) async fn next_live(live: &mut Subscription) -> anyhow::Result<Live> {
    tokio::time::timeout(PATIENCE, live.recv())
        .await
        .context("no live item")?
        .context("the live feed ended")
}
