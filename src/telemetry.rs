//! Tracing to stderr (every line passes through [`crate::redact`]), plus OpenTelemetry trace export over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the exporter reads the standard `OTEL_*` variables);
//! and the meters of a running service ([`meters`]): always read as Prometheus text (served
//! by [`crate::http`]), and exported over OTLP as well when that endpoint is set.
//!
//! Environment: `RUST_LOG` (filter, default `info`; [`CAPPED`] targets stay at `info`
//! whatever it says), `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME` (default `llm-jobs`),
//! `OTEL_METRIC_EXPORT_INTERVAL` (ms between metric exports, default 60000).

use std::time::Duration;

use opentelemetry::{metrics::MeterProvider as _, trace::TracerProvider as _};
use opentelemetry_prometheus_text_exporter::PrometheusExporter;
use opentelemetry_sdk::{Resource, metrics::SdkMeterProvider, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

/// Flushes and stops the exporter when dropped.
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("telemetry: exporter shutdown failed: {e}");
        }
    }
}

/// Log targets capped at `info` whatever `RUST_LOG` says, because below that they print data
/// that redaction cannot recognise: `tokio_postgres::query` logs every statement's parameters
/// at DEBUG as byte arrays, so `RUST_LOG=debug` would write every prompt (and any key in it)
/// to the log as numbers.
pub const CAPPED: [&str; 1] = ["tokio_postgres::query=info"];

/// The `RUST_LOG` filter (default `info`) with [`CAPPED`] applied.
fn filter() -> EnvFilter {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    CAPPED.iter().fold(filter, |f, d| {
        f.add_directive(d.parse().expect("the capped directives are valid"))
    })
}

/// Installs the global subscriber. Errors: a message when the OTLP exporter cannot be built.
pub fn init() -> Result<Guard, String> {
    let filter = filter();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(crate::redact::MakeWriter(std::io::stderr))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if !otlp() {
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(fmt)
            .try_init();
        return Ok(Guard { provider: None });
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| format!("OTLP exporter: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource())
        .build();
    let tracer = provider.tracer("llm-jobs");
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init();
    Ok(Guard {
        provider: Some(provider),
    })
}

/// Whether OTLP export is configured (`OTEL_EXPORTER_OTLP_ENDPOINT` set and not empty).
fn otlp() -> bool {
    std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|v| !v.is_empty())
}

/// The service's resource: its name (`OTEL_SERVICE_NAME`, default `llm-jobs`).
fn resource() -> Resource {
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "llm-jobs".into());
    Resource::builder().with_service_name(service).build()
}

/// The meters of one running service; flushes and stops the OTLP export when dropped.
pub struct Meters {
    provider: SdkMeterProvider,
    /// What `GET /metrics` serves.
    pub prometheus: PrometheusExporter,
    /// How often metrics are exported over OTLP; `None` when export is off.
    pub export_every: Option<Duration>,
}

impl Meters {
    /// The service's meter.
    pub fn meter(&self) -> opentelemetry::metrics::Meter {
        self.provider.meter("llm-jobs")
    }
}

impl Drop for Meters {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!(error = %e, "metrics: provider shutdown");
        }
    }
}

/// Meters read as Prometheus text, and exported over OTLP (gRPC) every
/// `OTEL_METRIC_EXPORT_INTERVAL` when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Each call makes
/// its own, so services started side by side (tests) count apart. Errors: a message when the
/// OTLP exporter cannot be built.
pub fn meters() -> Result<Meters, String> {
    // No scope labels: one scope (`llm-jobs`) would repeat on every series.
    let prometheus = PrometheusExporter::builder().without_scope_info().build();
    let builder = SdkMeterProvider::builder()
        .with_resource(resource())
        .with_reader(prometheus.clone());
    if !otlp() {
        return Ok(Meters {
            provider: builder.build(),
            prometheus,
            export_every: None,
        });
    }
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| format!("OTLP metric exporter: {e}"))?;
    let every = std::env::var("OTEL_METRIC_EXPORT_INTERVAL")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(60), Duration::from_millis);
    Ok(Meters {
        provider: builder.with_periodic_exporter(exporter).build(),
        prometheus,
        export_every: Some(every),
    })
}
