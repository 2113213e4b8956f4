use std::time::Duration;

use super::grpc_timeout;

fn timeout(value: &str) -> Option<Duration> {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "grpc-timeout",
        http::HeaderValue::from_str(value).expect("a header value"),
    );
    grpc_timeout(&headers)
}

#[test]
fn grpc_timeouts_are_read_in_every_unit() {
    assert_eq!(timeout("2H"), Some(Duration::from_secs(7200)));
    assert_eq!(timeout("3M"), Some(Duration::from_secs(180)));
    assert_eq!(timeout("15S"), Some(Duration::from_secs(15)));
    assert_eq!(timeout("250m"), Some(Duration::from_millis(250)));
    assert_eq!(
        timeout("99999999u"),
        Some(Duration::from_micros(99_999_999))
    );
    assert_eq!(timeout("7n"), Some(Duration::from_nanos(7)));
    assert_eq!(timeout("0m"), Some(Duration::ZERO));
}

#[test]
fn malformed_grpc_timeouts_are_ignored() {
    for bad in [
        "",
        "m",
        "10",
        "10x",
        "10 m",
        "-5m",
        "+5m",
        "1.5S",
        "123456789m",
        "10mm",
        "1h",
    ] {
        assert_eq!(timeout(bad), None, "{bad:?}");
    }
    assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
}
