//! [`Queue`] on Redis: sorted sets per queue, Lua scripts for every multi-key step, and one
//! pub/sub connection per worker process for wake-ups and cancels. Key layout: [`crate::redis`].

mod signals;
mod workers;

use std::{sync::LazyLock, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::{AsyncCommands, Script};
use tokio::sync::mpsc;
use tracing::instrument;

use super::{
    Beat, Claim, Counts, Error, Held, Queue, Removal, Settle, Signal, Signals, WorkerInfo,
    WorkerRegistry,
};
use crate::{job::JobId, redis::Redis};

static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("claim.lua")));
static ENQUEUE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("enqueue.lua")));
static ENQUEUE_CLAIM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("enqueue_claim.lua")));
static SETTLE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("settle.lua")));
static REMOVE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("remove.lua")));
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("heartbeat.lua")));
static RESTORE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("restore.lua")));
static STATS: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("stats.lua")));
static DRAIN: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("drain.lua")));

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Error::Unavailable(e.to_string())
    }
}

impl From<deadpool_redis::PoolError> for Error {
    fn from(e: deadpool_redis::PoolError) -> Self {
        Error::Unavailable(e.to_string())
    }
}

/// The Redis queue.
#[derive(Clone)]
pub struct RedisQueue {
    redis: Redis,
    /// When this process's last claim swept due retries and expired leases.
    swept_at: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// Least time between two claims of one process that sweep due retries and expired leases
/// back into their queues (the other claims only pop): two commands saved on most claims
/// of a busy worker; an idle one sweeps on each of its once-a-second claims.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

impl RedisQueue {
    /// A queue over these connections.
    pub fn new(redis: Redis) -> RedisQueue {
        RedisQueue {
            redis,
            swept_at: Default::default(),
        }
    }

    /// Whether this claim sweeps (see [`SWEEP_EVERY`]); a `true` answer counts as the sweep.
    fn sweep_due(&self) -> bool {
        let mut at = self.swept_at.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let due = at.is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY);
        if due {
            *at = Some(now);
        }
        due
    }

    async fn conn(&self) -> Result<crate::redis::Conn, Error> {
        Ok(self.redis.conn().await?)
    }
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn parse_id(s: &str) -> Result<JobId, Error> {
    JobId::parse_str(s).map_err(|_| Error::Corrupt(format!("bad job id {s:?} in queue")))
}

#[async_trait]
impl Queue for RedisQueue {
    #[instrument(skip_all, fields(job_id = %job_id, queue))]
    async fn enqueue(&self, job_id: JobId, queue: &str, at: DateTime<Utc>) -> Result<(), Error> {
        let k = &self.redis.keys;
        let mut conn = self.conn().await?;
        let _: i64 = ENQUEUE
            .key(k.queue(queue))
            .key(k.shared("job-queue"))
            .arg(job_id.to_string())
            .arg(queue)
            .arg(millis(at))
            .arg(k.channel("wake"))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn enqueue_claimed(
        &self,
        job_id: JobId,
        queue: &str,
        at: DateTime<Utc>,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Claim>, Error> {
        let k = &self.redis.keys;
        let deadline = super::lease_deadline(lease);
        let mut conn = self.conn().await?;
        let deliveries: u64 = ENQUEUE_CLAIM
            .key(k.queue(queue))
            .key(k.shared("job-queue"))
            .key(k.shared("paused"))
            .key(k.shared("leases"))
            .key(k.shared("owner"))
            .key(k.shared("deliveries"))
            .arg(job_id.to_string())
            .arg(queue)
            .arg(millis(at))
            .arg(k.channel("wake"))
            .arg(deadline)
            .arg(owner)
            .invoke_async(&mut conn)
            .await?;
        Ok((deliveries > 0).then(|| Claim {
            job_id,
            queue: queue.to_owned(),
            deliveries,
        }))
    }

    async fn claim(
        &self,
        queues: &[String],
        owner: &str,
        lease: Duration,
        max: usize,
        ended: &[Settle],
    ) -> Result<Vec<Claim>, Error> {
        let k = &self.redis.keys;
        let mut inv = CLAIM.prepare_invoke();
        inv.key(k.shared("leases"))
            .key(k.shared("delayed"))
            .key(k.shared("job-queue"))
            .key(k.shared("owner"))
            .key(k.shared("deliveries"));
        for q in queues {
            inv.key(k.queue(q));
        }
        inv.arg(Utc::now().timestamp_millis())
            .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX))
            .arg(owner)
            .arg(k.queue_prefix())
            .arg(k.shared("paused"))
            .arg(max.clamp(1, super::MAX_CLAIM))
            .arg(if self.sweep_due() { "1" } else { "0" });
        for q in queues {
            inv.arg(q);
        }
        for s in ended.iter().take(super::MAX_SETTLE) {
            inv.arg(s.job_id.to_string()).arg(&s.owner).arg(
                s.retry_at
                    .map(|t| millis(t).to_string())
                    .unwrap_or_default(),
            );
        }
        let mut conn = self.conn().await?;
        let claimed: Vec<(String, String, u64)> = inv.invoke_async(&mut conn).await?;
        claimed
            .into_iter()
            .map(|(id, queue, deliveries)| {
                Ok(Claim {
                    job_id: parse_id(&id)?,
                    queue,
                    deliveries,
                })
            })
            .collect()
    }

