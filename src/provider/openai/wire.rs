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
mod tests {
    use serde_json::json;

    use super::*;

    fn chunk(v: Value) -> Chunk {
        match decode(&v) {
            Ok(Payload::Chunk(c)) => c,
            other => panic!("not a chunk: {other:?}"),
        }
    }

    /// `decode_text` answers as `decode` on the parsed value, for every payload of the
    /// recorded fixtures and for shapes made to take each of its branches.
    #[test]
    fn reading_the_text_answers_as_decoding_the_value() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openai-sse");
        let mut payloads: Vec<String> = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("the fixtures folder") {
            let path = entry.expect("a fixture").path();
            if path.extension().is_some_and(|e| e == "sse") {
                let text = std::fs::read_to_string(&path).expect("a fixture's text");
                payloads.extend(
                    text.lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(|d| d.trim().to_owned())
                        .filter(|d| d != "[DONE]"),
                );
            }
        }
        assert!(
            payloads.len() > 50,
            "the fixtures hold chunks: {}",
            payloads.len()
        );
        let made = [
            r#"{"choices":[{"delta":{"content":"a\nb \u00e9"},"finish_reason":null}],"model":"m"}"#,
            r#"{"choices":[{"delta":{"reasoning":"r"},"finish_reason":""}],"model":""}"#,
            r#"{"choices":[{"delta":{"reasoning_content":"","reasoning":"r"}}]}"#,
            r#"{"choices":[{"delta":{"reasoning_content":null,"reasoning":"r"}}]}"#,
            r#"{"choices":[{"delta":{"content":5}}]}"#,
            r#"{"choices":[7,{"delta":{"content":"second"}}]}"#,
            r#"{"choices":[{"delta":"text"}]}"#,
            r#"{"choices":{"delta":{}}}"#,
            r#"{"choices":[],"model":7}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"error"}]}"#,
            r#"{"choices":[{"delta":{"content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
            r#"{"choices":[],"usage":{}}"#,
            r#"{"choices":[],"usage":null,"error":null}"#,
            r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
            r#"{"error":false,"choices":[{"delta":{"content":"y"}}]}"#,
            r#"{"error":"","choices":[{"delta":{"content":"y"}}]}"#,
            r#"{"object":"error","message":"bad","type":"BadRequestError","code":400}"#,
            r#"{"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant"},"logprobs":null}]}"#,
            r#"[1,2]"#,
            r#""text""#,
            r#"null"#,
        ];
        payloads.extend(made.iter().map(|m| m.to_string()));
        let mut plain = 0;
        for text in &payloads {
            let Ok(value) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            assert_eq!(decode_text(text), decode(&value), "payload {text}");
            if serde_json::from_str::<PlainChunk<'_>>(text).is_ok_and(|p| p.is_plain()) {
                plain += 1;
            }
        }
        assert!(
            plain * 2 > payloads.len(),
            "most chunks take the typed read: {plain} of {}",
            payloads.len()
        );
    }

    #[test]
    fn odd_but_healthy_shapes_decode() {
        let c = chunk(
            json!({"id": null, "model": "", "choices": [{"delta": {"content": "Hi", "reasoning_content": "hm"}, "finish_reason": ""}]}),
        );
        assert_eq!(
            (
                c.content.as_str(),
                c.reasoning.as_str(),
                c.finish_reason,
                c.model
            ),
            ("Hi", "hm", None, None)
        );
        let c = chunk(json!({"choices": [{"index": 0, "content_filter_results": {}}]}));
        assert_eq!(c, Chunk::default());
        let c = chunk(json!({"choices": [], "usage": {}}));
        assert_eq!(c.usage, None, "empty usage is no usage");
        let c = chunk(
            json!({"usage": {"prompt_tokens": 19, "completion_tokens": 11, "total_tokens": 30}}),
        );
        assert_eq!(
            c.usage
                .map(|u| (u.input_tokens, u.output_tokens, u.total_tokens)),
            Some((19, 11, 30))
        );
        assert_eq!(c.usage.map(|u| u.cached_input_tokens), Some(None));
        let c = chunk(
            json!({"usage": {"prompt_tokens": 19, "completion_tokens": 11,
            "prompt_tokens_details": {"cached_tokens": 8},
            "completion_tokens_details": {"reasoning_tokens": 4}}}),
        );
        assert_eq!(
            c.usage
                .map(|u| (u.cached_input_tokens, u.reasoning_tokens, u.total_tokens)),
            Some((Some(8), Some(4), 30))
        );
        let c =
            chunk(json!({"choices": [{"delta": {"reasoning": "r"}, "finish_reason": "end_turn"}]}));
        assert_eq!(
            (c.reasoning.as_str(), c.finish_reason.as_deref()),
            ("r", Some("end_turn"))
        );
        assert_eq!(decode(&json!("ping")), Ok(Payload::Skip));
        assert_eq!(
            decode(&json!({"error": null, "choices": []})).map(|_| ()),
            Ok(())
        );
    }

    #[test]
    fn lenient_parsing_reads_two_values_and_non_finite_numbers() {
        let v = parse_lenient("{\"a\":1}\n{\"b\":2}").expect("json");
        assert_eq!(v, [json!({"a": 1}), json!({"b": 2})]);
        let v = parse_lenient(r#"{"x":-Infinity,"t":"NaN stays","y":[NaN]}"#).expect("json");
        assert_eq!(v, [json!({"x": null, "t": "NaN stays", "y": [null]})]);
        assert_eq!(parse_lenient("PING"), None);
    }
}
