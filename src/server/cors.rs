//! Which web pages may call the API (CORS): the policy [`Cors`], read from
//! `LLMJOBS_CORS_ALLOWED_ORIGINS` by [`Cors::configured`], and the tower layer that applies
//! it to grpc-web calls.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Which web pages' origins may call the API (CORS). Requests from other origins are still
/// answered, without the CORS headers, so browsers keep their pages from reading them (and,
/// since every grpc-web call needs a preflight, from sending them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cors {
    /// Any origin.
    Any,
    /// Pages served from this machine: `http(s)://localhost`, `127.x.x.x` or `[::1]`, any
    /// port.
    Loopback,
    /// These origins exactly (as [`origin`] spells them).
    Only(Vec<HeaderValue>),
}

/// `text` as an origin header value (`scheme://host[:port]`, lower case, no trailing `/`).
///
/// Errors: a message naming `LLMJOBS_CORS_ALLOWED_ORIGINS` and the entry.
pub fn origin(text: &str) -> Result<HeaderValue, String> {
    let normal = text.trim().trim_end_matches('/').to_ascii_lowercase();
    let uri: http::Uri = normal.parse().map_err(|_| bad_origin(text))?;
    let plain = uri.path_and_query().is_none_or(|p| p.as_str() == "/")
        && uri.authority().is_some_and(|a| !a.as_str().contains('@'));
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() || !plain {
        return Err(bad_origin(text));
    }
    HeaderValue::from_str(&normal).map_err(|_| bad_origin(text))
}

fn bad_origin(text: &str) -> String {
    format!(
        "LLMJOBS_CORS_ALLOWED_ORIGINS: {text:?} is not an origin like https://app.example.com \
         or http://localhost:5173 (or `*`)"
    )
}

/// Whether `origin` is a page served from this machine.
fn is_loopback(origin: &HeaderValue) -> bool {
    let Some(uri) = origin
        .to_str()
        .ok()
        .and_then(|o| o.parse::<http::Uri>().ok())
    else {
        return false;
    };
    let host = match uri.authority() {
        Some(a) if !a.as_str().contains('@') => a.host(),
        _ => return false,
    };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.path_and_query().is_none_or(|p| p.as_str() == "/")
        && (host.eq_ignore_ascii_case("localhost")
            || host == "[::1]"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback()))
}

/// CORS for grpc-web clients: the origins `allowed`; the headers grpc-web sends and reads.
/// Header names from the grpc-web protocol (github.com/grpc/grpc/blob/master/doc/PROTOCOL-WEB.md).
pub(super) fn layer(allowed: Cors) -> CorsLayer {
    let h = HeaderName::from_static;
    let origins = match allowed {
        Cors::Any => AllowOrigin::mirror_request(),
        Cors::Loopback => AllowOrigin::predicate(|origin, _| is_loopback(origin)),
        Cors::Only(list) => AllowOrigin::list(list),
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            h("authorization"),
            h("content-type"),
            h("x-grpc-web"),
            h("x-user-agent"),
            h("grpc-timeout"),
            // W3C trace context: a browser that traces continues its trace into the job.
            h("traceparent"),
            h("tracestate"),
        ])
        .expose_headers([
            h("grpc-status"),
            h("grpc-message"),
            h("grpc-status-details-bin"),
        ])
        .max_age(Duration::from_secs(24 * 3600))
}

impl Cors {
    /// The policy of `LLMJOBS_CORS_ALLOWED_ORIGINS` (`configured`, its comma-separated
    /// entries), given whether callers need keys (`auth_off`: they do not): unset, any origin
    /// with keys and only this machine's pages without. Every entry is checked, `*` among
    /// them included, so a typo never hides behind a `*`.
    ///
    /// Errors: an entry that is not `*` or an origin (`scheme://host[:port]`), or a list of
    /// separators only (`,`); an empty value counts as unset.
    pub fn configured(configured: &[String], auth_off: bool) -> Result<Cors, String> {
        let entries: Vec<&str> = configured
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
            .collect();
        if entries.is_empty() {
            // An empty value is unset (as deployment templates write it); separators alone are
            // a list that lost its entries.
            if configured.len() > 1 {
                return Err(
                    "LLMJOBS_CORS_ALLOWED_ORIGINS is set but names no origin: give origins like \
                     https://app.example.com, or `*`, or unset it"
                        .into(),
                );
            }
            return Ok(if auth_off { Cors::Loopback } else { Cors::Any });
        }
        let origins = entries
            .iter()
            .filter(|o| **o != "*")
            .map(|o| origin(o))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(if entries.contains(&"*") {
            Cors::Any
        } else {
            Cors::Only(origins)
        })
    }
}

#[cfg(test)]
mod tests;
