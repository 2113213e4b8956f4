use std::{
    io,
    sync::{Arc, Mutex},
};

use opentelemetry::trace::TraceContextExt;
use serde_json::Value;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::*;

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The subscriber `--log-format json` installs writes JSON lines, with the ids of the
/// span a line is emitted in.
#[test]
fn json_lines_inside_a_span_carry_its_trace_and_span_ids() {
    let sink = Sink::default();
    let writer = sink.clone();
    let cfg = Config {
        log_format: LogFormat::Json,
        logs: true,
        ..Config::default()
    };
    let provider = tracer_provider(&cfg).expect("no exporter to build");
    let subscriber = subscriber(&cfg, Some(&provider), move || writer.clone(), false);
    let (trace_id, span_id) = tracing::subscriber::with_default(subscriber, || {
        tracing::info!("outside");
        let span = tracing::info_span!("job.attempt", job_id = "j1");
        let _entered = span.enter();
        tracing::info!(tokens = 3, "inside");
        let cx = span.context();
        let ids = cx.span().span_context().clone();
        (ids.trace_id().to_string(), ids.span_id().to_string())
    });
    let text = String::from_utf8(sink.0.lock().expect("lock").clone()).expect("utf-8");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a JSON object"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["message"], "outside");
    assert!(lines[0].get("trace_id").is_none(), "{text}");
    assert_eq!(lines[1]["message"], "inside");
    assert_eq!(lines[1]["tokens"], 3);
    assert_eq!(lines[1]["span"]["job_id"], "j1");
    assert_eq!(trace_id.len(), 32);
    assert_eq!(lines[1]["trace_id"], trace_id.as_str());
    assert_eq!(lines[1]["span_id"], span_id.as_str());
}
