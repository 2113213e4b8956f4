//! A span exporter that passes every exported text through [`crate::redact`] first: span
//! and event attributes (log lines inside a span become its events), event names, link
//! attributes and status descriptions, as the log writer does for log lines.

use std::borrow::Cow;

use opentelemetry::{Array, KeyValue, StringValue, Value, trace::Status};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{SpanData, SpanExporter},
};

use crate::redact::redact;

/// `E` with redaction in front.
#[derive(Debug)]
pub struct Redacting<E>(pub E);

impl<E: SpanExporter> SpanExporter for Redacting<E> {
    fn export(
        &self,
        mut batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        batch.iter_mut().for_each(span);
        self.0.export(batch)
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

/// Redacts one span's texts in place.
pub fn span(s: &mut SpanData) {
    attributes(&mut s.attributes);
    for e in &mut s.events.events {
        text(&mut e.name);
        attributes(&mut e.attributes);
    }
    for l in &mut s.links.links {
        attributes(&mut l.attributes);
    }
    if let Status::Error { description } = &mut s.status {
        text(description);
    }
}

fn text(t: &mut Cow<'static, str>) {
    if let Cow::Owned(masked) = redact(t) {
        *t = Cow::Owned(masked);
    }
}

fn string(s: &mut StringValue) {
    if let Cow::Owned(masked) = redact(s.as_str()) {
        *s = masked.into();
    }
}

fn attributes(kvs: &mut [KeyValue]) {
    for kv in kvs {
        match &mut kv.value {
            Value::String(s) => string(s),
            Value::Array(Array::String(items)) => items.iter_mut().for_each(string),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_attributes_and_events_are_masked() {
        let mut kvs = vec![
            KeyValue::new("error", "upstream said: bad key sk-live1234567890abcdef"),
            KeyValue::new("gen_ai.request.model", "gpt-4o-mini"),
            KeyValue::new("n", 3),
        ];
        attributes(&mut kvs);
        assert_eq!(
            kvs[0].value.as_str(),
            "upstream said: bad key sk-[redacted]"
        );
        assert_eq!(kvs[1].value.as_str(), "gpt-4o-mini");
        let mut name: Cow<'static, str> = "Bearer abcdefghijkl".into();
        text(&mut name);
        assert_eq!(name, "Bearer [redacted]");
    }
}
