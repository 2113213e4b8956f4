//! The queue, the event log and the rate limits' counters of a server process: all in Redis
//! (checked for an eviction policy that could drop them), or all in this process when no
//! Redis is configured.

use std::sync::Arc;

use super::{Common, Error};
use crate::{
    api::event_codec::ProtoCodec,
    events::{EventLog, memory::MemoryEventLog, redis::RedisEventLog},
    queue::{Queue, memory::MemoryQueue, redis::RedisQueue},
    ratelimit,
    redis::Redis,
};

/// The queue, the event log and the rate limits' counters, all in Redis or all in process.
pub(super) struct Backends {
    pub queue: Arc<dyn Queue>,
    pub events: Arc<dyn EventLog>,
    pub limits: ratelimit::Backend,
}

/// Connects Redis (checking its eviction policy), or builds the in-process backends when no
/// Redis is configured.
///
/// Errors: [`Error::Config`] for an invalid URL, or for in-process backends in a process that
/// is not both gateway and worker (`both_sides` false: a separate gateway and worker cannot
/// share them).
pub(super) async fn backends(cfg: &Common, both_sides: bool) -> Result<Backends, Error> {
    if cfg.redis.in_process() {
        if !both_sides {
            return Err(Error::Config(
                "no REDIS_URL: the queue and event log run in process, so gateway and worker \
                 must be one process (`llm-jobs serve`); set REDIS_URL to run `gateway` and \
                 `worker` separately"
                    .into(),
            ));
        }
        let queue = Arc::new(MemoryQueue::new());
        // The log reads and sets the cancel flags kept with the queue, as in Redis.
        let flags = queue.clone();
        return Ok(Backends {
            queue,
            events: Arc::new(
                MemoryEventLog::new(
                    Arc::new(ProtoCodec),
                    cfg.queues.event_log_ttl_secs(),
                    cfg.queues.finished_progress_ttl_secs(),
                )
                .with_cancel_flags(flags),
            ),
            limits: ratelimit::Backend::Memory(Arc::default()),
        });
    }
    let redis = Redis::new(&cfg.redis).map_err(Error::Config)?;
    match redis.eviction_policy().await.as_deref() {
        Some("noeviction") | None => {}
        Some(policy) => tracing::error!(
            policy,
            "Redis may evict keys (maxmemory-policy is not noeviction): queued jobs and event \
             logs can vanish; the reconciler re-enqueues jobs from Postgres, but set \
             maxmemory-policy noeviction"
        ),
    }
    Ok(Backends {
        queue: Arc::new(RedisQueue::new(redis.clone())),
        events: Arc::new(RedisEventLog::new(
            redis.clone(),
            Arc::new(ProtoCodec),
            cfg.queues.event_log_ttl_secs(),
            cfg.queues.finished_progress_ttl_secs(),
        )),
        limits: ratelimit::Backend::Redis(redis),
    })
}
