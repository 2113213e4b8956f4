//! LLM providers: one streaming chat-completions call per attempt, and the classification of
//! what can go wrong with it.
//!
//! [`Provider`] is the interface the worker uses; [`openai`] talks to any OpenAI-compatible API
//! through async-openai, [`sim`] produces deterministic text for demos, load tests and keyless
//! first runs. [`Providers`] picks one by model name: `sim` and `sim-*` are simulated.
//!
//! Exactly one upstream HTTP request per attempt: nothing here retries; the worker decides.

pub mod openai;
pub mod sim;

use std::{borrow::Cow, sync::Arc, time::Duration};

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::job::{ChatMessage, GenerationParams, Usage};

/// The W3C header carrying the trace and parent span ids (the upstream gets
/// [`Request::traceparent`] in it).
pub const TRACEPARENT: &str = "traceparent";

/// What a generation request failed with, classified by what the caller should do next.
/// Sources: OpenAI API error codes (<https://platform.openai.com/docs/guides/error-codes>) and
/// HTTP semantics (RFC 9110).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// HTTP 429: retry, after `retry_after` when the upstream said.
    #[error("upstream rate limited: {message}")]
    RateLimited {
        /// From the `Retry-After` header, when present.
        retry_after: Option<Duration>,
        /// Upstream message.
        message: String,
    },
    /// HTTP 5xx, 408, 409, or a server-side `error` object inside the stream: retryable.
    #[error("upstream server error{}: {message}", http(*.status))]
    Server {
        /// HTTP status, when the error came as one.
        status: Option<u16>,
        /// Upstream message.
        message: String,
    },
    /// Connection refused or reset, TLS failure, or a body that broke off: retryable.
    #[error("upstream connection failed: {0}")]
    Connection(String),
    /// The stream ended without a `finish_reason`: retryable.
    #[error("upstream stream ended early (no finish_reason)")]
    Truncated,
    /// A chunk that is not valid JSON of the streaming format: retryable.
    #[error("upstream sent a malformed chunk: {0}")]
    Malformed(String),
    /// HTTP 401 or 403: permanent until the key is fixed.
    #[error("upstream rejected the credentials (HTTP {status}): {message}")]
    Auth {
        /// HTTP status.
        status: u16,
        /// Upstream message.
        message: String,
    },
    /// HTTP 400, 404, 422 or an invalid request / content policy error: permanent.
    #[error("upstream rejected the request{}: {message}", http(*.status))]
    InvalidRequest {
        /// HTTP status, when the error came as one.
        status: Option<u16>,
        /// Upstream message.
        message: String,
    },
    /// HTTP 200 whose body is a JSON document (a non-streaming answer) instead of an event
    /// stream: the server ignored `stream: true`; permanent (another attempt gets the same).
    #[error("upstream answered with {content_type} instead of an event stream: {message}")]
    NotEventStream {
        /// The `Content-Type` of the answer (empty when absent).
        content_type: String,
        /// The start of the body.
        message: String,
    },
    /// The answer finished with reasoning text but no content and `finish_reason` `length`
    /// (a reasoning model that spent its budget thinking) or `content_filter`. Not retryable:
    /// the same request would end the same way. (With any other finish reason the job
    /// completes, flagged by `MILESTONE_KIND_REASONING_ONLY`.)
    #[error(
        "upstream answered with reasoning only and no content (finish_reason {finish_reason:?}, \
         {reasoning_chars} chars of reasoning)"
    )]
    EmptyAnswer {
        /// The upstream's finish reason.
        finish_reason: String,
        /// Length of the reasoning text (chars).
        reasoning_chars: usize,
    },
}

/// " (HTTP 503)" when the error came with a status.
fn http(status: Option<u16>) -> String {
    status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
}

/// Removes secrets from upstream text before it is stored, logged or sent to clients: the
/// configured API key (some proxies echo request headers into their error pages), then
/// everything [`crate::redact::redact`] masks (`Bearer …` credentials, `sk-…` keys and the
/// rest of its rules).
pub fn redact(text: &str, api_key: Option<&str>) -> String {
    let text = match api_key {
        Some(key) if key.len() >= 8 => Cow::Owned(text.replace(key, crate::redact::MASK)),
        _ => Cow::Borrowed(text),
    };
    crate::redact::redact(&text).into_owned()
}

