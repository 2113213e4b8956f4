use std::time::Duration;

use super::{Malformed, grpc_timeout};

fn timeout(value: &str) -> Result<Option<Duration>, Malformed> {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "grpc-timeout",
        http::HeaderValue::from_str(value).expect("a header value"),
    );
    grpc_timeout(&headers)
}

#[test]
fn grpc_timeouts_are_read_in_every_unit() {
    for (value, expected) in [
        ("2H", Duration::from_secs(7200)),
        ("3M", Duration::from_secs(180)),
        ("15S", Duration::from_secs(15)),
        ("250m", Duration::from_millis(250)),
        ("99999999u", Duration::from_micros(99_999_999)),
        ("7n", Duration::from_nanos(7)),
        ("0m", Duration::ZERO),
    ] {
        assert_eq!(timeout(value), Ok(Some(expected)), "{value:?}");
    }
    assert_eq!(grpc_timeout(&http::HeaderMap::new()), Ok(None));
}

#[test]
fn malformed_grpc_timeouts_are_told_apart_from_none() {
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
        assert_eq!(timeout(bad), Err(Malformed), "{bad:?}");
    }
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "grpc-timeout",
        http::HeaderValue::from_bytes(b"5\xffm").expect("opaque bytes are a header value"),
    );
    assert_eq!(grpc_timeout(&headers), Err(Malformed));
}

#[test]
fn a_grpc_timeout_given_twice_is_malformed_even_when_both_are_valid() {
    for (first, second) in [("1S", "2S"), ("1S", "abc"), ("abc", "1S")] {
        let mut headers = http::HeaderMap::new();
        headers.append("grpc-timeout", http::HeaderValue::from_static(first));
        headers.append("grpc-timeout", http::HeaderValue::from_static(second));
        assert_eq!(grpc_timeout(&headers), Err(Malformed), "{first} {second}");
    }
}
