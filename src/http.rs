//! The admin HTTP listener that every process (`serve`, `gateway`, `worker`) opens on
//! `LLMJOBS_METRICS_LISTEN`, apart from the gRPC port so that it can stay on a private
//! address:
//! - `GET /metrics`: every metric in the Prometheus text format (see [`crate::metrics`]);
//! - `GET /healthz`: liveness, `200 ok` while the process serves at all;
//! - `GET /readyz`: readiness, `200 ready` while Redis and the store answer the health
//!   probes ([`crate::health`]), else `503` and why.
//!
//! [`serve`] takes a bound listener and a shutdown future, as [`crate::server::serve`] does.

use std::{future::Future, sync::Arc};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use opentelemetry_prometheus_text_exporter::PrometheusExporter;
use tokio::net::TcpListener;

use crate::{health::Readiness, metrics::queues::Gauges};

/// Content type of the Prometheus text exposition format 0.0.4.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the admin listener answers from.
#[derive(Clone)]
pub struct Admin {
    /// The service's metrics, read at each scrape.
    pub prometheus: PrometheusExporter,
    /// The queue gauges, refreshed before each scrape.
    pub queues: Arc<Gauges>,
    /// The latest health probe.
    pub readiness: Readiness,
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown` completes.
///
/// Errors: the listener's, when accepting fails for good.
pub async fn serve(
    listener: TcpListener,
    admin: Admin,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let routes = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(admin);
    axum::serve(listener, routes)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(admin): State<Admin>) -> Response {
    admin.queues.refresh().await;
    let mut text = Vec::with_capacity(32 * 1024);
    match admin.prometheus.export(&mut text) {
        Ok(()) => ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot collect the metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot collect the metrics\n",
            )
                .into_response()
        }
    }
}

async fn readyz(State(admin): State<Admin>) -> Response {
    match admin.readiness.get() {
        Ok(()) => "ready\n".into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", crate::redact::redact(&why)),
        )
            .into_response(),
    }
}
