//! Logs to stderr (every line passes through [`crate::redact`]), as text or as JSON lines
//! with trace and span ids ([`LogFormat`]); OpenTelemetry spans (see [`crate::trace`]),
//! exported over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the exporter reads the
//! standard `OTEL_*` variables, e.g. `OTEL_BSP_SCHEDULE_DELAY` for how often spans go out),
//! their texts redacted as log lines are ([`redacting`]); and the meters of a running service
//! ([`meters`]): always read as Prometheus text (served by [`crate::http`]), and exported over
//! OTLP as well when that endpoint is set.
//!
//! Spans are recorded (they get ids, travel with jobs and go upstream as `traceparent`)
//! whenever they are exported or logs are JSON, and then for `llm_jobs` spans at INFO
//! whatever `RUST_LOG` says: the filter chooses log lines, not traces.
//!
//! Environment: `RUST_LOG` (log filter, default `info`; [`CAPPED`] targets stay at `info`
//! whatever it says), `LLMJOBS_LOG_FORMAT` (through the command line), `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_SERVICE_NAME` (default `llm-jobs`), `OTEL_METRIC_EXPORT_INTERVAL` (ms between metric
//! exports, default 60000).

pub mod json;
pub mod redacting;

use std::time::Duration;

use opentelemetry::{metrics::MeterProvider as _, trace::TracerProvider as _};
use opentelemetry_prometheus_text_exporter::PrometheusExporter;
use opentelemetry_sdk::{
    Resource,
    metrics::SdkMeterProvider,
    trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider},
};
use tracing_subscriber::{
    EnvFilter, Layer as _, filter::Targets, layer::SubscriberExt, util::SubscriberInitExt,
};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with `trace_id` and `span_id` inside a span.
    Json,
}

/// What [`init`] installs.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Whether log lines are written at all (tests that only collect spans turn them off).
    pub logs: bool,
    /// Where spans are exported (OTLP/gRPC, e.g. `http://127.0.0.1:4317`); `None`: nowhere.
    pub otlp_endpoint: Option<String>,
    /// Longest a finished span waits to be exported; `None`: the SDK's default (5 s, or
    /// `OTEL_BSP_SCHEDULE_DELAY` ms).
    pub export_delay: Option<Duration>,
}

impl Config {
    /// Logs in `log_format`, spans exported to `OTEL_EXPORTER_OTLP_ENDPOINT` when it is set.
    pub fn from_env(log_format: LogFormat) -> Config {
        Config {
            log_format,
            logs: true,
            otlp_endpoint: std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
                .ok()
                .filter(|v| !v.is_empty()),
            export_delay: None,
        }
    }
}

/// Flushes and stops the span exporter when dropped.
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

/// The tracer provider of `cfg`: exporting over OTLP (texts redacted) when an endpoint is
/// set, else recording ids only (JSON logs). Call inside a Tokio runtime (the gRPC exporter
/// lives on it). Errors: a message when the exporter cannot be built.
fn tracer_provider(cfg: &Config) -> Result<SdkTracerProvider, String> {
    let builder = SdkTracerProvider::builder().with_resource(resource());
    let Some(endpoint) = &cfg.otlp_endpoint else {
        return Ok(builder.build());
    };
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("OTLP exporter: {e}"))?;
    let mut batch = BatchConfigBuilder::default();
    if let Some(delay) = cfg.export_delay {
        batch = batch.with_scheduled_delay(delay);
    }
    let processor = BatchSpanProcessor::builder(redacting::Redacting(exporter))
        .with_batch_config(batch.build())
        .build();
    Ok(builder.with_span_processor(processor).build())
}

/// Installs the global subscriber of `cfg`; a second call changes nothing. Call inside a
/// Tokio runtime when spans are exported. Errors: a message when the OTLP exporter cannot be
/// built.
pub fn init(cfg: &Config) -> Result<Guard, String> {
    let traced = cfg.otlp_endpoint.is_some() || cfg.log_format == LogFormat::Json;
    let provider = traced.then(|| tracer_provider(cfg)).transpose()?;
    let writer = crate::redact::MakeWriter(std::io::stderr);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = subscriber(cfg, provider.as_ref(), writer, ansi).try_init();
    Ok(Guard { provider })
}

/// The subscriber of `cfg`: spans to `provider` (when given), log lines to `writer` (colours
/// when `ansi`).
fn subscriber<W>(
    cfg: &Config,
    provider: Option<&SdkTracerProvider>,
    writer: W,
    ansi: bool,
) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let spans = provider.map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("llm-jobs"))
            .with_filter(Targets::new().with_target("llm_jobs", tracing::Level::INFO))
    });
    // Not an `Option`: an optional layer is not told its dispatcher, which `RecordIds` needs.
    let logs = match (cfg.logs, cfg.log_format) {
        (false, _) => tracing_subscriber::layer::Identity::new().boxed(),
        (true, LogFormat::Text) => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi)
            .with_filter(filter())
            .boxed(),
        (true, LogFormat::Json) => json::RecordIds::default()
            .and_then(
                tracing_subscriber::fmt::layer()
                    .json()
                    .event_format(json::WithTraceIds::new())
                    .with_writer(writer)
                    .with_filter(filter()),
            )
            .boxed(),
    };
    tracing_subscriber::registry().with(spans).with(logs)
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

#[cfg(test)]
mod tests;
