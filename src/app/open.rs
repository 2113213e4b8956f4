//! Start-up phase 2: connect the backends (Redis or in-process) and prepare the store:
//! migrations, the claim that keeps an in-process server alone on it, the connection pool.

use std::sync::Arc;

use tracing::{info, warn};

use super::{
    Error,
    backends::{Backends, backends},
    check::Plan,
};
use crate::{
    config::{self, StoreLocation},
    events::EventLog,
    queue::Queue,
    ratelimit,
    store::{self, Store},
};

/// The backends and the store every side of this process shares.
pub(super) struct Core {
    /// The job queue.
    pub queue: Arc<dyn Queue>,
    /// The live event log.
    pub events: Arc<dyn EventLog>,
    /// The rate limits' counters.
    pub limits: ratelimit::Backend,
    /// The store.
    pub store: Arc<dyn Store>,
    /// When this process started (the in-process queue re-enqueues what was left before it).
    pub started: chrono::DateTime<chrono::Utc>,
    /// The claim on the store (see [`claim`]); held while the server runs.
    pub _claim: Option<store::single::Claim>,
}

/// Connects the backends, migrates the store (unless `LLMJOBS_NO_MIGRATE`), claims it and
/// opens it, then logs what this process runs on.
///
/// Errors: [`Error::Config`] for backends that cannot be used here, [`Error::Startup`] for a
/// store that cannot be prepared or is in use, [`Error::Store`].
pub(super) async fn open(plan: &Plan) -> Result<Core, Error> {
    let common = &plan.common;
    let Backends {
        queue,
        events,
        limits,
    } = backends(common, plan.gateway.is_some() && plan.worker.is_some()).await?;
    let started = chrono::Utc::now();
    let store_name = store::describe(&common.database);
    migrate(&common.database, &plan.location, &store_name).await?;
    let claim = claim(plan, &store_name).await?;
    let store: Arc<dyn Store> = store::open(&common.database).await?;
    log_backends(plan, &store_name);
    Ok(Core {
        queue,
        events,
        limits,
        store,
        started,
        _claim: claim,
    })
}

/// Applies pending migrations unless `cfg.no_migrate`, logging those applied.
///
/// Errors: [`Error::Startup`] naming the store, with a hint for Postgres.
async fn migrate(
    cfg: &config::Database,
    location: &StoreLocation,
    store_name: &str,
) -> Result<(), Error> {
    if cfg.no_migrate {
        return Ok(());
    }
    let hint = match location {
        StoreLocation::Postgres(_) => {
            "; is Postgres running? (LLMJOBS_NO_MIGRATE=true starts without it, NOT_SERVING \
             until it answers)"
        }
        StoreLocation::Sqlite(_) => "",
    };
    let applied = super::migrate(cfg).await.map_err(|e| {
        Error::Startup(format!(
            "cannot prepare the store ({store_name}): {e}{hint}"
        ))
    })?;
    if !applied.is_empty() {
        info!(?applied, "applied migrations");
    }
    Ok(())
}

/// Claims the store: with the queue in this process no other server may use the store, and
/// a server on Redis may not share it with such a one (store::single). Without the claim an
/// in-process server does not start; a server on Redis does (its store may be down for now),
/// with a warning.
///
/// Errors: [`Error::Startup`] when the store is in use, or cannot be claimed exclusively.
async fn claim(plan: &Plan, store_name: &str) -> Result<Option<store::single::Claim>, Error> {
    let mode = if plan.common.redis.in_process() {
        store::single::Mode::Exclusive
    } else {
        store::single::Mode::Shared
    };
    match store::single::claim(&plan.location, mode).await {
        Ok(claim) => Ok(Some(claim)),
        Err(e @ store::Error::InUse(_)) => Err(Error::Startup(e.to_string())),
        Err(e) if mode == store::single::Mode::Exclusive => Err(Error::Startup(format!(
            "cannot make sure no other server uses the store ({store_name}): {e}"
        ))),
        Err(e) => {
            warn!(error = %e, "cannot make sure no in-process server uses this store");
            Ok(None)
        }
    }
}

/// Logs the backends, the store, the upstream and (with a gateway) the default model.
fn log_backends(plan: &Plan, store_name: &str) {
    let common = &plan.common;
    let summary = if common.redis.in_process() {
        format!(
            "backends: in-process queue, event log and rate limits (no REDIS_URL: one process \
             only; live logs end with it, unfinished jobs are re-enqueued from the store); \
             store: {store_name}"
        )
    } else {
        format!(
            "backends: Redis at {} (key prefix {:?}) for queue, event log and rate limits; \
             store: {store_name}",
            crate::redact::redact_url(&common.redis.url),
            common.redis.prefix
        )
    };
    // Without a key (and with OpenAI's URL) nothing is sent upstream: naming the URL would
    // suggest otherwise.
    let upstream = if common.upstream.configured() {
        crate::redact::redact_url(&common.upstream.openai_base_url)
    } else {
        "unused: no OPENAI_API_KEY, so only the simulated models (sim, sim-*) run".to_owned()
    };
    match &plan.gateway {
        Some(g) => info!(default_model = %g.default_model, %upstream, "{summary}"),
        None => info!(%upstream, "{summary}"),
    }
}
