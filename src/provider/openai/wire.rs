//! The chat-completions streaming wire format, decoded leniently; upstream error objects are
//! classified by what the caller should do next in [`errors`].
//!
//! Format: OpenAI chat-completions streaming
//! (<https://platform.openai.com/docs/api-reference/chat/streaming>); dialects seen from Azure
//! OpenAI, OpenRouter, vLLM, SGLang, Ollama, llama.cpp, LM Studio, Gemini and DeepSeek
//! OpenAI-compatible endpoints. Lenient where they differ (missing, null or empty envelope
//! fields, choices without `delta`, `usage: {}`, `reasoning_content` / `reasoning`), strict
//! where correctness is at stake: every payload is checked for an error first.

mod errors;

use std::borrow::Cow;

use serde::{Deserialize, de::IgnoredAny};
use serde_json::Value;

use crate::{
    job::Usage,
    provider::{Chunk, Error},
};
pub use errors::{classify, classify_object, error_in};

/// What one `data:` payload carries.
#[derive(Debug, PartialEq)]
pub enum Payload {
    /// A chunk of the answer (possibly empty: role-only, annotations).
    Chunk(Chunk),
    /// Nothing for us: keep-alives, non-object JSON.
    Skip,
}

/// Decodes one payload: an error object (`error`, or vLLM's `"object": "error"`) becomes the
/// classified error; `finish_reason: "error"` without one is a retryable server error.
pub fn decode(value: &Value) -> Result<Payload, Error> {
    let Some(obj) = value.as_object() else {
        return Ok(Payload::Skip);
    };
    if let Some(err) = error_in(obj) {
        return Err(err);
    }
    let mut chunk = Chunk {
        model: str_of(obj.get("model")).filter(|m| !m.is_empty()),
        usage: obj.get("usage").and_then(usage_of),
        ..Chunk::default()
    };
    let choice = obj
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find_map(Value::as_object));
    if let Some(choice) = choice {
        if let Some(delta) = choice.get("delta").and_then(Value::as_object) {
            chunk.content = str_of(delta.get("content")).unwrap_or_default();
            chunk.reasoning = str_of(delta.get("reasoning_content"))
                .or_else(|| str_of(delta.get("reasoning")))
                .unwrap_or_default();
        }
        chunk.finish_reason = str_of(choice.get("finish_reason")).filter(|r| !r.is_empty());
        if chunk.finish_reason.as_deref() == Some("error") {
            return Err(Error::Server {
                status: None,
                message: "the upstream ended the answer with finish_reason \"error\"".into(),
            });
        }
    }
    Ok(Payload::Chunk(chunk))
}

/// Decodes one payload from its JSON text, with the same answer as [`decode`] on the parsed
/// value. The common chunk (text, reasoning, finish reason, model, nothing else of ours) is
/// read straight into typed fields that borrow from the text; anything else (an error,
/// usage, a shape the typed read refuses) is parsed as a value and goes through [`decode`].
/// Building a `Value` tree of every chunk was most of the CPU a token cost (BENCHMARKS.md,
/// seventh round). Errors: as [`decode`]; text that is not JSON is a malformed chunk.
pub fn decode_text(text: &str) -> Result<Payload, Error> {
    if let Ok(plain) = serde_json::from_str::<PlainChunk<'_>>(text)
        && plain.is_plain()
    {
        return plain.into_chunk().map(Payload::Chunk);
    }
    match serde_json::from_str::<Value>(text) {
        Ok(value) => decode(&value),
        Err(e) => Err(Error::Malformed(e.to_string())),
    }
}

/// The fields of a chunk [`decode`] reads, typed; unknown fields are skipped unread. A
/// field of an unexpected type fails the read (and [`decode`] takes over).
#[derive(Deserialize)]
struct PlainChunk<'a> {
    #[serde(borrow, default)]
    object: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    error: Option<IgnoredAny>,
    #[serde(default)]
    usage: Option<IgnoredAny>,
    #[serde(borrow, default)]
    choices: Option<Vec<PlainChoice<'a>>>,
}

#[derive(Deserialize)]
struct PlainChoice<'a> {
    #[serde(borrow, default)]
    delta: Option<PlainDelta<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct PlainDelta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning: Option<Cow<'a, str>>,
}

impl PlainChunk<'_> {
    /// True when nothing in it needs [`decode`]: no error (null counts as none), no
    /// `"object": "error"`, no usage.
    fn is_plain(&self) -> bool {
        self.error.is_none() && self.usage.is_none() && self.object.as_deref() != Some("error")
    }

    /// The chunk, as [`decode`] makes it.
    fn into_chunk(self) -> Result<Chunk, Error> {
        let mut chunk = Chunk {
            model: self.model.filter(|m| !m.is_empty()).map(Cow::into_owned),
            ..Chunk::default()
        };
        if let Some(choice) = self.choices.and_then(|c| c.into_iter().next()) {
            if let Some(delta) = choice.delta {
                chunk.content = delta.content.map(Cow::into_owned).unwrap_or_default();
                chunk.reasoning = delta
                    .reasoning_content
                    .or(delta.reasoning)
                    .map(Cow::into_owned)
                    .unwrap_or_default();
            }
            chunk.finish_reason = choice
                .finish_reason
                .filter(|r| !r.is_empty())
                .map(Cow::into_owned);
            if chunk.finish_reason.as_deref() == Some("error") {
                return Err(Error::Server {
                    status: None,
                    message: "the upstream ended the answer with finish_reason \"error\"".into(),
                });
            }
        }
        Ok(chunk)
    }
}

pub(super) fn str_of(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_owned)
}

/// Usage from a `usage` object; `None` when absent, empty or all zero (some servers send
/// `usage: {}` on every chunk).
fn usage_of(v: &Value) -> Option<Usage> {
    let obj = v.as_object()?;
    let n = |k: &str| obj.get(k).and_then(Value::as_u64).unwrap_or(0);
    let (input, output) = (n("prompt_tokens"), n("completion_tokens"));
    let total = n("total_tokens").max(input + output);
    let detail = |group: &str, k: &str| {
        obj.get(group)
            .and_then(|d| d.get(k))
            .and_then(Value::as_u64)
    };
    (total > 0).then_some(Usage {
        input_tokens: input,
        output_tokens: output,
        total_tokens: total,
        estimated: false,
        cached_input_tokens: detail("prompt_tokens_details", "cached_tokens"),
        reasoning_tokens: detail("completion_tokens_details", "reasoning_tokens"),
    })
}

/// Parses a payload leniently: several JSON values in one event (joined `data:` lines) are
/// each decoded, and the non-standard `NaN` / `Infinity` / `-Infinity` that Python servers
/// write (in `logprobs`) are read as `null`. `None` when it is not JSON at all.
pub fn parse_lenient(text: &str) -> Option<Vec<Value>> {
    let parse = |t: &str| {
        serde_json::Deserializer::from_str(t)
            .into_iter::<Value>()
            .collect::<Result<Vec<_>, _>>()
            .ok()
    };
    parse(text).or_else(|| parse(&non_finite_as_null(text)))
}

/// Replaces `NaN`, `Infinity` and `-Infinity` outside JSON strings with `null`.
fn non_finite_as_null(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if let Some(token) = ["-Infinity", "Infinity", "NaN"]
            .iter()
            .find(|t| rest.starts_with(**t))
        {
            out.push_str("null");
            rest = &rest[token.len()..];
            continue;
        }
        in_string = c == '"';
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests;
