//! Rate limits kept in Redis, so every gateway and worker of a fleet shares them: per-key
//! client limits (requests per minute, unfinished jobs at once) here, the shared upstream
//! budget per model in [`upstream`]. Without Redis (one `serve` process) the same rules run
//! on in-process counters ([`memory`]); see [`Backend`].
//!
//! Requests per minute use a sliding window (the previous minute's count weighted by how much
//! of it still overlaps the last 60 s, plus this minute's). Unfinished jobs are a set of job
//! ids per key: a submit adds its ids atomically when they fit under the limit; when they do
//! not, ids whose jobs have ended (per Postgres, the source of truth) are pruned and the
//! submit tries once more. So no worker has to report job ends to the limiter.
//!
//! Fail-open: when Redis fails or does not answer within [`CHECK_TIMEOUT`], the request goes
//! through unchecked (counted in [`Limiter::unchecked`], and a warning at most every
//! [`WARN_EVERY`]). Availability wins over limiting: a Redis blip must not turn reads that
//! need only Postgres (GetJob, ListJobs, results) into errors, and whatever needs Redis (a
//! submit's enqueue) fails on its own with UNAVAILABLE.
//!
//! Redis keys (prefix `P`): `P:rl:req:<key prefix>:<minute>` (counter), `P:rl:jobs:<key
//! prefix>` (zset of job ids, score = reservation time in ms).

pub mod memory;
pub mod streams;
pub mod upstream;

use std::{
    sync::{
        Arc, LazyLock,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::Script;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{auth::Principal, backend::Redis, job::JobId, store::Store};

static WINDOW: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("ratelimit/window.lua")));
static RESERVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("ratelimit/reserve.lua")));

/// A minute.
const MINUTE: Duration = Duration::from_secs(60);
/// Reservations younger than this are never pruned: their job row may not be committed yet.
const PRUNE_GRACE: Duration = Duration::from_secs(2);
/// Longest a request waits for its rate check (a hung Redis would otherwise hold every RPC
/// for the pool's 5 s timeouts); past it, the request goes through unchecked.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(500);
/// Least time between two warnings about unchecked requests.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// The server's default client limits; a key's own limits override them. 0 means unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defaults {
    /// Requests per minute per key.
    pub requests_per_minute: u32,
    /// Unfinished (queued or running) jobs per key.
    pub max_concurrent_jobs: u32,
    /// Open server streams per key on one gateway process ([`streams`]).
    pub max_open_streams: u32,
}

/// What a sliding-window take found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    /// The amount was taken.
    Yes,
    /// It does not fit now; it may after this long.
    RetryAfter(Duration),
}

/// Where the limits keep their counters.
#[derive(Clone)]
pub enum Backend {
    /// In Redis, shared by every process of a fleet.
    Redis(Redis),
    /// In this process (no Redis configured: one `serve` process).
    Memory(Arc<memory::Counters>),
}

/// Whether `amount` more fits under `limit` with `prev` in the previous window (weighted by
/// its overlap with the last window length) and `cur` in the current one, `elapsed` ms into a
/// window of `window` ms: the rule of `window.lua` and `budget.lua`.
pub(crate) fn fits(
    limit: u64,
    amount: u64,
    prev: u64,
    cur: u64,
    elapsed: u64,
    window: u64,
) -> bool {
    let weight = window.saturating_sub(elapsed) as f64 / window.max(1) as f64;
    prev as f64 * weight + (cur + amount) as f64 <= limit as f64
}

/// Takes `amount` from the sliding window at `key` that allows `limit` per `window`.
///
/// Errors: Redis's (never for [`Backend::Memory`]).
pub async fn take(
    backend: &Backend,
    key: &str,
    limit: u64,
    amount: u64,
    window: Duration,
) -> Result<Taken, redis::RedisError> {
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let now = u64::try_from(now_ms).unwrap_or(0);
    let (index, elapsed) = (now / window_ms, now % window_ms);
    let prev_key = format!("{key}:{}", index.saturating_sub(1));
    let cur_key = format!("{key}:{index}");
    let (taken, prev, cur) = match backend {
        Backend::Redis(redis) => {
            let mut conn = redis.conn().await.map_err(|e| {
                redis::RedisError::from((redis::ErrorKind::Io, "pool", e.to_string()))
            })?;
            let (taken, prev, cur): (u8, u64, u64) = WINDOW
                .key(prev_key)
                .key(cur_key)
                .arg(limit)
                .arg(elapsed)
                .arg(window_ms)
                .arg(amount)
                .invoke_async(&mut conn)
                .await?;
            (taken == 1, prev, cur)
        }
        Backend::Memory(counters) => counters.take(
            &memory::Window {
                prev: &prev_key,
                cur: &cur_key,
                elapsed,
                length: window_ms,
                now: now_ms,
            },
            limit,
            amount,
        ),
    };
    if taken {
        return Ok(Taken::Yes);
    }
    Ok(Taken::RetryAfter(retry_after(
        limit, amount, prev, cur, elapsed, window_ms,
    )))
}

