//! The OpenAI-compatible provider: `POST {base}/chat/completions` with `stream: true` through
//! async-openai, parsed chunk by chunk.
//!
//! Wire format (OpenAI chat-completions streaming, <https://platform.openai.com/docs/api-reference/chat/streaming>):
//! SSE `data:` lines carrying `chat.completion.chunk` objects, ended by `data: [DONE]`. With
//! `stream_options.include_usage` the last chunk has empty `choices` and the `usage`. Some
//! servers (vLLM, DeepSeek, OpenRouter) stream `reasoning_content` (or `reasoning`) apart from
//! `content`. A failure after the headers arrives as a chunk with an `error` object.
//! async-openai is used with its "bring your own types" calls so these fields survive.

use std::time::Duration;

use async_openai::{Client, config::OpenAIConfig, error::OpenAIError};
use async_trait::async_trait;
use futures::StreamExt;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Chunk, ChunkStream, Error, Provider, Request};
use crate::{config, job::Usage};

/// Provider for OpenAI and every server that speaks its chat-completions API.
pub struct OpenAi {
    client: Client<OpenAIConfig>,
}

impl OpenAi {
    /// A provider for `cfg.openai_base_url` with `cfg.openai_api_key`.
    ///
    /// The HTTP client has a connect timeout but no overall timeout: the worker bounds each
    /// attempt itself. async-openai sends exactly one request per call (its retry middleware is
    /// not enabled).
    ///
    /// Errors: a message when the HTTP client cannot be built (no TLS provider).
    pub fn new(cfg: &config::Provider) -> Result<OpenAi, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs.max(1)))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("cannot build the upstream HTTP client: {e}"))?;
        let mut openai =
            OpenAIConfig::new().with_api_base(cfg.openai_base_url.trim_end_matches('/'));
        if let Some(key) = &cfg.openai_api_key {
            openai = openai.with_api_key(key.expose_secret());
        }
        Ok(OpenAi {
            client: Client::build(http, openai),
        })
    }
}

/// Request body of `POST /chat/completions` with streaming on and usage requested.
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
    body
}

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(default)]
    message: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

impl WireError {
    /// Error objects inside a 200 stream: server-side types are retryable, request and policy
    /// errors are not.
    fn classify(self) -> Error {
        let kind = self.kind.unwrap_or_default();
        let message = if kind.is_empty() {
            self.message
        } else {
            format!("{kind}: {}", self.message)
        };
        match kind.as_str() {
            "invalid_request_error" | "content_policy_violation" | "content_filter" => {
                Error::InvalidRequest {
                    status: None,
                    message,
                }
            }
            "authentication_error" | "permission_error" => Error::Auth {
                status: 401,
                message,
            },
            "rate_limit_error" | "rate_limit_exceeded" => Error::RateLimited {
                retry_after: None,
                message,
            },
            _ => Error::Server {
                status: None,
                message,
            },
        }
    }
}

fn classify(e: OpenAIError) -> Error {
    match e {
        OpenAIError::ApiError(api) => {
            Error::from_status(api.status_code.as_u16(), api.api_error.message, None)
        }
        OpenAIError::Reqwest(e) => {
            if let Some(status) = e.status() {
                Error::from_status(status.as_u16(), e.to_string(), None)
            } else {
                Error::Connection(e.to_string())
            }
        }
        OpenAIError::StreamError(e) => Error::Connection(e.to_string()),
        OpenAIError::JSONDeserialize(e, content) => {
            // A non-JSON error body (a proxy's HTML page, a bare string).
            let snippet: String = content.chars().take(200).collect();
            Error::Malformed(format!("{e}: {snippet}"))
        }
        other => Error::Connection(other.to_string()),
    }
}

fn to_chunk(wire: WireChunk) -> Result<Chunk, Error> {
    if let Some(err) = wire.error {
        return Err(err.classify());
    }
    let mut chunk = Chunk {
        model: wire.model,
        usage: wire.usage.map(|u| Usage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
            estimated: false,
        }),
        ..Chunk::default()
    };
    // One choice is requested (n = 1); index 0 is the answer.
    if let Some(choice) = wire.choices.into_iter().next() {
        if let Some(delta) = choice.delta {
            chunk.content = delta.content.unwrap_or_default();
            chunk.reasoning = delta
                .reasoning_content
                .or(delta.reasoning)
                .unwrap_or_default();
        }
        chunk.finish_reason = choice.finish_reason.filter(|r| !r.is_empty());
    }
    Ok(chunk)
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
        let stream = self
            .client
            .chat()
            .create_stream_byot::<Value, WireChunk>(request_body(request))
            .await
            .map_err(classify)?;
        Ok(stream
            .map(|item| item.map_err(classify).and_then(to_chunk))
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Chunk, Error> {
        to_chunk(serde_json::from_str(s).expect("valid json"))
    }

    #[test]
    fn reads_content_reasoning_finish_and_usage() {
        let c = parse(r#"{"model":"m","choices":[{"index":0,"delta":{"content":"Hi","reasoning_content":"hm"},"finish_reason":null}]}"#).expect("chunk");
        assert_eq!((c.content.as_str(), c.reasoning.as_str()), ("Hi", "hm"));
        assert_eq!(c.finish_reason, None);
        let c = parse(r#"{"choices":[],"usage":{"prompt_tokens":19,"completion_tokens":11,"total_tokens":30}}"#).expect("chunk");
        assert_eq!(
            c.usage
                .map(|u| (u.input_tokens, u.output_tokens, u.total_tokens)),
            Some((19, 11, 30))
        );
    }

    #[test]
    fn error_objects_in_the_stream_are_classified() {
        let e =
            parse(r#"{"error":{"message":"boom","type":"server_error","param":null,"code":null}}"#)
                .expect_err("error chunk");
        assert!(e.is_retryable());
        assert_eq!(e.code(), "upstream_server_error");
        let e = parse(r#"{"error":{"message":"no","type":"invalid_request_error"}}"#)
            .expect_err("error chunk");
        assert!(!e.is_retryable());
    }

    #[test]
    fn statuses_are_classified() {
        for (status, retryable) in [
            (400, false),
            (401, false),
            (403, false),
            (404, false),
            (408, true),
            (409, true),
            (422, false),
            (429, true),
            (500, true),
            (503, true),
        ] {
            assert_eq!(
                Error::from_status(status, String::new(), None).is_retryable(),
                retryable,
                "status {status}"
            );
        }
    }
}
