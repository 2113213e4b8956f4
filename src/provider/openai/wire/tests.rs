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
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openai-sse");
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
    let c =
        chunk(json!({"usage": {"prompt_tokens": 19, "completion_tokens": 11, "total_tokens": 30}}));
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
    let c = chunk(json!({"choices": [{"delta": {"reasoning": "r"}, "finish_reason": "end_turn"}]}));
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
