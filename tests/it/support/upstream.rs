//! A scripted, OpenAI-compatible test upstream: a real HTTP server on `127.0.0.1:0` that answers
//! `POST /v1/chat/completions` (and `POST /chat/completions`) with `text/event-stream` bodies taken
//! from the shared fixtures, generated slow streams, HTTP errors or aborted connections.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::stream::{self, BoxStream, Stream, StreamExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

/// Directory holding the raw `.sse` fixture bodies.
pub const FIXTURES_DIR: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/openai-sse");

/// What the upstream answers to the next requests.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Serve a fixture file byte for byte (status 200, `content-type: text/event-stream`), split into writes
    /// of `chunk_bytes` bytes (may split inside a UTF-8 char) with `delay` between writes.
    Fixture {
        name: &'static str,
        chunk_bytes: usize,
        delay: Duration,
    },
    /// Generate an endless-ish (up to `tokens`) well-formed stream: role chunk, then `tokens` content
    /// chunks `"tok0 "`, `"tok1 "`, ... one every `interval`, then `finish_reason: "stop"` and
    /// `[DONE]`. The role chunk is written after `first_token_delay`, each content chunk `interval`
    /// after the previous write, and the finish chunk plus `[DONE]` right after the last token.
    Slow {
        tokens: usize,
        first_token_delay: Duration,
        interval: Duration,
    },
    /// HTTP error status with an OpenAI error JSON body (`{"error":{"message","type","param","code"}}`),
    /// optional `Retry-After` header (seconds). `param` and `code` are `null`.
    Status {
        status: u16,
        error_type: &'static str,
        retry_after_secs: Option<u64>,
    },
    /// Send the first `after_bytes` bytes of a fixture and then abort the connection (not a clean end).
    DropAfter {
        name: &'static str,
        after_bytes: usize,
    },
}

impl Reply {
    /// A fixture served in one write.
    pub fn fixture(name: &'static str) -> Reply {
        Reply::Fixture {
            name,
            chunk_bytes: usize::MAX,
            delay: Duration::ZERO,
        }
    }
}

/// One request received by the upstream.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// The parsed JSON body (a JSON string holding the raw text if the body was not valid JSON).
    pub body: Value,
    /// The `Authorization` header, e.g. `Bearer sk-test`.
    pub authorization: Option<String>,
}

/// State shared between the handle and the server task.
#[derive(Debug)]
struct Shared {
    default: Reply,
    script: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<RecordedRequest>>,
    disconnects: AtomicUsize,
}

/// A running test upstream; the server task is aborted when this is dropped.
#[derive(Debug)]
pub struct TestUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl TestUpstream {
    /// Starts the server with a default reply (used when the script is empty).
    pub async fn start(default: Reply) -> anyhow::Result<TestUpstream> {
        check_fixture(&default)?;
        let shared = Arc::new(Shared {
            default,
            script: Mutex::default(),
            requests: Mutex::default(),
            disconnects: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/chat/completions", post(chat_completions))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                eprintln!("test upstream stopped: {err}");
            }
        });
        Ok(TestUpstream {
            addr,
            shared,
            server,
        })
    }

    /// Base URL to give as `OPENAI_BASE_URL`, e.g. `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queue replies for the next requests, in order (each request pops one; when empty the default is used).
    ///
    /// Panics if the reply names a fixture file that does not exist.
    pub fn push_reply(&self, reply: Reply) {
        if let Err(err) = check_fixture(&reply) {
            panic!("{err}");
        }
        lock(&self.shared.script).push_back(reply);
    }

    /// All requests received so far: parsed JSON bodies of POST /v1/chat/completions, with the Authorization header.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Number of responses whose body stream was dropped before it finished (client disconnected / closed connection).
    ///
    /// Bodies that the upstream itself aborts ([`Reply::DropAfter`]) are not counted.
    pub fn disconnects(&self) -> usize {
        self.shared.disconnects.load(Ordering::SeqCst)
    }

    /// Waits (polling with a deadline, no fixed sleeps as assertions) until `disconnects() >= n`; returns false on timeout.
    pub async fn wait_for_disconnects(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.disconnects() >= n).await
    }

    /// Waits until `requests().len() >= n`; returns false on timeout.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || lock(&self.shared.requests).len() >= n).await
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Reads a fixture file's bytes.
///
/// Panics if the file cannot be read.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
    std::fs::read(&path)
        .unwrap_or_else(|err| panic!("cannot read fixture {}: {err}", path.display()))
}

