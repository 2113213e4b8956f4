//! Start-up phase 4, worker side: build the worker from its providers, pricing and upstream
//! budget, spawn it, and start the reconciler (re-enqueueing at once what an in-process
//! queue lost with the last run).

use std::{sync::Arc, time::Duration};

use tracing::{info, warn};

use super::{Error, Shared, Tasks, WorkerConfig};
use crate::{
    provider::{
        Providers,
        openai::{self, OpenAi},
        sim::Sim,
    },
    queue::LocalSlots,
    reconciler::Reconciler,
    worker::{self, Worker},
};

/// Builds the worker of `cfg`, spawns it into `tasks` (it drains within its grace period
/// once `shared.shutdown` is cancelled), and starts the reconciler. Returns the worker's
/// local slots, which a gateway in this process uses.
///
/// Errors: [`Error::Config`] for an unusable upstream or pricing file.
pub(super) async fn spawn(
    cfg: &WorkerConfig,
    shared: &Shared<'_>,
    tasks: &mut Tasks,
) -> Result<Arc<dyn LocalSlots>, Error> {
    let worker = build(cfg, shared)?;
    let local_slots = worker.local_slots();
    let stop = shared.shutdown.clone();
    let grace = Duration::from_secs(cfg.worker.shutdown_grace_secs);
    tasks.spawn(async move {
        worker.run(stop, grace).await;
        Ok(())
    });
    reconcile(cfg, shared).await;
    Ok(local_slots)
}

/// The worker of `cfg` on the shared backends and store.
///
/// Errors: [`Error::Config`] for an unusable upstream or pricing file.
fn build(cfg: &WorkerConfig, shared: &Shared<'_>) -> Result<Arc<Worker>, Error> {
    let (common, core) = (shared.common, shared.core);
    let provider = &cfg.provider;
    let providers = Providers::new(
        Arc::new(
            OpenAi::new(&openai::Settings {
                base_url: common.upstream.openai_base_url.clone(),
                api_key: common.upstream.openai_api_key.clone(),
                connect_timeout: Duration::from_secs(provider.connect_timeout_secs),
            })
            .map_err(Error::Config)?,
        ),
        Arc::new(Sim::new(
            Duration::from_millis(provider.sim_first_token_ms),
            provider.sim_tokens_per_second,
        )),
    );
    let pricing =
        crate::pricing::Pricing::load(provider.pricing_file.as_deref()).map_err(Error::Config)?;
    let budget = crate::ratelimit::upstream::Budget::new(
        core.limits.clone(),
        &common.redis.prefix,
        crate::ratelimit::upstream::Limits {
            requests_per_minute: provider.upstream_rpm,
            tokens_per_minute: provider.upstream_tpm,
        },
        provider.upstream_model_limits.iter().cloned().collect(),
        Duration::from_millis(provider.upstream_window_ms),
    );
    Ok(Worker::new(
        worker::Deps {
            queue: core.queue.clone(),
            events: core.events.clone(),
            store: core.store.clone(),
            providers,
            pricing: Arc::new(pricing),
            budget,
            metrics: shared.metrics.clone(),
        },
        settings(&cfg.worker),
        common.lease.lease(),
        common.queues.job_types.clone(),
    ))
}

/// The worker's settings from its configuration.
fn settings(w: &crate::config::Worker) -> worker::Settings {
    worker::Settings {
        concurrency: w.concurrency,
        job_timeout_secs: w.job_timeout_secs,
        first_token_timeout_secs: w.first_token_timeout_secs,
        balance: w.balance,
        queue_cap: w.queue_cap,
        retry_base_ms: w.retry_base_ms,
        retry_cap_ms: w.retry_cap_ms,
        buffer_flush_ms: w.buffer_flush_ms,
        buffer_max_bytes: w.buffer_max_bytes,
        progress_interval_ms: w.progress_interval_ms,
    }
}

/// Starts the reconciler's periodic passes; with an in-process queue, first re-enqueues what
/// the store has unfinished.
async fn reconcile(cfg: &WorkerConfig, shared: &Shared<'_>) {
    let (common, core) = (shared.common, shared.core);
    let reconciler = Reconciler::new(
        core.store.clone(),
        core.queue.clone(),
        core.events.clone(),
        common.lease.lease(),
    );
    if common.redis.in_process() {
        // Nothing of the in-process queue survived the last run: what the store has
        // unfinished runs again now, not at the first periodic pass.
        match reconciler.recover(core.started).await {
            Ok(0) => {}
            Ok(n) => info!(
                jobs = n,
                "re-enqueued the jobs left unfinished by the last run"
            ),
            // The periodic passes re-enqueue them once the store answers.
            Err(e) => warn!(error = %e, "cannot read the jobs left unfinished yet"),
        }
    }
    let every = Duration::from_secs(cfg.worker.reconcile_secs.max(1));
    tokio::spawn(reconciler.run(every, shared.shutdown.clone()));
}
