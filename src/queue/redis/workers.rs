//! The worker registry in Redis: who is running, as of their last heartbeat.

use std::time::Duration;

use chrono::Utc;
use redis::AsyncCommands;

use crate::{
    queue::{Error, WorkerInfo},
    redis::Redis,
};

/// Records `info` in the registry (`{P}:workers`, last seen in `{P}:workers-seen`).
pub(super) async fn register(redis: &Redis, info: &WorkerInfo) -> Result<(), Error> {
    let k = &redis.keys;
    let json = serde_json::to_string(info).map_err(|e| Error::Corrupt(e.to_string()))?;
    let mut conn = redis.conn().await?;
    let () = redis::pipe()
        .hset(k.shared("workers"), &info.id, json)
        .ignore()
        .zadd(
            k.shared("workers-seen"),
            &info.id,
            info.heartbeat_at.timestamp_millis(),
        )
        .ignore()
        .query_async(&mut conn)
        .await?;
    Ok(())
}

/// Removes worker `id` from the registry.
pub(super) async fn deregister(redis: &Redis, id: &str) -> Result<(), Error> {
    let k = &redis.keys;
    let mut conn = redis.conn().await?;
    let () = redis::pipe()
        .hdel(k.shared("workers"), id)
        .ignore()
        .zrem(k.shared("workers-seen"), id)
        .ignore()
        .query_async(&mut conn)
        .await?;
    Ok(())
}

/// The workers seen within `window`, by id; older entries leave the registry.
pub(super) async fn live(redis: &Redis, window: Duration) -> Result<Vec<WorkerInfo>, Error> {
    let k = &redis.keys;
    let oldest =
        Utc::now().timestamp_millis() - i64::try_from(window.as_millis()).unwrap_or(i64::MAX / 2);
    let mut conn = redis.conn().await?;
    let stale: Vec<String> = conn
        .zrangebyscore(k.shared("workers-seen"), "-inf", format!("({oldest}"))
        .await?;
    if !stale.is_empty() {
        let () = redis::pipe()
            .hdel(k.shared("workers"), &stale)
            .ignore()
            .zrem(k.shared("workers-seen"), &stale)
            .ignore()
            .query_async(&mut conn)
            .await?;
    }
    let entries: Vec<String> = conn.hvals(k.shared("workers")).await?;
    let mut workers: Vec<WorkerInfo> = entries
        .iter()
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect();
    workers.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(workers)
}
