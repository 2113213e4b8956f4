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
//! | `P:cancel:<job id>` | string | cancel requested (expires after a day) |
//! | `P:{<job id>}:events` | list | the job's event log, entry i = sequence i + 1 |
//! | `P:{<job id>}:state` | hash | `attempt`, `done`, `output_tokens` |
//! | `P:{<job id>}:progress` | string | encoded `JobProgress` snapshot of the running attempt |
//! | channel `P:wake` | pub/sub | a queue got work |
//! | channel `P:cancel` | pub/sub | job id to cancel |
//! | channel `P:events:<job id>` | pub/sub | `<sequence>:<encoded JobEvent>` |

use deadpool_redis::{Config as PoolConfig, Pool, Runtime};

use crate::config;

/// Connections to one Redis, shared by the queue and the event log.
#[derive(Clone)]
pub struct Redis {
    /// Pooled multiplexed connections for commands and scripts.
    pub pool: Pool,
    /// Client for dedicated pub/sub connections.
    pub client: redis::Client,
    /// Key names.
    pub keys: Keys,
}

impl Redis {
    /// Builds the pool and client; connections open lazily, so this works while Redis is down.
    ///
    /// Errors: a message when the URL is invalid.
    pub fn new(cfg: &config::Redis) -> Result<Redis, String> {
        let mut pool_cfg = PoolConfig::from_url(cfg.url.clone());
        pool_cfg.pool = Some(deadpool_redis::PoolConfig {
            max_size: cfg.pool_size.max(1),
            timeouts: deadpool_redis::Timeouts {
                wait: Some(std::time::Duration::from_secs(5)),
                create: Some(std::time::Duration::from_secs(5)),
                recycle: Some(std::time::Duration::from_secs(5)),
            },
            ..Default::default()
        });
        let pool = pool_cfg
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| format!("invalid Redis configuration: {e}"))?;
        let client =
            redis::Client::open(cfg.url.as_str()).map_err(|e| format!("invalid REDIS_URL: {e}"))?;
        Ok(Redis {
            pool,
            client,
            keys: Keys::new(&cfg.prefix),
        })
    }
}

impl Redis {
    /// Redis's `maxmemory-policy`, when the server lets us read it (managed services may not).
    pub async fn eviction_policy(&self) -> Option<String> {
        let mut conn = self.pool.get().await.ok()?;
        let reply: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut conn)
            .await
            .ok()?;
        reply.into_iter().nth(1)
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
        format!("{}:cancel:{job_id}", self.prefix)
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