impl Error {
    /// The same error with `f` applied to every piece of upstream text it carries.
    pub fn map_text(self, f: impl Fn(&str) -> String) -> Error {
        match self {
            Error::RateLimited {
                retry_after,
                message,
            } => Error::RateLimited {
                retry_after,
                message: f(&message),
            },
            Error::Server { status, message } => Error::Server {
                status,
                message: f(&message),
            },
            Error::Connection(m) => Error::Connection(f(&m)),
            Error::Malformed(m) => Error::Malformed(f(&m)),
            Error::Auth { status, message } => Error::Auth {
                status,
                message: f(&message),
            },
            Error::InvalidRequest { status, message } => Error::InvalidRequest {
                status,
                message: f(&message),
            },
            Error::NotEventStream {
                content_type,
                message,
            } => Error::NotEventStream {
                content_type,
                message: f(&message),
            },
            other => other,
        }
    }

    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            Error::Auth { .. }
                | Error::InvalidRequest { .. }
                | Error::NotEventStream { .. }
                | Error::EmptyAnswer { .. }
        )
    }

    /// The upstream's own wait hint (`Retry-After`), when it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Stable code stored with the job and sent to clients.
    pub fn code(&self) -> &'static str {
        match self {
            Error::RateLimited { .. } => "upstream_rate_limited",
            Error::Server { .. } => "upstream_server_error",
            Error::Connection(_) => "upstream_connection_failed",
            Error::Truncated => "upstream_stream_truncated",
            Error::Malformed(_) => "upstream_malformed_chunk",
            Error::Auth { .. } => "upstream_auth_failed",
            Error::InvalidRequest { .. } => "upstream_invalid_request",
            Error::NotEventStream { .. } => "upstream_not_event_stream",
            Error::EmptyAnswer { .. } => "upstream_empty_answer",
        }
    }

    /// Classifies an HTTP error status (with the upstream's message).
    pub fn from_status(status: u16, message: String, retry_after: Option<Duration>) -> Error {
        match status {
            429 => Error::RateLimited {
                retry_after,
                message,
            },
            401 | 403 => Error::Auth { status, message },
            408 | 409 | 500..=599 => Error::Server {
                status: Some(status),
                message,
            },
            _ => Error::InvalidRequest {
                status: Some(status),
                message,
            },
        }
    }
}

/// One request to a provider.
#[derive(Clone, Debug)]
pub struct Request {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Model and sampling parameters (`model` resolved).
    pub params: GenerationParams,
    /// The W3C `traceparent` of the call's span, sent as that header when set.
    pub traceparent: Option<String>,
}

/// One piece of a streamed answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chunk {
    /// Content text to append (may be empty).
    pub content: String,
    /// Reasoning text to append (may be empty).
    pub reasoning: String,
    /// Set on the chunk that ends the choice (`stop`, `length`, ...).
    pub finish_reason: Option<String>,
    /// Token usage, when the upstream reports it (usually on the last chunk).
    pub usage: Option<Usage>,
    /// The model that answers, as the upstream names it.
    pub model: Option<String>,
    /// The upstream's id of the request (`x-request-id`), on the first chunk.
    pub upstream_request_id: Option<String>,
}

/// A stream of chunks; dropping it drops the upstream request.
pub type ChunkStream = BoxStream<'static, Result<Chunk, Error>>;

/// A streaming chat-completions provider.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// `openai` or `sim`.
    fn name(&self) -> &'static str;

    /// True when the text is simulated, not generated by a model.
    fn simulated(&self) -> bool;

    /// Sends the request; the stream yields chunks until the upstream ends it. A stream that
    /// ends without a chunk carrying `finish_reason` was cut short.
    async fn stream(&self, request: &Request) -> Result<ChunkStream, Error>;
}

/// The providers of this process, chosen by model name.
#[derive(Clone)]
pub struct Providers {
    openai: Arc<dyn Provider>,
    sim: Arc<dyn Provider>,
}

impl Providers {
    /// Providers from these implementations.
    pub fn new(openai: Arc<dyn Provider>, sim: Arc<dyn Provider>) -> Providers {
        Providers { openai, sim }
    }

    /// True for the model names that select the simulated provider: `sim` and `sim-*`.
    pub fn is_simulated_model(model: &str) -> bool {
        model == "sim" || model.starts_with("sim-")
    }

    /// The provider that serves `model`.
    pub fn for_model(&self, model: &str) -> &Arc<dyn Provider> {
        if Self::is_simulated_model(model) {
            &self.sim
        } else {
            &self.openai
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_from_upstream_text() {
        let text = "echo: Authorization: Bearer sk-SECRETSECRET123456, key sk-proj-abcdefgh123 and my-own-key-123";
        let clean = redact(text, Some("my-own-key-123"));
        assert!(
            !clean.contains("SECRET")
                && !clean.contains("abcdefgh")
                && !clean.contains("my-own-key"),
            "{clean}"
        );
        // The `sk-` key inside the credential is masked first; the credential is gone either way.
        assert!(clean.contains("Bearer sk-[redacted]"), "{clean}");
        assert!(redact("Bearer abcdefgh12345678", None).contains("Bearer [redacted]"));
        assert_eq!(redact("sk-short ok", None), "sk-short ok");
        let e = Error::Server {
            status: Some(500),
            message: "boom".into(),
        };
        assert_eq!(e.to_string(), "upstream server error (HTTP 500): boom");
    }
}
