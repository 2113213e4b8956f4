//! Redis plumbing shared by the queue and the event log: the command pool, the client for
//! pub/sub connections, and the key layout.
//!
//! Key layout (prefix `P`, e.g. `llmjobs`): queue keys share the hash tag `{P}` so the Lua
//! scripts that touch several of them run on one Redis Cluster slot; per-job keys hash on the
//! job id (`P:{<job id>}:...`) so they spread.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `{P}:q:<queue>` | zset | waiting job ids, score = enqueue time (ms) |
//! | `{P}:leases` | zset | claimed job ids, score = lease deadline (ms) |
//! | `{P}:delayed` | zset | job ids waiting to retry, score = retry time (ms) |
//! | `{P}:job-queue` | hash | job id -> queue name |
//! | `{P}:owner` | hash | job id -> owner token of the current claim |
//! | `{P}:deliveries` | hash | job id -> times delivered |
//! | `{P}:paused` | set | paused queue names |
//! | `P:{<job id>}:events` | list | the job's event log, entry i = sequence i + 1 |
//! | `P:{<job id>}:state` | hash | `attempt`, `done`, `base`, `sealed` (the attempt that claimed the end), `w` (see `src/events/append.lua`) |
//! | `P:{<job id>}:progress` | string | encoded `JobProgress` snapshot of the running attempt |
//! | `P:{<job id>}:cancel` | string | cancel requested, with its reason (expires after a day); set by the event log's cancel script only before the terminal event and read by its append script, hence the job's hash tag |
//! | channel `P:wake` | pub/sub | a queue got work |
//! | channel `P:cancel` | pub/sub | job id to cancel |
//! | channel `P:events:<job id>` | pub/sub | `<first sequence>/<count>:` then the events of one append, each a length-delimited encoded `JobEvent` |

use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, RecycleResult};
use deadpool_redis::Runtime;
use redis::{
    Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, Value, aio::ConnectionLike,
    aio::MultiplexedConnection,
};

/// Where Redis is and how many pooled connections to keep (the edge builds it from its
/// configuration).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Redis URL (`redis://host:port/db`).
    pub url: String,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// Pooled connections for commands (at least one is kept).
    pub pool_size: usize,
}

/// Connections to one Redis, shared by the queue and the event log.
#[derive(Clone)]
pub struct Redis {
    /// Pooled multiplexed connections for commands and scripts; take one with
    /// [`Redis::conn`].
    pool: managed::Pool<Manager>,
    /// Client for dedicated pub/sub connections.
    pub client: redis::Client,
    /// Key names.
    pub keys: Keys,
}

impl Redis {
    /// Builds the pool and client; connections open lazily, so this works while Redis is down.
    /// Every connection has `TCP_NODELAY` set: commands are small and latency-bound, and with
    /// Nagle's algorithm a command written while an earlier reply is outstanding on the same
    /// multiplexed connection waits for that reply's ACK.
    ///
    /// Errors: a message when the URL is invalid.
    pub fn new(settings: impl Into<Settings>) -> Result<Redis, String> {
        let cfg = settings.into();
        let info = cfg
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("invalid REDIS_URL: {e}"))?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let timeout = Some(std::time::Duration::from_secs(5));
        let manager = Manager {
            inner: deadpool_redis::Manager::new(info.clone())
                .map_err(|e| format!("invalid REDIS_URL: {e}"))?,
        };
        let pool = managed::Pool::builder(manager)
            .max_size(cfg.pool_size.max(1))
            .wait_timeout(timeout)
            .create_timeout(timeout)
            .recycle_timeout(timeout)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| format!("invalid Redis configuration: {e}"))?;
        let client = redis::Client::open(info).map_err(|e| format!("invalid REDIS_URL: {e}"))?;
        Ok(Redis {
            pool,
            client,
            keys: Keys::new(&cfg.prefix),
        })
    }
}

