//! A scripted, OpenAI-compatible test upstream: a real HTTP server on `127.0.0.1:0` that answers
//! `POST /v1/chat/completions` (and `POST /chat/completions`) with `text/event-stream` bodies taken
//! from the shared fixtures, generated slow streams, HTTP errors, aborted connections, or raw
//! bytes of the test's own (any status and content type), written whole or split at chosen or
//! seeded-random byte offsets.
//!
//! Replies come from a per-model route when the request's `model` has one ([`TestUpstream::route`]:
//! the same reply for every request of that model, so concurrent jobs on different models do not
//! compete for a shared script), else from the script, else the default.

use std::collections::{HashMap, VecDeque};
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
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

/// Directory holding the raw `.sse` fixture bodies.
pub const FIXTURES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/openai-sse");

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
    /// As [`Reply::Slow`] with no delays, except that the finish chunk and `[DONE]` wait until
    /// `end` has a permit (see [`Reply::held_end`]): the whole answer is out, the stream not
    /// yet ended.
    HeldEnd {
        tokens: usize,
        end: Arc<tokio::sync::Semaphore>,
    },
    /// As [`Reply::Slow`] with no first-token delay, except that nothing is written until
    /// `start` has a permit (see [`Reply::held_start`]): the request is in, the answer not
    /// yet begun.
    HeldStart {
        tokens: usize,
        interval: Duration,
        start: Arc<tokio::sync::Semaphore>,
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
    /// Any bytes, served as they are with this status and `Content-Type` (none when `None`),
    /// written in pieces as `split` says; the body then stays open for `linger` (a server that
    /// neither closes nor sends more) and ends cleanly.
    Raw {
        status: u16,
        content_type: Option<&'static str>,
        body: Bytes,
        split: Split,
        linger: Duration,
    },
}

/// How a [`Reply::Raw`] body is cut into writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Split {
    /// One write.
    Whole,
    /// Writes of `n` bytes (the last may be shorter).
    Every(usize),
    /// Writes of 1..=`max` bytes, lengths drawn from an RNG seeded with `seed` (the same seed
    /// always gives the same offsets; offsets fall anywhere, also inside UTF-8 characters and
    /// CRLF pairs).
    Random { seed: u64, max: usize },
}

impl Split {
    /// The body cut into pieces.
    pub fn pieces(&self, body: &Bytes) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut at = 0;
        let mut rng = match self {
            Split::Random { seed, .. } => Some(StdRng::seed_from_u64(*seed)),
            _ => None,
        };
        while at < body.len() {
            let n = match self {
                Split::Whole => body.len(),
                Split::Every(n) => (*n).max(1),
                Split::Random { max, .. } => match rng.as_mut() {
                    Some(rng) => rng.random_range(1..=(*max).max(1)),
                    None => 1,
                },
            };
            let end = (at + n).min(body.len());
            out.push(body.slice(at..end));
            at = end;
        }
        out
    }
}

impl Reply {
    /// A fixture served in one write.
    /// A generated stream of `tokens` tokens: the first after `first_ms`, then one every
    /// `interval_ms` (see [`Reply::Slow`]).
    pub fn slow(tokens: usize, first_ms: u64, interval_ms: u64) -> Reply {
        Reply::Slow {
            tokens,
            first_token_delay: Duration::from_millis(first_ms),
            interval: Duration::from_millis(interval_ms),
        }
    }

    /// A stream of `tokens` tokens at once whose end (finish chunk and `[DONE]`) waits for
    /// the returned gate: `add_permits(1)` lets one such stream end.
    pub fn held_end(tokens: usize) -> (Reply, Arc<tokio::sync::Semaphore>) {
        let end = Arc::new(tokio::sync::Semaphore::new(0));
        let reply = Reply::HeldEnd {
            tokens,
            end: end.clone(),
        };
        (reply, end)
    }

    /// A stream of `tokens` tokens `interval_ms` apart that begins only when the returned
    /// gate gets a permit: `add_permits(n)` lets `n` such streams begin.
    pub fn held_start(tokens: usize, interval_ms: u64) -> (Reply, Arc<tokio::sync::Semaphore>) {
        let start = Arc::new(tokio::sync::Semaphore::new(0));
        let reply = Reply::HeldStart {
            tokens,
            interval: Duration::from_millis(interval_ms),
            start: start.clone(),
        };
        (reply, start)
    }

