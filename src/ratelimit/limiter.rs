//! Per-key client limits: requests per minute and unfinished jobs at once (in Redis, or in
//! process), failing open when their counters do not answer (see the [module
//! documentation](super)).

use std::{
    sync::{
        Arc, LazyLock,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::Script;
use tonic::Status;

use super::{
    Backend, CHECK_TIMEOUT, Defaults, Limit, Refusals, Taken, WARN_EVERY, exhausted, streams, take,
};
use crate::{job::JobId, principal::Principal, store::Store};

static RESERVE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("reserve.lua")));

/// A minute.
const MINUTE: Duration = Duration::from_secs(60);
/// Reservations younger than this are never pruned: their job row may not be committed yet.
const PRUNE_GRACE: Duration = Duration::from_secs(2);

/// Client limits per key.
#[derive(Clone)]
pub struct Limiter {
    backend: Backend,
    store: Arc<dyn Store>,
    prefix: String,
    defaults: Defaults,
    fail_open: Arc<FailOpen>,
    streams: streams::OpenStreams,
    metrics: Arc<dyn Refusals>,
}

/// Requests let through unchecked, and when that was last logged.
#[derive(Default)]
struct FailOpen {
    unchecked: AtomicU64,
    warned_at_ms: AtomicI64,
}

impl Limiter {
    /// Limits kept in `backend` under its key prefix, pruned against `store`.
    pub fn new(
        backend: Backend,
        store: Arc<dyn Store>,
        prefix: &str,
        defaults: Defaults,
    ) -> Limiter {
        Limiter {
            backend,
            store,
            prefix: prefix.to_owned(),
            defaults,
            fail_open: Arc::default(),
            streams: streams::OpenStreams::default(),
            metrics: Arc::new(()),
        }
    }

    /// The same limiter, counting its refusals in `metrics`.
    pub fn with_metrics(self, metrics: impl Refusals + 'static) -> Limiter {
        Limiter {
            metrics: Arc::new(metrics),
            ..self
        }
    }

    /// Requests (and submits) let through without their check since start-up, because Redis
    /// (or, for unfinished jobs, Postgres) failed or was too slow.
    pub fn unchecked(&self) -> u64 {
        self.fail_open.unchecked.load(Ordering::Relaxed)
    }

