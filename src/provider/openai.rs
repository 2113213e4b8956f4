//! The OpenAI-compatible provider: `POST {base}/chat/completions` with `stream: true` through
//! async-openai's bring-your-own-types streaming call, decoded leniently by [`wire`].
//!
//! async-openai supplies configuration, auth headers, the base URL, the transport and the SSE
//! parsing. Two things are changed on its HTTP path (its `middleware` feature):
//! - its default retry layer is left out: exactly one upstream request per attempt, the worker
//!   decides about retries;
//! - `Inspect` (in [`inspect`]) looks at the response before async-openai does, so an error answer keeps its
//!   status, `Retry-After` and body, and a 2xx answer that is not an event stream (a JSON
//!   document, a proxy's HTML page) becomes a clear error instead of an empty stream; it also
//!   reads the upstream's `x-request-id` into a task-local slot set by [`OpenAi::stream`]
//!   (async-openai runs the HTTP call in the caller's task), so results can quote it.

mod body;
mod inspect;
mod refused;
pub mod wire;

use std::time::Duration;

use async_openai::{
    Client, config::OpenAIConfig, error::OpenAIError, middleware::ReqwestService,
    traits::RequestOptionsBuilder,
};
use async_trait::async_trait;
use futures::StreamExt;
use secrecy::ExposeSecret;
use serde_json::Value;

use super::{ChunkStream, Error, Provider, Request};
use body::request_body;
use inspect::{Inspect, REQUEST_ID};
use refused::{Refused, snippet};
use wire::Payload;

/// Where the upstream is and how to connect to it (the edge builds it from its configuration).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Base URL of the OpenAI-compatible API, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// The upstream's API key, if it needs one.
    pub api_key: Option<secrecy::SecretString>,
    /// Longest wait to establish the connection (at least a second is allowed).
    pub connect_timeout: Duration,
}

/// Provider for OpenAI and every server that speaks its chat-completions API.
pub struct OpenAi {
    client: Client<OpenAIConfig>,
    /// Kept to redact it from upstream error text.
    api_key: Option<secrecy::SecretString>,
}

impl OpenAi {
    /// A provider for `settings.base_url` with `settings.api_key`.
    ///
    /// The HTTP client has the settings' connect timeout but no overall timeout (the worker
    /// bounds each attempt) and follows no redirects (a redirect would be a second request).
    ///
    /// Errors: a message when the HTTP client cannot be built (no TLS provider).
    pub fn new(settings: &Settings) -> Result<OpenAi, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout.max(Duration::from_secs(1)))
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("cannot build the upstream HTTP client: {e}"))?;
        let mut openai = OpenAIConfig::new().with_api_base(settings.base_url.trim_end_matches('/'));
        if let Some(key) = &settings.api_key {
            openai = openai.with_api_key(key.expose_secret());
        }
        let client = Client::with_config(openai).with_http_service(Inspect {
            inner: ReqwestService::new(http),
        });
        Ok(OpenAi {
            client,
            api_key: settings.api_key.clone(),
        })
    }
}

/// Maps async-openai's errors to ours.
fn classify(e: OpenAIError) -> Error {
    match e {
        OpenAIError::Boxed(boxed) => match boxed.downcast::<Refused>() {
            Ok(refused) => refused.into_error(),
            Err(other) => Error::Connection(other.to_string()),
        },
        OpenAIError::ApiError(api) => {
            Error::from_status(api.status_code.as_u16(), api.api_error.message, None)
        }
        OpenAIError::Reqwest(e) => Error::Connection(error_chain(&e)),
        OpenAIError::StreamError(e) => Error::Connection(e.to_string()),
        other => Error::Connection(other.to_string()),
    }
}

/// An error with its sources ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The chunks of one stream item: payloads that are not JSON (keep-alives, empty data) give
/// none; strict JSON failures get a lenient second parse; a JSON object that stays broken is
/// a retryable malformed-chunk error.
fn items(
    result: Result<Box<serde_json::value::RawValue>, OpenAIError>,
) -> Vec<Result<super::Chunk, Error>> {
    let values = match result {
        // Valid JSON, read straight into a chunk when it is a plain one.
        Ok(raw) => {
            return match wire::decode_text(raw.get()) {
                Ok(Payload::Chunk(chunk)) => vec![Ok(chunk)],
                Ok(Payload::Skip) => Vec::new(),
                Err(e) => vec![Err(e)],
            };
        }
        Err(OpenAIError::JSONDeserialize(e, content)) => {
            let content = content.trim();
            match wire::parse_lenient(content) {
                Some(values) => values,
                None if content.starts_with('{') => {
                    return vec![Err(Error::Malformed(format!("{e}: {}", snippet(content))))];
                }
                None => {
                    tracing::debug!(payload = %snippet(content), "skipping a non-JSON data event");
                    Vec::new()
                }
            }
        }
        Err(e) => return vec![Err(classify(e))],
    };
    values
        .iter()
        .filter_map(|v| match wire::decode(v) {
            Ok(Payload::Chunk(chunk)) => Some(Ok(chunk)),
            Ok(Payload::Skip) => None,
            Err(e) => Some(Err(e)),
        })
        .collect()
}

#[async_trait]
impl Provider for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn simulated(&self) -> bool {
        false
    }

    async fn stream(&self, request: &Request) -> Result<ChunkStream, Error> {
        let key = self.api_key.as_ref().map(|k| k.expose_secret().to_owned());
        let clean = move |e: Error| e.map_text(|t| super::redact(t, key.as_deref()));
        let slot = std::sync::Arc::new(std::sync::Mutex::new(None));
        let mut chat = self.client.chat();
        if let Some(parent) = &request.traceparent {
            // A value that is not a valid header (it always is: the SDK wrote it) is left out.
            chat = match chat.header(super::TRACEPARENT, parent.as_str()) {
                Ok(c) => c,
                Err(_) => self.client.chat(),
            };
        }
        let stream = REQUEST_ID
            .scope(
                slot.clone(),
                chat.create_stream_byot::<Value, Box<serde_json::value::RawValue>>(request_body(
                    request,
                )),
            )
            .await
            .map_err(|e| clean(classify(e)))?;
        let request_id = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        // The request id rides on the first chunk.
        let mut request_id = request_id;
        Ok(stream
            .flat_map(|r| futures::stream::iter(items(r)))
            .map(move |item| {
                item.map_err(&clean).map(|mut chunk| {
                    if let Some(id) = request_id.take() {
                        chunk.upstream_request_id = Some(id);
                    }
                    chunk
                })
            })
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alives_are_skipped_and_broken_objects_are_malformed() {
        let json_err = |s: &str| {
            OpenAIError::JSONDeserialize(
                serde_json::from_str::<Value>(s).expect_err("invalid"),
                s.into(),
            )
        };
        assert!(items(Err(json_err(""))).is_empty());
        assert!(items(Err(json_err("PING"))).is_empty());
        let broken = items(Err(json_err(r#"{"choices": ["#)));
        assert!(matches!(broken[..], [Err(Error::Malformed(_))]));
    }
}
