//! Upstream answers that are not a usable event stream, turned into provider errors that keep
//! their status, message and `Retry-After`, with bodies quoted short and readable.

use std::time::Duration;

use serde_json::Value;

use super::wire;
use crate::provider::Error;

/// Characters of a body quoted in an error message.
const SNIPPET_CHARS: usize = 200;

/// An upstream answer that is not a usable event stream: an error status, or a 2xx whose
/// content type says it is something else.
#[derive(Debug, thiserror::Error)]
#[error("upstream answered HTTP {status} ({content_type})")]
pub(super) struct Refused {
    pub(super) status: u16,
    pub(super) content_type: String,
    pub(super) retry_after: Option<Duration>,
    pub(super) body: String,
}

impl Refused {
    pub(super) fn into_error(self) -> Error {
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
pub(super) fn snippet(body: &str) -> String {
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

#[cfg(test)]
mod tests;