    async fn heartbeat(&self, claims: &[(JobId, String)], lease: Duration) -> Result<Beat, Error> {
        if claims.is_empty() {
            return Ok(Beat::default());
        }
        let k = &self.redis.keys;
        let deadline = super::lease_deadline(lease);
        let mut inv = HEARTBEAT.prepare_invoke();
        inv.key(k.shared("leases"))
            .key(k.shared("owner"))
            .key(k.shared("job-queue"))
            .arg(deadline);
        for (id, owner) in claims {
            inv.arg(id.to_string()).arg(owner);
        }
        let mut conn = self.conn().await?;
        let (lost, vanished): (Vec<String>, Vec<String>) = inv.invoke_async(&mut conn).await?;
        Ok(Beat {
            lost: lost.iter().map(|s| parse_id(s)).collect::<Result<_, _>>()?,
            vanished: vanished
                .iter()
                .map(|s| parse_id(s))
                .collect::<Result<_, _>>()?,
        })
    }

    async fn restore(&self, claims: &[Held], lease: Duration) -> Result<Vec<JobId>, Error> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let k = &self.redis.keys;
        let mut inv = RESTORE.prepare_invoke();
        inv.key(k.shared("leases"))
            .key(k.shared("owner"))
            .key(k.shared("job-queue"))
            .key(k.shared("deliveries"))
            .arg(super::lease_deadline(lease));
        for c in claims {
            inv.arg(c.job_id.to_string()).arg(&c.owner).arg(&c.queue);
        }
        let mut conn = self.conn().await?;
        let restored: Vec<String> = inv.invoke_async(&mut conn).await?;
        restored.iter().map(|s| parse_id(s)).collect()
    }

