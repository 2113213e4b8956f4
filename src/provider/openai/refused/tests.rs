use super::*;

fn refused(status: u16, content_type: &str, body: &str) -> Error {
    Refused {
        status,
        content_type: content_type.into(),
        retry_after: Some(Duration::from_secs(7)),
        body: body.into(),
    }
    .into_error()
}

#[test]
fn error_answers_keep_status_message_and_retry_after() {
    let e = refused(
        429,
        "application/json",
        r#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#,
    );
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    assert!(e.to_string().contains("slow down"));
    let e = refused(
        429,
        "application/json",
        r#"{"error":{"message":"pay up","type":"insufficient_quota"}}"#,
    );
    assert!(!e.is_retryable(), "out of quota is permanent");
    let e = refused(
        502,
        "text/html",
        "<html><style>h1{}</style><title>502 Bad Gateway</title></html>",
    );
    assert!(e.is_retryable());
    assert!(e.to_string().contains("502 Bad Gateway (text/html)"), "{e}");
    assert!(!e.to_string().contains("h1{}"));
    let e = refused(
        400,
        "application/json",
        r#"{"object":"error","message":"bad model","type":"BadRequestError","code":400}"#,
    );
    assert_eq!(e.code(), "upstream_invalid_request");
    assert!(refused(401, "", "").to_string().contains("empty body"));
}

#[test]
fn success_answers_that_are_not_streams_are_errors() {
    let e = refused(
        200,
        "application/json",
        r#"{"choices":[{"message":{"content":"hi"}}]}"#,
    );
    assert_eq!(e.code(), "upstream_not_event_stream");
    assert!(!e.is_retryable());
    let e = refused(
        200,
        "application/json",
        r#"{"error":{"message":"overloaded","type":"overloaded_error"}}"#,
    );
    assert!(e.is_retryable());
    let e = refused(200, "text/html", "<html>captive portal</html>");
    assert_eq!(e.code(), "upstream_server_error");
}
