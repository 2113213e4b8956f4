//! Probes Redis and Postgres and drives the standard `grpc.health.v1.Health` service and the
//! [`Readiness`] that `GET /readyz` answers with.
//!
//! The empty service name (the whole server) and each llm-jobs service (`JobService`,
//! `BatchService`, `QueueAdminService`) start NOT_SERVING and are SERVING only while both
//! dependencies answer a round trip; readiness follows the same probes.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{info, warn};

use crate::{queue::Queue, store::Store};

/// How often dependencies are probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Service names whose status follows the probes.
const SERVICES: [&str; 4] = [
    "",
    "llmjobs.v1.JobService",
    "llmjobs.v1.BatchService",
    "llmjobs.v1.QueueAdminService",
];

/// Sets every tracked service NOT_SERVING (call before serving).
pub async fn start_not_serving(reporter: &HealthReporter) {
    for s in SERVICES {
        reporter
            .set_service_status(s, ServingStatus::NotServing)
            .await;
    }
}

/// What the latest probe found: ready, or why not (also before the first probe and once
/// the process is shutting down). Cheap to clone and to read.
#[derive(Clone, Debug)]
pub struct Readiness(Arc<RwLock<Result<(), String>>>);

impl Default for Readiness {
    fn default() -> Self {
        Readiness(Arc::new(RwLock::new(
            Err("starting: not probed yet".into()),
        )))
    }
}

impl Readiness {
    /// Ready, or why not.
    pub fn get(&self) -> Result<(), String> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, now: Result<(), String>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = now;
    }
}

/// Probes until `shutdown`, flipping `reporter` (when this process serves gRPC) on every
/// change and keeping `readiness` current; NOT_SERVING and not ready at the end.
pub async fn run(
    reporter: Option<HealthReporter>,
    readiness: Readiness,
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
    shutdown: CancellationToken,
) {
    let mut serving = None;
    loop {
        let (pg, redis) = tokio::join!(
            tokio::time::timeout(PROBE_INTERVAL, store.ping()),
            tokio::time::timeout(PROBE_INTERVAL, queue.ping()),
        );
        let why = |probe: Result<Result<(), String>, _>| match probe {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!("no answer within {} s", PROBE_INTERVAL.as_secs())),
        };
        let store_down = why(pg.map(|r| r.map_err(|e| e.to_string())));
        let queue_down = why(redis.map(|r| r.map_err(|e| e.to_string())));
        let now = store_down.is_none() && queue_down.is_none();
        readiness.set(if now {
            Ok(())
        } else {
            Err(format!(
                "store: {}; queue: {}",
                store_down.as_deref().unwrap_or("ok"),
                queue_down.as_deref().unwrap_or("ok")
            ))
        });
        if serving != Some(now) {
            if now {
                info!("health: SERVING (queue and store answer)");
            } else {
                warn!(
                    store = store_down.as_deref().unwrap_or("ok"),
                    queue = queue_down.as_deref().unwrap_or("ok"),
                    "health: NOT_SERVING"
                );
            }
            let status = if now {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            if let Some(reporter) = &reporter {
                for s in SERVICES {
                    reporter.set_service_status(s, status).await;
                }
            }
            serving = Some(now);
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    readiness.set(Err("shutting down".into()));
    if let Some(reporter) = &reporter {
        start_not_serving(reporter).await;
    }
}
