//! Probes Redis and Postgres and drives the standard `grpc.health.v1.Health` service.
//!
//! The empty service name (the whole server) and each llm-jobs service (`JobService`,
//! `BatchService`, `QueueAdminService`) start NOT_SERVING and are SERVING only while both
//! dependencies answer a round trip.

use std::{sync::Arc, time::Duration};

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

/// Probes until `shutdown`, flipping `reporter` on every change; NOT_SERVING at the end.
pub async fn run(
    reporter: HealthReporter,
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
            for s in SERVICES {
                reporter.set_service_status(s, status).await;
            }
            serving = Some(now);
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    for s in SERVICES {
        reporter
            .set_service_status(s, ServingStatus::NotServing)
            .await;
    }
}
