//! Probes Redis and Postgres and drives the standard `grpc.health.v1.Health` service.
//!
//! The empty service name (the whole server) and `llmjobs.v1.JobService` start NOT_SERVING and
//! are SERVING only while both dependencies answer a round trip.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{info, warn};

use crate::{queue::Queue, store::Store};

/// How often dependencies are probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Service names whose status follows the probes.
const SERVICES: [&str; 2] = ["", "llmjobs.v1.JobService"];

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
        let pg_ok = matches!(pg, Ok(Ok(())));
        let redis_ok = matches!(redis, Ok(Ok(())));
        let now = pg_ok && redis_ok;
        if serving != Some(now) {
            if now {
                info!("health: SERVING (queue and store answer)");
            } else {
                warn!(store = pg_ok, queue = redis_ok, "health: NOT_SERVING");
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
