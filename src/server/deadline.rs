//! A call's deadline (`grpc-timeout`) kept for the whole response, streams included.
//!
//! tonic applies `grpc-timeout` to a call's response future only: once a server stream has
//! sent its headers, it ran past the client's deadline for as long as it had events. With
//! [`Layer`], a response still going when the deadline passes ends there with
//! DEADLINE_EXCEEDED in its trailers, as the gRPC over HTTP/2 specification has the server
//! do (`grpc-timeout`: "the server should … cancel the call"). A job's stream ended so is
//! resumed like any other: `StreamJob` with `after_sequence` set to the last event received.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use tokio::time::{Instant, Sleep};

/// Wraps a service in [`Service`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Layer;

impl<S> tower::Layer<S> for Layer {
    type Service = Service<S>;

    fn layer(&self, inner: S) -> Service<S> {
        Service { inner }
    }
}

/// Passes every request to `inner`, and ends the response body at the request's
/// `grpc-timeout`, if it has one (a malformed one is refused in front, by
/// [`super::refusals`]).
#[derive(Clone, Debug)]
pub struct Service<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for Service<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body<R>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body<R>>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let deadline = grpc_timeout(request.headers())
            .ok()
            .flatten()
            .map(|t| Instant::now() + t);
        let message = if STREAMS
            .iter()
            .any(|method| request.uri().path().ends_with(method))
        {
            STREAM_PASSED
        } else {
            PASSED
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|inner| Body {
                inner,
                deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
                message,
                ended: false,
            }))
        })
    }
}

/// The server-streaming methods whose streams resume with `after_sequence`.
const STREAMS: [&str; 4] = [
    "/StreamJob",
    "/SubmitAndStream",
    "/StreamBatch",
    "/WatchDashboard",
];

/// The status message of a passed deadline.
const PASSED: &str = "the call's deadline (grpc-timeout) passed";

/// The status message of a passed deadline on a stream, saying how to go on.
const STREAM_PASSED: &str = "the call's deadline (grpc-timeout) passed (StreamJob with \
     after_sequence set to the last event received resumes a job's events)";

/// A response body that ends with DEADLINE_EXCEEDED trailers once its deadline passes.
#[derive(Debug)]
pub struct Body<B> {
    inner: B,
    deadline: Option<Pin<Box<Sleep>>>,
    /// What the DEADLINE_EXCEEDED says.
    message: &'static str,
    ended: bool,
}

impl<B> http_body::Body for Body<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            self.ended = true;
            let mut trailers = http::HeaderMap::new();
            let status = tonic::Status::deadline_exceeded(self.message);
            // The message is ASCII, so the headers always form.
            if status.add_header(&mut trailers).is_ok() {
                return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
            }
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Most digits of a `grpc-timeout` value (gRPC over HTTP/2: `TimeoutValue → {positive integer
/// as ASCII string of at most 8 digits}`).
const MAX_TIMEOUT_DIGITS: usize = 8;

/// A `grpc-timeout` header that is not one (see [`grpc_timeout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

/// The request's `grpc-timeout`: at most 8 digits and a unit, `H` (hours), `M` (minutes), `S`
/// (seconds), `m` (milliseconds), `u` (microseconds) or `n` (nanoseconds), per the gRPC over
/// HTTP/2 specification. `Ok(None)` without one.
///
/// # Errors
///
/// [`Malformed`] when the header is there and is not such a value, or is there more than once
/// (which of two deadlines was meant is a guess).
pub fn grpc_timeout(headers: &http::HeaderMap) -> Result<Option<Duration>, Malformed> {
    let mut values = headers.get_all("grpc-timeout").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Malformed);
    }
    let value = value.to_str().map_err(|_| Malformed)?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1).ok_or(Malformed)?);
    if digits.is_empty()
        || digits.len() > MAX_TIMEOUT_DIGITS
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(Malformed);
    }
    let n: u64 = digits.parse().map_err(|_| Malformed)?;
    Ok(Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return Err(Malformed),
    }))
}

#[cfg(test)]
mod tests;