    pub fn fixture(name: &'static str) -> Reply {
        Reply::Fixture {
            name,
            chunk_bytes: usize::MAX,
            delay: Duration::ZERO,
        }
    }

    /// Raw bytes with a status and a content type, in one write.
    pub fn raw(status: u16, content_type: Option<&'static str>, body: impl Into<Bytes>) -> Reply {
        Reply::Raw {
            status,
            content_type,
            body: body.into(),
            split: Split::Whole,
            linger: Duration::ZERO,
        }
    }

    /// A `200 text/event-stream` answer with this body, in one write.
    pub fn sse(body: impl Into<Bytes>) -> Reply {
        Reply::raw(200, Some("text/event-stream"), body)
    }

    /// A fixture served as `200 text/event-stream`, cut into writes of 1..=`max` bytes at
    /// offsets drawn from an RNG seeded with `seed`.
    ///
    /// Panics if the fixture cannot be read.
    pub fn fixture_split(name: &str, seed: u64, max: usize) -> Reply {
        Reply::Raw {
            status: 200,
            content_type: Some("text/event-stream"),
            body: Bytes::from(fixture(name)),
            split: Split::Random { seed, max },
            linger: Duration::ZERO,
        }
    }

    /// The same reply with its body cut as `split` says (only [`Reply::Raw`] changes).
    pub fn split(mut self, how: Split) -> Reply {
        if let Reply::Raw { split, .. } = &mut self {
            *split = how;
        }
        self
    }

    /// The same reply with its body kept open for `how_long` after the last byte (only
    /// [`Reply::Raw`] changes).
    pub fn linger(mut self, how_long: Duration) -> Reply {
        if let Reply::Raw { linger, .. } = &mut self {
            *linger = how_long;
        }
        self
    }
}

/// One request received by the upstream.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// The parsed JSON body (a JSON string holding the raw text if the body was not valid JSON).
    pub body: Value,
    /// The `Authorization` header, e.g. `Bearer sk-test`.
    pub authorization: Option<String>,
    /// When it arrived (wall clock, to compare with the budget windows of other processes).
    pub at: std::time::SystemTime,
    /// Every header, as received.
    pub headers: HeaderMap,
}

