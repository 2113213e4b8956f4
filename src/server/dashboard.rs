//! The web dashboard's page and assets, on the gRPC port: `GET /` answers the page and
//! `GET /assets/…` its script and style sheet; every other `GET` or `HEAD` is 404. gRPC and
//! grpc-web calls (always `POST`) and CORS preflights (`OPTIONS`) pass through untouched.
//!
//! The files are built from `web/src` by `node web/build.mjs` into `web/dist` (committed) and
//! embedded here with `include_bytes!`, so `cargo build` alone gives a binary that serves them.
//! The page calls the service's own grpc-web API from the same origin with the API key the
//! user pastes; nothing here reads a key. Every answer carries a strict Content-Security-Policy
//! (same-origin scripts, styles and connections only, no framing), `X-Content-Type-Options:
//! nosniff`, and a strong `ETag` so that browsers revalidate (`If-None-Match` → 304).
//! Header semantics: RFC 9110 §8.8.3 (ETag), §13.1.2 (If-None-Match), CSP Level 3
//! (<https://www.w3.org/TR/CSP3/>).

use std::{
    sync::OnceLock,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::future::{Either, Ready, ready};
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::Full;
use sha2::{Digest, Sha256};

/// The Content-Security-Policy of every dashboard answer: only this origin's scripts, styles
/// and API; images from this origin or `data:` URLs (the inline icon); no plugins, forms,
/// base URL changes or framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Where the page is served (the path to print in the start-up log).
pub const PAGE_PATH: &str = "/";

/// One embedded file: its URL path, content type and bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// The files of `web/dist`, by URL path.
const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../web/dist/index.html"),
    },
    Asset {
        path: "/assets/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/dist/assets/app.js"),
    },
    Asset {
        path: "/assets/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../web/dist/assets/app.css"),
    },
];

/// Each asset's strong ETag (a quoted SHA-256 prefix of its bytes), computed once.
fn etags() -> &'static [HeaderValue] {
    static ETAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| {
                let digest = Sha256::digest(asset.body);
                let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
                HeaderValue::from_str(&format!("\"{hex}\""))
                    .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
            })
            .collect()
    })
}

/// Wraps a service in [`Service`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Layer;

impl<S> tower::Layer<S> for Layer {
    type Service = Service<S>;

    fn layer(&self, inner: S) -> Service<S> {
        Service { inner }
    }
}

/// Answers `GET` and `HEAD` requests with the dashboard (or 404) and passes every other
/// request to `inner`.
#[derive(Clone, Debug)]
pub struct Service<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for Service<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Self::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.method();
        if method != Method::GET && method != Method::HEAD {
            return Either::Right(self.inner.call(request));
        }
        let answer = answer(
            request.uri().path(),
            request.headers().get(header::IF_NONE_MATCH),
            method == Method::HEAD,
        );
        Either::Left(ready(Ok(answer)))
    }
}

/// The answer to a `GET` (or, without its body, `HEAD`) of `path`.
fn answer(
    path: &str,
    if_none_match: Option<&HeaderValue>,
    head: bool,
) -> http::Response<tonic::body::Body> {
    let found = ASSETS.iter().zip(etags()).find(|(a, _)| a.path == path);
    let (status, content_type, body, etag) = match found {
        Some((_, etag)) if matches(if_none_match, etag) => {
            (StatusCode::NOT_MODIFIED, None, &[][..], Some(etag))
        }
        Some((asset, etag)) => (
            StatusCode::OK,
            Some(asset.content_type),
            asset.body,
            Some(etag),
        ),
        None => (
            StatusCode::NOT_FOUND,
            Some("text/plain; charset=utf-8"),
            &b"not found: the dashboard is at /\n"[..],
            None,
        ),
    };
    let mut response = http::Response::new(if head || body.is_empty() {
        tonic::body::Body::empty()
    } else {
        tonic::body::Body::new(Full::new(Bytes::from_static(body)))
    });
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Some(content_type) = content_type {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    if let Some(etag) = etag {
        headers.insert(header::ETAG, etag.clone());
        // Stored, but checked with the server before each use.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Whether an `If-None-Match` header names `etag` (or is `*`), comparing weakly as RFC 9110
/// §13.1.2 asks.
fn matches(if_none_match: Option<&HeaderValue>, etag: &HeaderValue) -> bool {
    let Some(list) = if_none_match.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let ours = etag.to_str().unwrap_or_default();
    list.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours)
}

#[cfg(test)]
mod tests;
