//! The OpenAI-compatible provider: `POST {base}/chat/completions` with `stream: true` through
//! async-openai's bring-your-own-types streaming call, decoded leniently by [`wire`].
//!
//! async-openai supplies configuration, auth headers, the base URL, the transport and the SSE
//! parsing. Two things are changed on its HTTP path (its `middleware` feature):
//! - its default retry layer is left out: exactly one upstream request per attempt, the worker
//!   decides about retries;
//! - [`Inspect`] looks at the response before async-openai does, so an error answer keeps its
//!   status, `Retry-After` and body, and a 2xx answer that is not an event stream (a JSON
//!   document, a proxy's HTML page) becomes a clear error instead of an empty stream; it also
//!   reads the upstream's `x-request-id` into a task-local slot set by [`OpenAi::stream`]
//!   (async-openai runs the HTTP call in the caller's task), so results can quote it.

pub mod wire;

use std::{future::Future, pin::Pin, time::Duration};

use async_openai::{
    Client,
    config::OpenAIConfig,
    error::OpenAIError,
    middleware::{HttpRequestFactory, ReqwestService},
    traits::RequestOptionsBuilder,
};
use async_trait::async_trait;
use futures::StreamExt;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::{ChunkStream, Error, Provider, Request};
use crate::config;
use wire::Payload;

/// Longest error body read from the upstream (bytes).
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// Characters of a body quoted in an error message.
const SNIPPET_CHARS: usize = 200;
/// Longest upstream request id kept (bytes); longer header values are ignored.
const MAX_REQUEST_ID_BYTES: usize = 200;

tokio::task_local! {
    /// Where [`Inspect`] puts the `x-request-id` of the response it sees.
    static REQUEST_ID: std::sync::Arc<std::sync::Mutex<Option<String>>>;
}

/// Provider for OpenAI and every server that speaks its chat-completions API.
pub struct OpenAi {
    client: Client<OpenAIConfig>,
    /// Kept to redact it from upstream error text.
    api_key: Option<secrecy::SecretString>,
}

impl OpenAi {
    /// A provider for `upstream.openai_base_url` with `upstream.openai_api_key`.
    ///
    /// The HTTP client has `cfg`'s connect timeout but no overall timeout (the worker bounds each
    /// attempt) and follows no redirects (a redirect would be a second request).
    ///
    /// Errors: a message when the HTTP client cannot be built (no TLS provider).
    pub fn new(upstream: &config::Upstream, cfg: &config::Provider) -> Result<OpenAi, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs.max(1)))
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("cannot build the upstream HTTP client: {e}"))?;
        let mut openai =
            OpenAIConfig::new().with_api_base(upstream.openai_base_url.trim_end_matches('/'));
        if let Some(key) = &upstream.openai_api_key {
            openai = openai.with_api_key(key.expose_secret());
        }
        let client = Client::with_config(openai).with_http_service(Inspect {
            inner: ReqwestService::new(http),
        });
        Ok(OpenAi {
            client,
            api_key: upstream.openai_api_key.clone(),
        })
    }
}

/// Request body of `POST /chat/completions`: streaming on, usage requested.
fn request_body(request: &Request) -> Value {
    let p = &request.params;
    let mut body = json!({
        "model": p.model,
        "messages": request.messages,
        "stream": true,
        "stream_options": { "include_usage": true },
    });
    let obj = body.as_object_mut().expect("json! object literal");
    if let Some(v) = p.max_tokens {
        obj.insert("max_tokens".into(), json!(v));
    }
    if let Some(v) = p.temperature {
        obj.insert("temperature".into(), json!(v));
    }
    if let Some(v) = p.top_p {
        obj.insert("top_p".into(), json!(v));
    }
    if !p.stop.is_empty() {
        obj.insert("stop".into(), json!(p.stop));
    }
    if let Some(v) = p.seed {
        obj.insert("seed".into(), json!(v));
    }
    match &p.response_format {
        None => {}
        Some(crate::job::ResponseFormat::JsonObject) => {
            obj.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(crate::job::ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
            description,
        }) => {
            let mut spec = json!({"name": name, "schema": schema, "strict": strict});
            if !description.is_empty() {
                spec["description"] = json!(description);
            }
            obj.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": spec}),
            );
        }
    }
    body
}

/// An upstream answer that is not a usable event stream: an error status, or a 2xx whose
/// content type says it is something else.
#[derive(Debug, thiserror::Error)]
#[error("upstream answered HTTP {status} ({content_type})")]
struct Refused {
    status: u16,
    content_type: String,
    retry_after: Option<Duration>,
    body: String,
}

impl Refused {
    fn into_error(self) -> Error {
        let parsed = serde_json::from_str::<Value>(self.body.trim()).ok();
        let object = parsed.as_ref().and_then(Value::as_object);
        if (200..300).contains(&self.status) {
            if let Some(err) = object.and_then(wire::error_in) {
                return err;
            }
            if object.is_some_and(|o| o.contains_key("choices")) {
                return Error::NotEventStream {
                    content_type: self.content_type,
                    message: snippet(&self.body),
                };
            }
            return Error::Server {
                status: Some(self.status),
                message: format!(
                    "not an event stream ({}): {}",
                    self.content_type,
                    snippet(&self.body)
                ),
            };
        }
        let error = match object.map(|o| o.get("error").and_then(Value::as_object).unwrap_or(o)) {
            Some(o)
                if o.contains_key("message")
                    || o.contains_key("type")
                    || o.contains_key("code") =>
            {
                wire::classify_object(Some(self.status), o)
            }
            _ => Error::from_status(
                self.status,
                format!("{} ({})", snippet(&self.body), self.content_type),
                None,
            ),
        };
        match error {
            Error::RateLimited { message, .. } => Error::RateLimited {
                retry_after: self.retry_after,
                message,
            },
            other => other,
        }
    }
}