    #[instrument(skip_all, fields(job_id = %job_id))]
    async fn settle(
        &self,
        job_id: JobId,
        owner: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<bool, Error> {
        let k = &self.redis.keys;
        let mut conn = self.conn().await?;
        let settled: i64 = SETTLE
            .key(k.shared("leases"))
            .key(k.shared("owner"))
            .key(k.shared("deliveries"))
            .key(k.shared("job-queue"))
            .key(k.shared("delayed"))
            .arg(job_id.to_string())
            .arg(owner)
            .arg(retry_at.map(|t| millis(t).to_string()).unwrap_or_default())
            .invoke_async(&mut conn)
            .await?;
        Ok(settled == 1)
    }

    #[instrument(skip_all, fields(job_id = %job_id))]
    async fn remove(&self, job_id: JobId) -> Result<Removal, Error> {
        let k = &self.redis.keys;
        let mut conn = self.conn().await?;
        let result: String = REMOVE
            .key(k.shared("job-queue"))
            .key(k.shared("delayed"))
            .key(k.shared("leases"))
            .key(k.shared("deliveries"))
            .arg(job_id.to_string())
            .arg(k.queue_prefix())
            .invoke_async(&mut conn)
            .await?;
        match result.as_str() {
            "removed" => Ok(Removal::Removed),
            "leased" => Ok(Removal::Leased),
            "absent" => Ok(Removal::Absent),
            other => Err(Error::Corrupt(format!("remove script answered {other:?}"))),
        }
    }

    async fn counts(&self, queues: &[String]) -> Result<Vec<Counts>, Error> {
        let k = &self.redis.keys;
        let mut inv = STATS.prepare_invoke();
        inv.key(k.shared("leases"))
            .key(k.shared("delayed"))
            .key(k.shared("job-queue"))
            .key(k.shared("paused"));
        for q in queues {
            inv.key(k.queue(q));
        }
        for q in queues {
            inv.arg(q);
        }
        let mut conn = self.conn().await?;
        let rows: Vec<(u64, i64, u64, u64, u8)> = inv.invoke_async(&mut conn).await?;
        Ok(rows
            .into_iter()
            .map(|(pending, oldest, delayed, running, paused)| Counts {
                pending,
                oldest_enqueued: (oldest >= 0)
                    .then(|| DateTime::from_timestamp_millis(oldest))
                    .flatten(),
                delayed,
                running,
                paused: paused == 1,
            })
            .collect())
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), Error> {
        let key = self.redis.keys.shared("paused");
        let mut conn = self.conn().await?;
        if paused {
            let _: i64 = conn.sadd(key, queue).await?;
        } else {
            let _: i64 = conn.srem(key, queue).await?;
        }
        Ok(())
    }

    async fn drain(&self, queue: &str) -> Result<Vec<JobId>, Error> {
        let k = &self.redis.keys;
        let mut conn = self.conn().await?;
        let ids: Vec<String> = DRAIN
            .key(k.queue(queue))
            .key(k.shared("job-queue"))
            .key(k.shared("deliveries"))
            .invoke_async(&mut conn)
            .await?;
        ids.iter().map(|s| parse_id(s)).collect()
    }

    async fn known(&self, jobs: &[JobId]) -> Result<Vec<bool>, Error> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.redis.keys.shared("job-queue");
        let mut pipe = redis::pipe();
        for id in jobs {
            pipe.hexists(&key, id.to_string());
        }
        let mut conn = self.conn().await?;
        Ok(pipe.query_async(&mut conn).await?)
    }

    async fn leased(&self, jobs: &[JobId]) -> Result<Vec<bool>, Error> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.redis.keys.shared("leases");
        let mut pipe = redis::pipe();
        for id in jobs {
            pipe.zscore(&key, id.to_string());
        }
        let mut conn = self.conn().await?;
        let scores: Vec<Option<f64>> = pipe.query_async(&mut conn).await?;
        Ok(scores.into_iter().map(|s| s.is_some()).collect())
    }

    async fn ping(&self) -> Result<(), Error> {
        let mut conn = self.conn().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}

#[async_trait]
impl WorkerRegistry for RedisQueue {
    async fn register_worker(&self, info: &WorkerInfo) -> Result<(), Error> {
        workers::register(&self.redis, info).await
    }

    async fn deregister_worker(&self, id: &str) -> Result<(), Error> {
        workers::deregister(&self.redis, id).await
    }

    async fn workers(&self, window: Duration) -> Result<Vec<WorkerInfo>, Error> {
        workers::live(&self.redis, window).await
    }
}

#[async_trait]
impl Signals for RedisQueue {
    async fn signals(&self) -> Result<mpsc::Receiver<Signal>, Error> {
        signals::follow(&self.redis).await
    }

    async fn cancel_requested(&self, job_id: JobId) -> Result<Option<String>, Error> {
        let mut conn = self.conn().await?;
        Ok(conn.get(self.redis.keys.cancel_flag(&job_id)).await?)
    }
}