    /// Counts a request let through unchecked (`what` was not checked because of `error`),
    /// warning at most every [`WARN_EVERY`].
    fn let_through(&self, what: &str, error: &str) {
        let total = self.fail_open.unchecked.fetch_add(1, Ordering::Relaxed) + 1;
        let now = chrono::Utc::now().timestamp_millis();
        let every = i64::try_from(WARN_EVERY.as_millis()).unwrap_or(i64::MAX);
        let last = self.fail_open.warned_at_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= every
            && self
                .fail_open
                .warned_at_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                error,
                unchecked_total = total,
                "{what} not checked, request let through (fail-open)"
            );
        }
    }

    /// Counts one request of `who`; when Redis fails or does not answer within
    /// [`CHECK_TIMEOUT`], lets it through unchecked (fail-open, see the module documentation).
    ///
    /// Errors: RESOURCE_EXHAUSTED with RetryInfo when the key's requests per minute are used up.
    pub async fn admit_request(&self, who: &Principal) -> Result<(), Status> {
        let limit = who
            .limits
            .requests_per_minute
            .unwrap_or(self.defaults.requests_per_minute);
        if limit == 0 {
            return Ok(());
        }
        let key = format!("{}:rl:req:{}", self.prefix, who.actor);
        let taken = tokio::time::timeout(
            CHECK_TIMEOUT,
            take(&self.backend, &key, u64::from(limit), 1, MINUTE),
        )
        .await;
        match taken {
            Ok(Ok(Taken::Yes)) => Ok(()),
            Ok(Ok(Taken::RetryAfter(wait))) => {
                self.metrics.refused(Limit::Requests);
                Err(exhausted(
                    format!("rate limit: at most {limit} requests per minute for this API key"),
                    wait,
                ))
            }
            Ok(Err(e)) => {
                self.let_through("request rate", &e.to_string());
                Ok(())
            }
            Err(_) => {
                self.let_through("request rate", "Redis did not answer in time");
                Ok(())
            }
        }
    }

    /// Takes one of `who`'s open-stream slots on this process for a server stream; the slot
    /// must live as long as the stream.
    ///
    /// Errors: RESOURCE_EXHAUSTED when the key has [`Defaults::max_open_streams`] open here.
    pub fn open_stream(&self, who: &Principal) -> Result<streams::StreamSlot, Status> {
        self.streams
            .open(&who.actor, self.defaults.max_open_streams)
            .inspect_err(|_| self.metrics.refused(Limit::OpenStreams))
    }

    /// Reserves room for `ids`, new jobs of `who`, under its limit of unfinished jobs.
    ///
    /// Errors: RESOURCE_EXHAUSTED with RetryInfo when they do not fit even after jobs that
    /// ended were pruned.
    pub async fn reserve_jobs(&self, who: &Principal, ids: &[JobId]) -> Result<(), Status> {
        let limit = who
            .limits
            .max_concurrent_jobs
            .unwrap_or(self.defaults.max_concurrent_jobs);
        if limit == 0 || ids.is_empty() {
            return Ok(());
        }
        let key = format!("{}:rl:jobs:{}", self.prefix, who.actor);
        let result = async {
            for round in 0..2 {
                if self.try_reserve(&key, limit, ids).await? {
                    return Ok(true);
                }
                if round == 0 {
                    self.prune(&key).await?;
                }
            }
            Ok::<_, String>(false)
        }
        .await;
        match result {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.metrics.refused(Limit::UnfinishedJobs);
                Err(exhausted(
                    format!(
                        "rate limit: at most {limit} unfinished jobs for this API key; wait for \
                         some to finish"
                    ),
                    Duration::from_secs(1),
                ))
            }
            Err(e) => {
                self.let_through("unfinished jobs", &e);
                Ok(())
            }
        }
    }

    async fn try_reserve(&self, key: &str, limit: u32, ids: &[JobId]) -> Result<bool, String> {
        let now = chrono::Utc::now().timestamp_millis();
        let redis = match &self.backend {
            Backend::Redis(redis) => redis,
            Backend::Memory(counters) => return Ok(counters.reserve(key, limit, now, ids)),
        };
        let mut conn = redis.conn().await.map_err(|e| e.to_string())?;
        let mut call = RESERVE.key(key);
        call.arg(limit).arg(now);
        for id in ids {
            call.arg(id.to_string());
        }
        let held: i64 = call
            .invoke_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(held >= 0)
    }

    /// Drops the ids of jobs that ended (or never were stored) from the set at `key`.
    async fn prune(&self, key: &str) -> Result<(), String> {
        let grace = i64::try_from(PRUNE_GRACE.as_millis()).unwrap_or(0);
        let older = chrono::Utc::now().timestamp_millis() - grace;
        let ids: Vec<JobId> = match &self.backend {
            Backend::Redis(redis) => {
                let mut conn = redis.conn().await.map_err(|e| e.to_string())?;
                let held: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                    .arg(key)
                    .arg("-inf")
                    .arg(older)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                held.iter()
                    .filter_map(|s| JobId::parse_str(s).ok())
                    .collect()
            }
            Backend::Memory(counters) => counters.held_before(key, older),
        };
        if ids.is_empty() {
            return Ok(());
        }
        let live = self
            .store
            .unfinished_among(&ids)
            .await
            .map_err(|e| e.to_string())?;
        let gone: Vec<JobId> = ids.into_iter().filter(|id| !live.contains(id)).collect();
        if gone.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Redis(redis) => {
                let mut conn = redis.conn().await.map_err(|e| e.to_string())?;
                let gone: Vec<String> = gone.iter().map(ToString::to_string).collect();
                let _: i64 = redis::cmd("ZREM")
                    .arg(key)
                    .arg(&gone)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Backend::Memory(counters) => counters.release(key, &gone),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
