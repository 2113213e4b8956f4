//! Watch marks: which jobs this process follows live, renewed while it does, so that appends
//! publish to them (see `watch.lua`).

use tracing::warn;

use super::HubInner;
use crate::{
    events::{
        Error,
        redis::{WATCH, WATCH_CHUNK, WATCH_LEASE, WATCH_REFRESH, now_ms},
    },
    job::JobId,
    redis::Redis,
};

/// The jobs this process watches.
pub(super) fn watched(hub: &HubInner) -> Vec<JobId> {
    hub.jobs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .keys()
        .copied()
        .collect()
}

/// Marks `ids` as watched for [`WATCH_LEASE`] from now (see `watch.lua`): one script call,
/// or pipelined calls of [`WATCH_CHUNK`] per round trip.
pub(super) async fn mark(redis: &Redis, ids: &[JobId]) -> Result<(), Error> {
    let until = watch_until();
    let mut conn = redis.conn().await?;
    if let [id] = ids {
        let () = WATCH
            .key(redis.keys.job(id, "state"))
            .arg(until)
            .arg(WATCH_LEASE.as_secs())
            .invoke_async(&mut conn)
            .await?;
        return Ok(());
    }
    for chunk in ids.chunks(WATCH_CHUNK) {
        let mut pipe = redis::pipe();
        pipe.load_script(&WATCH).ignore();
        for id in chunk {
            let mut call = WATCH.key(redis.keys.job(id, "state"));
            call.arg(until).arg(WATCH_LEASE.as_secs());
            pipe.invoke_script(&call).ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
    }
    Ok(())
}

/// When a watch mark made now lapses (ms since the epoch).
pub(crate) fn watch_until() -> u64 {
    now_ms().saturating_add(u64::try_from(WATCH_LEASE.as_millis()).unwrap_or(0))
}

/// Renews the marks of every job this process watches every [`WATCH_REFRESH`], until the hub
/// is gone.
pub(super) async fn renew_marks(hub: std::sync::Weak<HubInner>) {
    loop {
        tokio::time::sleep(WATCH_REFRESH).await;
        let Some(hub) = hub.upgrade() else { return };
        let ids = watched(&hub);
        if let Err(e) = mark(&hub.redis, &ids).await {
            warn!(error = %e, jobs = ids.len(), "event hub: cannot renew watch marks");
        }
    }
}
