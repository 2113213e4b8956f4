use super::{is_grpc, refusal_content_type};

fn with(content_type: &str) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        content_type.parse().expect("a valid header value"),
    );
    headers
}

#[test]
fn only_grpc_and_grpc_web_content_types_are_calls() {
    for (sent, call) in [
        ("application/grpc", true),
        ("application/grpc+proto", true),
        ("Application/GRPC-Web+proto", true),
        ("application/grpc-web-text; charset=utf-8", true),
        ("text/plain;charset=UTF-8", false),
        ("application/x-www-form-urlencoded", false),
        ("multipart/form-data; boundary=x", false),
        ("application/json", false),
    ] {
        assert_eq!(is_grpc(&with(sent)), call, "{sent}");
    }
    assert!(!is_grpc(&http::HeaderMap::new()), "no content type");
}

#[test]
fn only_json_encodings_are_refused() {
    for (sent, answered) in [
        (
            "application/grpc-web+json",
            Some("application/grpc-web+proto"),
        ),
        (
            "Application/GRPC-Web-Text+JSON; charset=utf-8",
            Some("application/grpc-web-text+proto"),
        ),
        ("application/grpc+json", Some("application/grpc+proto")),
        ("application/grpc-web+proto", None),
        ("application/grpc-web", None),
        ("application/grpc-web-text", None),
        ("application/grpc", None),
        ("application/json", None),
    ] {
        assert_eq!(refusal_content_type(&with(sent)), answered, "{sent}");
    }
    assert_eq!(refusal_content_type(&http::HeaderMap::new()), None);
}
