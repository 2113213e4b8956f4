//! Tracing to stderr (every line passes through [`crate::redact`]), plus OpenTelemetry trace export over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the exporter reads the standard `OTEL_*` variables).
//!
//! Environment: `RUST_LOG` (filter, default `info`; [`CAPPED`] targets stay at `info`
//! whatever it says), `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME` (default `llm-jobs`).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
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
    let otlp = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|v| !v.is_empty());
    if !otlp {
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
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "llm-jobs".into());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
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