impl RecordedRequest {
    /// The value of header `name`, when present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// State shared between the handle and the server task.
#[derive(Debug)]
struct Shared {
    default: Reply,
    script: Mutex<VecDeque<Reply>>,
    routes: Mutex<HashMap<String, Reply>>,
    requests: Mutex<Vec<RecordedRequest>>,
    disconnects: AtomicUsize,
    /// Response streams sent and not yet ended or dropped.
    open: AtomicUsize,
    /// The most response streams open at once so far.
    most_open: AtomicUsize,
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
            routes: Mutex::default(),
            requests: Mutex::default(),
            disconnects: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            most_open: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/chat/completions", post(chat_completions))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // Like the servers it stands for (uvicorn under vLLM, Node's HTTP server): without
        // TCP_NODELAY each SSE chunk written behind an unacknowledged one waits for the
        // client's delayed ACK (up to 40 ms on Linux), which the benchmark measured as 40 ms
        // before most first tokens.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                eprintln!("test upstream: cannot set TCP_NODELAY: {e}");
            }
        });
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

    /// Answer every request whose body names `model` with `reply` (before the script and the
    /// default; a later route for the same model replaces the earlier one).
    ///
    /// Panics if the reply names a fixture file that does not exist.
    pub fn route(&self, model: &str, reply: Reply) {
        if let Err(err) = check_fixture(&reply) {
            panic!("{err}");
        }
        lock(&self.shared.routes).insert(model.to_owned(), reply);
    }

    /// The requests received so far whose body names `model`.
    pub fn requests_for(&self, model: &str) -> Vec<RecordedRequest> {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.body.get("model").and_then(Value::as_str) == Some(model))
            .cloned()
            .collect()
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

    /// The most streamed responses this upstream had open at once (error responses, which
    /// end at once, are not counted): how many calls the service made to it at the same time.
    pub fn most_open(&self) -> usize {
        self.shared.most_open.load(Ordering::SeqCst)
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

/// Path of a fixture file: under `LLMJOBS_FIXTURES_DIR` when set, else [`FIXTURES_DIR`]
/// (`tests/fixtures/openai-sse` in this repository).
fn fixture_path(name: &str) -> PathBuf {
    std::env::var("LLMJOBS_FIXTURES_DIR")
        .map_or_else(|_| PathBuf::from(FIXTURES_DIR), PathBuf::from)
        .join(name)
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
    let body: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let authorization = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let authorization = authorization.map(str::to_owned);
    let routed = body
        .get("model")
        .and_then(Value::as_str)
        .and_then(|model| lock(&shared.routes).get(model).cloned());
    let request_number = {
        let mut requests = lock(&shared.requests);
        requests.push(RecordedRequest {
            body,
            authorization,
            at: std::time::SystemTime::now(),
            headers,
        });
        requests.len()
    };

    let reply = routed.unwrap_or_else(|| {
        lock(&shared.script)
            .pop_front()
            .unwrap_or_else(|| shared.default.clone())
    });
    let mut status = StatusCode::OK;
    let mut content_type = Some("text/event-stream");
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
        } => slow_stream(tokens, first_token_delay, interval, None, None),
        Reply::HeldEnd { tokens, end } => {
            slow_stream(tokens, Duration::ZERO, Duration::ZERO, None, Some(end))
        }
        Reply::HeldStart {
            tokens,
            interval,
            start,
        } => slow_stream(tokens, Duration::ZERO, interval, Some(start), None),
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
        Reply::Raw {
            status: code,
            content_type: ct,
            body,
            split,
            linger,
        } => {
            status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            content_type = ct;
            let pieces = split.pieces(&body);
            stream::iter(pieces.into_iter().enumerate())
                .then(|(i, piece)| async move {
                    if i > 0 {
                        // Give hyper a chance to write each piece on its own.
                        tokio::task::yield_now().await;
                    }
                    Ok(piece)
                })
                .chain(
                    stream::once(async move {
                        if !linger.is_zero() {
                            sleep(linger).await;
                        }
                        Ok(Bytes::new())
                    })
                    .filter(|_| async { false }),
                )
                .boxed()
        }
    };
    let now_open = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
    shared.most_open.fetch_max(now_open, Ordering::SeqCst);
    let body = Body::from_stream(Tracked {
        inner,
        ended: false,
        shared,
    });
    let mut response = (status, body).into_response();
    if let Some(value) = content_type.and_then(|ct| HeaderValue::from_str(ct).ok()) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    // Like OpenAI's `x-request-id`: `req_test_<n>` for the n-th request received.
    if let Ok(value) = HeaderValue::from_str(&format!("req_test_{request_number}")) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
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
    start: Option<Arc<tokio::sync::Semaphore>>,
    end: Option<Arc<tokio::sync::Semaphore>>,
) -> BoxStream<'static, io::Result<Bytes>> {
    stream::unfold(0usize, move |i| {
        let (start, end) = (start.clone(), end.clone());
        async move {
            if i == 0
                && let Some(start) = start
            {
                // A closed gate ends the stream before it began.
                start.acquire().await.ok()?.forget();
            }
            if i <= tokens {
                sleep(if i == 0 { first_token_delay } else { interval }).await;
            } else if i == tokens + 1
                && let Some(end) = end
            {
                // A closed gate ends the stream without its finish.
                end.acquire().await.ok()?.forget();
            }
            let frame = match i {
                0 => sse_chunk(json!({"role": "assistant", "content": ""}), None),
                i if i <= tokens => sse_chunk(json!({"content": format!("tok{} ", i - 1)}), None),
                i if i == tokens + 1 => sse_chunk(json!({}), Some("stop")) + "data: [DONE]\n\n",
                _ => return None,
            };
            Some((Ok(Bytes::from(frame)), i + 1))
        }
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

/// A response body that counts a disconnect when dropped before it ended (with `None` or an
/// error), and stops counting as open when it ends or is dropped.
struct Tracked {
    inner: BoxStream<'static, io::Result<Bytes>>,
    ended: bool,
    shared: Arc<Shared>,
}

impl Stream for Tracked {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = self.inner.poll_next_unpin(cx);
        if !self.ended && matches!(item, Poll::Ready(None | Some(Err(_)))) {
            self.ended = true;
            self.shared.open.fetch_sub(1, Ordering::SeqCst);
        }
        item
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if !self.ended {
            self.shared.disconnects.fetch_add(1, Ordering::SeqCst);
            self.shared.open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