/// How long until `amount` fits: the current window must end when it alone is too full;
/// otherwise the previous window's weight must fall far enough.
pub(crate) fn retry_after(
    limit: u64,
    amount: u64,
    prev: u64,
    cur: u64,
    elapsed: u64,
    window: u64,
) -> Duration {
    let to_end = window - elapsed;
    if cur + amount > limit || prev == 0 {
        return Duration::from_millis(to_end.max(1));
    }
    // prev * (window - t) / window + cur + amount <= limit  ⇔  t >= window * (1 - room / prev)
    let room = (limit - cur - amount) as f64;
    let t = window as f64 * (1.0 - room / prev as f64);
    let wait = (t.ceil() as u64)
        .saturating_sub(elapsed)
        .clamp(1, to_end.max(1));
    Duration::from_millis(wait)
}

/// RESOURCE_EXHAUSTED with a RetryInfo detail.
pub fn exhausted(message: String, retry: Duration) -> Status {
    let mut details = ErrorDetails::new();
    // Whole milliseconds, at least one, so clients never spin.
    details.set_retry_info(Some(retry.max(Duration::from_millis(1))));
    Status::with_error_details(Code::ResourceExhausted, message, details)
}

/// Client limits per key.
#[derive(Clone)]
pub struct Limiter {
    backend: Backend,
    store: Arc<dyn Store>,
    prefix: String,
    defaults: Defaults,
    fail_open: Arc<FailOpen>,
    streams: streams::OpenStreams,
    metrics: crate::metrics::Metrics,
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
            metrics: crate::metrics::Metrics::disabled(),
        }
    }

    /// The same limiter, counting its refusals in `metrics`.
    pub fn with_metrics(self, metrics: crate::metrics::Metrics) -> Limiter {
        Limiter { metrics, ..self }
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
                self.metrics.refused(crate::metrics::Limit::Requests);
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
            .inspect_err(|_| self.metrics.refused(crate::metrics::Limit::OpenStreams))
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
                self.metrics.refused(crate::metrics::Limit::UnfinishedJobs);
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
mod tests {
    use super::*;

    /// A limiter on `backend` allowing `n` requests a minute and `n` unfinished jobs, with a
    /// store that nothing listens for (port 1: every call fails at once).
    fn limiter(backend: Backend, n: u32) -> Limiter {
        let store = crate::store::postgres::PgStore::new("postgres://postgres@127.0.0.1:1/none", 1)
            .expect("pools connect lazily");
        Limiter::new(
            backend,
            Arc::new(store),
            "t",
            Defaults {
                requests_per_minute: n,
                max_concurrent_jobs: n,
                max_open_streams: n,
            },
        )
    }

    #[tokio::test]
    async fn without_redis_requests_pass_unchecked_and_are_counted() {
        // Nothing listens on port 1: every Redis and Postgres call fails at once.
        let redis = Redis::new(&crate::config::Redis {
            url: "redis://127.0.0.1:1".into(),
            prefix: "t".into(),
            pool_size: 1,
        })
        .expect("a valid URL");
        let limiter = limiter(Backend::Redis(redis), 1);
        let who = Principal::auth_off("127.0.0.1:4000".into());
        for _ in 0..3 {
            assert!(limiter.admit_request(&who).await.is_ok(), "fail-open");
        }
        let jobs = [JobId::now_v7(), JobId::now_v7()];
        assert!(limiter.reserve_jobs(&who, &jobs).await.is_ok());
        assert_eq!(limiter.unchecked(), 4);
    }

    #[tokio::test]
    async fn in_process_limits_refuse_what_does_not_fit() {
        let limiter = limiter(Backend::Memory(Arc::default()), 2);
        let who = Principal::auth_off("127.0.0.1:4000".into());
        assert!(limiter.admit_request(&who).await.is_ok());
        assert!(limiter.admit_request(&who).await.is_ok());
        let refused = limiter
            .admit_request(&who)
            .await
            .expect_err("over the limit");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(refused.get_details_retry_info().is_some());
        let jobs = [JobId::now_v7(), JobId::now_v7(), JobId::now_v7()];
        assert!(limiter.reserve_jobs(&who, &jobs[..2]).await.is_ok());
        // Too young to prune (their rows may not be committed): no store call, refused.
        let refused = limiter
            .reserve_jobs(&who, &jobs[2..])
            .await
            .expect_err("over the limit");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert_eq!(limiter.unchecked(), 0, "nothing let through unchecked");
    }

    #[test]
    fn the_window_weighs_the_previous_count_by_its_overlap() {
        // 30 s into the minute, half of the previous minute's 10 still count.
        assert!(fits(10, 1, 10, 4, 30_000, 60_000));
        assert!(!fits(10, 1, 10, 5, 30_000, 60_000));
        assert!(!fits(10, 10, 10, 0, 59_999, 60_000));
        assert!(fits(10, 10, 0, 0, 0, 60_000));
    }

    #[test]
    fn retry_waits_for_the_window_or_for_the_previous_one_to_fade() {
        // The current minute alone is full: wait for it to end.
        assert_eq!(
            retry_after(10, 1, 0, 10, 15_000, 60_000),
            Duration::from_millis(45_000)
        );
        // Half the previous minute's 10 still count at 30 s; 5 + 5 + 1 > 10 until t = 36 s.
        assert_eq!(
            retry_after(10, 1, 10, 5, 30_000, 60_000),
            Duration::from_millis(6_000)
        );
    }

    #[test]
    fn exhaustion_carries_retry_info() {
        let s = exhausted("slow down".into(), Duration::from_millis(1500));
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(
            s.get_details_retry_info().and_then(|r| r.retry_delay),
            Some(Duration::from_millis(1500))
        );
    }
}