/// Path of a fixture file.
fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(FIXTURES_DIR).join(name)
}

/// Fails early (on the test side) when a reply names a fixture file that does not exist.
fn check_fixture(reply: &Reply) -> anyhow::Result<()> {
    if let Reply::Fixture { name, .. } | Reply::DropAfter { name, .. } = reply {
        let path = fixture_path(name);
        anyhow::ensure!(path.is_file(), "no such fixture: {}", path.display());
    }
    Ok(())
}

/// Locks a mutex, ignoring poisoning (a panicking test must not hide the state from others).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Polls `done` every 10 ms until it holds or `timeout` elapses.
async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(10)).await;
    }
    true
}

/// The `POST .../chat/completions` handler: records the request and plays the next scripted reply.
async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let authorization = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let authorization = authorization.map(str::to_owned);
    lock(&shared.requests).push(RecordedRequest {
        body,
        authorization,
    });

    let reply = lock(&shared.script)
        .pop_front()
        .unwrap_or_else(|| shared.default.clone());
    let inner: BoxStream<'static, io::Result<Bytes>> = match reply {
        Reply::Status {
            status,
            error_type,
            retry_after_secs,
        } => {
            return error_response(status, error_type, retry_after_secs);
        }
        Reply::Slow {
            tokens,
            first_token_delay,
            interval,
        } => slow_stream(tokens, first_token_delay, interval),
        Reply::Fixture {
            name,
            chunk_bytes,
            delay,
        } => {
            let data = fixture(name);
            let step = chunk_bytes.max(1);
            let pieces: Vec<_> = data.chunks(step).map(Bytes::copy_from_slice).collect();
            stream::iter(pieces.into_iter().enumerate())
                .then(move |(i, piece)| async move {
                    if i > 0 && !delay.is_zero() {
                        sleep(delay).await;
                    }
                    Ok(piece)
                })
                .boxed()
        }
        Reply::DropAfter { name, after_bytes } => {
            let data = Bytes::from(fixture(name));
            let head = data.slice(..after_bytes.min(data.len()));
            stream::once(async move { Ok(head) })
                .chain(stream::once(async {
                    // Let hyper flush the head before the error makes it abort the connection.
                    tokio::task::yield_now().await;
                    Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "test upstream: DropAfter",
                    ))
                }))
                .boxed()
        }
    };
    let body = Body::from_stream(Tracked {
        inner,
        ended: false,
        shared,
    });
    ([(CONTENT_TYPE, "text/event-stream")], body).into_response()
}

/// An OpenAI-style error response.
fn error_response(status: u16, error_type: &str, retry_after_secs: Option<u64>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"error": {
        "message": format!("test upstream: HTTP {} ({error_type})", status.as_u16()),
        "type": error_type,
        "param": null,
        "code": null,
    }});
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(secs) = retry_after_secs {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// The generated stream of [`Reply::Slow`].
fn slow_stream(
    tokens: usize,
    first_token_delay: Duration,
    interval: Duration,
) -> BoxStream<'static, io::Result<Bytes>> {
    stream::unfold(0usize, move |i| async move {
        if i <= tokens {
            sleep(if i == 0 { first_token_delay } else { interval }).await;
        }
        let frame = match i {
            0 => sse_chunk(json!({"role": "assistant", "content": ""}), None),
            i if i <= tokens => sse_chunk(json!({"content": format!("tok{} ", i - 1)}), None),
            i if i == tokens + 1 => sse_chunk(json!({}), Some("stop")) + "data: [DONE]\n\n",
            _ => return None,
        };
        Some((Ok(Bytes::from(frame)), i + 1))
    })
    .boxed()
}

/// One `data:` event holding a `chat.completion.chunk`.
fn sse_chunk(delta: Value, finish_reason: Option<&str>) -> String {
    let chunk = json!({
        "id": "chatcmpl-slow",
        "object": "chat.completion.chunk",
        "created": 1_767_225_600,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
    });
    format!("data: {chunk}\n\n")
}

/// A response body that counts a disconnect when dropped before it ended (with `None` or an error).
struct Tracked {
    inner: BoxStream<'static, io::Result<Bytes>>,
    ended: bool,
    shared: Arc<Shared>,
}

impl Stream for Tracked {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = self.inner.poll_next_unpin(cx);
        if matches!(item, Poll::Ready(None | Some(Err(_)))) {
            self.ended = true;
        }
        item
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if !self.ended {
            self.shared.disconnects.fetch_add(1, Ordering::SeqCst);
        }
    }
}