impl Redis {
    /// A pooled connection. Errors: the pool's (no connection within 5 s, Redis refused).
    pub async fn conn(&self) -> Result<Conn, deadpool_redis::PoolError> {
        Ok(Conn {
            obj: Some(self.pool.get().await?),
            broken: false,
        })
    }

    /// Redis's `maxmemory-policy`, when the server lets us read it (managed services may not).
    pub async fn eviction_policy(&self) -> Option<String> {
        let mut conn = self.conn().await.ok()?;
        let reply: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut conn)
            .await
            .ok()?;
        reply.into_iter().nth(1)
    }
}

/// Connections idle for longer than this are checked with a `PING` before reuse.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// Creates multiplexed connections and checks idle ones before reuse.
///
/// deadpool-redis's own manager sends `UNWATCH` + `PING` on every checkout: one extra round
/// trip per command, which doubled the Redis round trips of every job. A connection in use
/// within [`IDLE_CHECK`] is handed out without it; a connection whose command failed with a
/// connection error is dropped by [`Conn`] instead of returning to the pool, so a Redis
/// restart costs one failed command per pooled connection, not a broken pool.
struct Manager {
    inner: deadpool_redis::Manager,
}

impl managed::Manager for Manager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        self.inner.create().await
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        metrics: &Metrics,
    ) -> RecycleResult<RedisError> {
        if metrics.last_used() < IDLE_CHECK {
            return Ok(());
        }
        self.inner.recycle(conn, metrics).await
    }
}

/// A connection taken from the pool; it goes back when dropped, unless a command on it
/// failed with a connection error.
pub struct Conn {
    obj: Option<Object<Manager>>,
    broken: bool,
}

impl Conn {
    fn inner(&mut self) -> &mut MultiplexedConnection {
        self.obj.as_mut().expect("present until dropped")
    }

    fn note(&mut self, e: &RedisError) {
        if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            self.broken = true;
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.broken
            && let Some(obj) = self.obj.take()
        {
            drop(Object::take(obj));
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let r = self.inner().req_packed_command(cmd).await;
            if let Err(e) = &r {
                self.note(e);
            }
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let r = self.inner().req_packed_commands(cmd, offset, count).await;
            if let Err(e) = &r {
                self.note(e);
            }
            r
        })
    }

    fn get_db(&self) -> i64 {
        self.obj.as_ref().map_or(0, |o| o.get_db())
    }
}

/// Key and channel names under one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Names under `prefix`.
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// Prefix of queue zsets; append the queue name.
    pub fn queue_prefix(&self) -> String {
        format!("{{{}}}:q:", self.prefix)
    }

    /// A queue's zset.
    pub fn queue(&self, name: &str) -> String {
        format!("{}{name}", self.queue_prefix())
    }

    /// A queue-wide key such as `leases` or `paused`.
    pub fn shared(&self, name: &str) -> String {
        format!("{{{}}}:{name}", self.prefix)
    }

    /// A per-job key such as `events` or `state`.
    pub fn job(&self, job_id: &uuid::Uuid, name: &str) -> String {
        format!("{}:{{{job_id}}}:{name}", self.prefix)
    }

    /// The cancel-requested flag of a job.
    pub fn cancel_flag(&self, job_id: &uuid::Uuid) -> String {
        self.job(job_id, "cancel")
    }

    /// A pub/sub channel such as `wake` or `cancel`.
    pub fn channel(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// The live channel of a job's events.
    pub fn events_channel(&self, job_id: &uuid::Uuid) -> String {
        format!("{}:events:{job_id}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_share_one_hash_tag_and_job_keys_hash_on_the_id() {
        let k = Keys::new("t1");
        let id = uuid::Uuid::nil();
        assert_eq!(k.queue("openai-general"), "{t1}:q:openai-general");
        assert_eq!(k.shared("leases"), "{t1}:leases");
        assert_eq!(
            k.job(&id, "events"),
            "t1:{00000000-0000-0000-0000-000000000000}:events"
        );
    }
}
