//! Start-up, the admin HTTP side: the meters and queue gauges (phase 3), and the listener
//! that serves them with liveness and readiness (`/metrics`, `/healthz`, `/readyz`; phase 4).

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Common, Error, Shared, Tasks, open::Core};
use crate::{config, health, metrics::Metrics, telemetry::Meters};

/// The process's metrics: the meter provider (exported over OTLP when configured), the
/// service's instruments and the queue gauges.
pub(super) struct Telemetry {
    /// The meter provider; dropping it sends the last OTLP export (a blocking wait).
    pub meters: Meters,
    /// The service's instruments.
    pub metrics: Metrics,
    /// The queue gauges, refreshed before each scrape (and each export).
    pub gauges: Arc<crate::metrics::queues::Gauges>,
}

/// Builds the meters and instruments; with OTLP export on, refreshes the queue gauges before
/// each export until `shutdown`.
///
/// Errors: [`Error::Startup`] when the exporter cannot be built.
pub(super) fn telemetry(
    common: &Common,
    core: &Core,
    shutdown: &CancellationToken,
) -> Result<Telemetry, Error> {
    let meters = crate::telemetry::meters().map_err(Error::Startup)?;
    let meter = meters.meter();
    let metrics = Metrics::new(&meter, &common.queues.job_types);
    let gauges = crate::metrics::queues::Gauges::register(
        &meter,
        core.queue.clone(),
        &common.queues.job_types,
    );
    if let Some(every) = meters.export_every {
        tokio::spawn(gauges.clone().run(every, shutdown.clone()));
    }
    Ok(Telemetry {
        meters,
        metrics,
        gauges,
    })
}

/// The admin listener: `bound` when one was bound already, else the one `at` asks for
/// (`None`: the default address, when it is free).
///
/// Errors: [`Error::Server`] when an address that was asked for cannot be bound.
pub(super) async fn bind(
    at: Option<config::MetricsListen>,
    bound: Option<TcpListener>,
) -> Result<Option<TcpListener>, Error> {
    if bound.is_some() {
        return Ok(bound);
    }
    match at {
        Some(config::MetricsListen::Off) => Ok(None),
        Some(config::MetricsListen::At(addr)) => {
            TcpListener::bind(addr).await.map(Some).map_err(|e| {
                Error::Server(format!(
                    "cannot listen on {addr} (LLMJOBS_METRICS_LISTEN): {e}"
                ))
            })
        }
        None => match TcpListener::bind(config::DEFAULT_METRICS_LISTEN).await {
            Ok(l) => Ok(Some(l)),
            Err(e) => {
                warn!(
                    addr = %config::DEFAULT_METRICS_LISTEN,
                    error = %e,
                    "no metrics, liveness or readiness listener: the default address is taken \
                     (another process on this host?); give each process its own with \
                     LLMJOBS_METRICS_LISTEN, or `off`"
                );
                Ok(None)
            }
        },
    }
}

/// Spawns the admin HTTP server on `listener` into `tasks`. Without a gateway (whose probes
/// drive readiness) `probe` is set, and a worker alone probes for it here.
pub(super) fn spawn(
    listener: TcpListener,
    shared: &Shared<'_>,
    telemetry: &Telemetry,
    probe: bool,
    tasks: &mut Tasks,
) {
    if probe {
        tokio::spawn(health::run(
            None,
            shared.readiness.clone(),
            shared.core.store.clone(),
            shared.core.queue.clone(),
            shared.shutdown.clone(),
        ));
    }
    let admin = crate::http::Admin {
        prometheus: telemetry.meters.prometheus.clone(),
        queues: telemetry.gauges.clone(),
        readiness: shared.readiness.clone(),
    };
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "metrics, liveness and readiness (HTTP) listening");
    }
    let stop = shared.shutdown.clone();
    tasks.spawn(async move {
        crate::http::serve(listener, admin, async move { stop.cancelled().await })
            .await
            .map_err(|e| Error::Server(format!("admin listener: {e}")))
    });
}
