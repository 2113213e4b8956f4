//! Calls the gRPC port does not serve, refused before they reach a service.
//!
//! - gRPC and grpc-web in JSON (`application/grpc-web+json`, `application/grpc-web-text+json`,
//!   `application/grpc+json`), answered with a status clients can read. This server encodes
//!   messages in protobuf only. Left alone, tonic-web answers the grpc-web ones HTTP 400 with
//!   no gRPC status (a client sees a transport error, not a reason), and tonic fails the
//!   native ones decoding JSON as protobuf (INTERNAL). [`Layer`], in front of tonic-web,
//!   answers them UNIMPLEMENTED as a trailers-only response: HTTP 200 with `grpc-status: 12`
//!   and a `grpc-message` that says what is served.
//! - A `POST` whose content type is not gRPC's or grpc-web's (`application/grpc…`): HTTP 415.
//!   tonic serves a call whatever its content type, and a browser sends a `text/plain` (or
//!   form) `POST` to any origin without a CORS preflight: without this, any web page could
//!   make a browser submit jobs to a server running with `--insecure-no-auth` (CORS only
//!   hides the answer from the page). A real gRPC or grpc-web client always sends one of the
//!   `application/grpc` types (gRPC over HTTP/2 and grpc-web protocol specifications).
//! - A call whose `grpc-timeout` header is malformed: INVALID_ARGUMENT naming the header, as
//!   a trailers-only response. tonic would ignore it and run the call with no deadline at
//!   all, where the client asked for one (grpc-go refuses it too, with INTERNAL).

use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use http::{HeaderValue, header::CONTENT_TYPE};

use super::deadline::grpc_timeout;

/// What a JSON request is told.
pub const MESSAGE: &str = "only protobuf-encoded messages are served (grpc-web: \
     application/grpc-web+proto or application/grpc-web-text; gRPC: application/grpc); JSON is \
     not";

/// Wraps a service in [`Service`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Layer;

impl<S> tower::Layer<S> for Layer {
    type Service = Service<S>;

    fn layer(&self, inner: S) -> Service<S> {
        Service { inner }
    }
}

/// Answers a `POST` that is not a gRPC call 415, gRPC-in-JSON UNIMPLEMENTED and a malformed
/// `grpc-timeout` INVALID_ARGUMENT, and passes every other request to `inner`.
#[derive(Clone, Debug)]
pub struct Service<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for Service<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Either<Ready<Result<http::Response<R>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let grpc = is_grpc(request.headers());
        if request.method() == http::Method::POST && !grpc {
            return Either::Left(ready(Ok(unsupported())));
        }
        if let Some(content_type) = refusal_content_type(request.headers()) {
            return Either::Left(ready(Ok(refusal(content_type))));
        }
        if grpc && grpc_timeout(request.headers()).is_err() {
            return Either::Left(ready(Ok(malformed_timeout(request.headers()))));
        }
        Either::Right(self.inner.call(request))
    }
}

/// Whether the request's content type is one of gRPC's or grpc-web's (`application/grpc`,
/// `application/grpc+proto`, `application/grpc-web`, `application/grpc-web-text+proto` …).
fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| {
            essence
                .trim()
                .to_ascii_lowercase()
                .starts_with("application/grpc")
        })
}

/// HTTP 415 for a `POST` that is not a gRPC or grpc-web call.
fn unsupported<R: Default>() -> http::Response<R> {
    let mut response = http::Response::new(R::default());
    *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
    response
}

/// For a gRPC or grpc-web request in JSON, the content type of its refusal: the same
/// protocol's, in protobuf. `None` for any other request.
fn refusal_content_type(headers: &http::HeaderMap) -> Option<&'static str> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next()?.trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/grpc-web+json" => Some("application/grpc-web+proto"),
        "application/grpc-web-text+json" => Some("application/grpc-web-text+proto"),
        "application/grpc+json" => Some("application/grpc+proto"),
        _ => None,
    }
}

/// The trailers-only UNIMPLEMENTED response (tonic percent-encodes the message).
fn refusal<R: Default>(content_type: &'static str) -> http::Response<R> {
    let mut response = tonic::Status::unimplemented(MESSAGE).into_http::<R>();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Most bytes of a malformed `grpc-timeout` quoted back.
const MAX_QUOTED: usize = 32;

/// The trailers-only INVALID_ARGUMENT for a malformed `grpc-timeout`, with a `BadRequest`
/// detail naming the header, in the request's own content type.
fn malformed_timeout<R: Default>(headers: &http::HeaderMap) -> http::Response<R> {
    let mut given = headers.get_all("grpc-timeout").iter();
    let description = match (given.next(), given.count()) {
        (Some(value), 0) => {
            let got = String::from_utf8_lossy(value.as_bytes());
            let mut quoted: String = got.chars().take(MAX_QUOTED).collect();
            if quoted.len() < got.len() {
                quoted.push('…');
            }
            format!(
                "malformed header {quoted:?}: expected at most 8 digits and a unit (H, M, S, m, \
                 u or n), e.g. 30S (gRPC over HTTP/2)"
            )
        }
        (_, more) => format!("given {} times: send one", more + 1),
    };
    let status = tonic::Status::from(crate::error::Error::invalid("grpc-timeout", description));
    let mut response = status.into_http::<R>();
    if let Some(content_type) = headers.get(CONTENT_TYPE) {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, content_type.clone());
    }
    response
}

#[cfg(test)]
mod tests;
