//! Upstream error objects (in a stream payload or an error body), classified by what the
//! caller should do next: retry, wait, or give up.

use serde_json::{Map, Value};

use super::str_of;
use crate::provider::Error;

/// The error a payload or an error body carries, if any.
pub fn error_in(obj: &Map<String, Value>) -> Option<Error> {
    match obj.get("error") {
        None | Some(Value::Null | Value::Bool(false)) => {}
        Some(Value::String(s)) if s.trim().is_empty() => {}
        Some(Value::Object(o)) if o.is_empty() => {}
        Some(Value::String(s)) => return Some(classify(None, &[], s)),
        Some(Value::Object(o)) => return Some(classify_object(None, o)),
        Some(other) => return Some(classify(None, &[], &other.to_string())),
    }
    // vLLM / SGLang: {"object": "error", "message": ..., "type": ..., "code": 400}
    (obj.get("object").and_then(Value::as_str) == Some("error")).then(|| classify_object(None, obj))
}

/// Classifies an error object (`message`, `type`, `code`, `status`), with the HTTP status
/// when it came as one.
pub fn classify_object(status: Option<u16>, o: &Map<String, Value>) -> Error {
    let message = str_of(o.get("message")).unwrap_or_else(|| Value::Object(o.clone()).to_string());
    let mut kinds = Vec::new();
    let mut number = status;
    for key in ["type", "code", "status"] {
        match o.get(key) {
            Some(Value::String(s)) => kinds.push(s.clone()),
            Some(Value::Number(n)) => {
                number = number.or(n.as_u64().and_then(|n| u16::try_from(n).ok()))
            }
            _ => {}
        }
    }
    let message = match kinds.first() {
        Some(kind) if !message.starts_with(kind.as_str()) => format!("{kind}: {message}"),
        _ => message,
    };
    classify(number, &kinds, &message)
}

/// The class of an error from its `type`/`code` words, then its status, then its message.
/// Unknown errors are retryable server errors: a later attempt may succeed.
pub fn classify(status: Option<u16>, kinds: &[String], message: &str) -> Error {
    let message = message.chars().take(1000).collect::<String>();
    let words: Vec<String> = kinds.iter().map(|k| normalize(k)).collect();
    let has = |terms: &[&str]| words.iter().any(|w| terms.iter().any(|t| w.contains(t)));
    let status_or = |s: u16| status.unwrap_or(s);
    if has(&["insufficientquota", "billing"]) {
        return Error::InvalidRequest { status, message };
    }
    // Statuses that say it all (OpenAI's 401 body has type `invalid_request_error`).
    match status {
        Some(s @ (401 | 403)) => return Error::Auth { status: s, message },
        Some(429) => {
            return Error::RateLimited {
                retry_after: None,
                message,
            };
        }
        _ => {}
    }
    if has(&["ratelimit", "toomanyrequests", "resourceexhausted"]) {
        return Error::RateLimited {
            retry_after: None,
            message,
        };
    }
    if has(&[
        "contextlength",
        "contextwindow",
        "invalidrequest",
        "badrequest",
        "invalidparam",
        "contentfilter",
        "contentpolicy",
        "policy",
        "notfound",
        "unprocessable",
    ]) {
        return Error::InvalidRequest { status, message };
    }
    if has(&[
        "authentication",
        "unauthorized",
        "permission",
        "forbidden",
        "invalidapikey",
    ]) {
        return Error::Auth {
            status: status_or(401),
            message,
        };
    }
    if has(&[
        "server",
        "internal",
        "overload",
        "unavailable",
        "timeout",
        "capacity",
    ]) {
        return Error::Server { status, message };
    }
    match status {
        Some(s) if s != 200 => Error::from_status(s, message, None),
        _ => {
            let m = normalize(&message);
            if m.contains("contextlength") || m.contains("maximumcontext") {
                Error::InvalidRequest { status, message }
            } else if m.contains("ratelimit") {
                Error::RateLimited {
                    retry_after: None,
                    message,
                }
            } else {
                Error::Server { status, message }
            }
        }
    }
}

/// Lowercase letters and digits only: `rate_limit_exceeded` and `RateLimitExceeded` match.
fn normalize(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests;
