use serde_json::json;

use super::*;

use super::super::decode;

#[test]
fn errors_are_found_first_and_classified() {
    let retryable = |v: Value| decode(&v).expect_err("error").is_retryable();
    assert!(retryable(
        json!({"error": {"message": "boom", "type": "server_error"}})
    ));
    assert!(retryable(
        json!({"error": {"message": "busy", "type": "overloaded_error"}, "choices": [{"delta": {"content": "x"}}]})
    ));
    assert!(!retryable(
        json!({"error": {"message": "too long", "code": "context_length_exceeded"}})
    ));
    assert!(!retryable(
        json!({"error": {"message": "no", "type": "invalid_request_error"}})
    ));
    assert!(!retryable(
        json!({"object": "error", "message": "bad", "type": "BadRequestError", "code": 400})
    ));
    assert!(retryable(
        json!({"choices": [{"delta": {}, "finish_reason": "error"}]})
    ));
    let e = decode(&json!({"error": {"message": "slow down", "type": "rate_limit_error"}}))
        .expect_err("error");
    assert_eq!(e.code(), "upstream_rate_limited");
    let e = decode(&json!({"error": {"message": "pay", "code": "insufficient_quota"}}))
        .expect_err("error");
    assert!(!e.is_retryable());
}