/// The start of a body for an error message: HTML reduced to its visible text, whitespace
/// collapsed, at most [`SNIPPET_CHARS`] characters.
fn snippet(body: &str) -> String {
    let visible = if body.trim_start().starts_with('<') {
        visible_text(body)
    } else {
        body.to_owned()
    };
    let flat: String = visible.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut s: String = flat.chars().take(SNIPPET_CHARS).collect();
    if flat.chars().count() > SNIPPET_CHARS {
        s.push('…');
    }
    if s.is_empty() { "empty body".into() } else { s }
}

/// The text of an HTML page without its tags, styles and scripts.
fn visible_text(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        out.push(' ');
        let tag = &rest[open..];
        let lower = tag.get(..8).unwrap_or(tag).to_ascii_lowercase();
        let skip_to = ["<style", "<script"]
            .iter()
            .find(|t| lower.starts_with(**t))
            .and_then(|t| {
                let close = format!("</{}", &t[1..]);
                tag.to_ascii_lowercase().find(&close)
            });
        let from = skip_to.unwrap_or(0);
        rest = match tag[from..].find('>') {
            Some(end) => &tag[from + end + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// `Retry-After` (seconds or HTTP date, RFC 9110 §10.2.3) or OpenAI's `retry-after-ms`.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_millis(ms));
    }
    let value = text("retry-after")?;
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// The HTTP service under async-openai: one request, then a look at the answer.
#[derive(Clone)]
struct Inspect {
    inner: ReqwestService,
}

impl tower::Service<HttpRequestFactory> for Inspect {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), OpenAIError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequestFactory) -> Self::Future {
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            if let Some(id) = response
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID_BYTES)
            {
                let _ = REQUEST_ID.try_with(|slot| {
                    *slot
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(id.to_owned());
                });
            }
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_ascii_lowercase();
            // Only a content type that clearly says "not a stream" is refused: servers label
            // event streams text/plain, octet-stream or nothing at all.
            let streams = !(content_type.starts_with("application/json")
                || content_type.starts_with("text/html"));
            if response.status().is_success() && streams {
                return Ok(response);
            }
            let retry_after = retry_after(response.headers());
            let body = read_limited(response).await;
            Err(OpenAIError::Boxed(Box::new(Refused {
                status,
                content_type: if content_type.is_empty() {
                    "no content type".into()
                } else {
                    content_type
                },
                retry_after,
                body,
            })))
        })
    }
}

async fn read_limited(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= ERROR_BODY_LIMIT {
            body.truncate(ERROR_BODY_LIMIT);
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
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
            chat = match chat.header(crate::trace::TRACEPARENT, parent.as_str()) {
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

    fn refused(status: u16, content_type: &str, body: &str) -> Error {
        Refused {
            status,
            content_type: content_type.into(),
            retry_after: Some(Duration::from_secs(7)),
            body: body.into(),
        }
        .into_error()
    }

    #[test]
    fn error_answers_keep_status_message_and_retry_after() {
        let e = refused(
            429,
            "application/json",
            r#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#,
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert!(e.to_string().contains("slow down"));
        let e = refused(
            429,
            "application/json",
            r#"{"error":{"message":"pay up","type":"insufficient_quota"}}"#,
        );
        assert!(!e.is_retryable(), "out of quota is permanent");
        let e = refused(
            502,
            "text/html",
            "<html><style>h1{}</style><title>502 Bad Gateway</title></html>",
        );
        assert!(e.is_retryable());
        assert!(e.to_string().contains("502 Bad Gateway (text/html)"), "{e}");
        assert!(!e.to_string().contains("h1{}"));
        let e = refused(
            400,
            "application/json",
            r#"{"object":"error","message":"bad model","type":"BadRequestError","code":400}"#,
        );
        assert_eq!(e.code(), "upstream_invalid_request");
        assert!(refused(401, "", "").to_string().contains("empty body"));
    }

    #[test]
    fn success_answers_that_are_not_streams_are_errors() {
        let e = refused(
            200,
            "application/json",
            r#"{"choices":[{"message":{"content":"hi"}}]}"#,
        );
        assert_eq!(e.code(), "upstream_not_event_stream");
        assert!(!e.is_retryable());
        let e = refused(
            200,
            "application/json",
            r#"{"error":{"message":"overloaded","type":"overloaded_error"}}"#,
        );
        assert!(e.is_retryable());
        let e = refused(200, "text/html", "<html>captive portal</html>");
        assert_eq!(e.code(), "upstream_server_error");
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_ms() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "3".parse().expect("header"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let later = chrono::Utc::now() + chrono::Duration::seconds(60);
        h.insert("retry-after", later.to_rfc2822().parse().expect("header"));
        assert!(retry_after(&h).is_some_and(|d| d > Duration::from_secs(50)));
        h.insert("retry-after-ms", "1500".parse().expect("header"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
    }

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
