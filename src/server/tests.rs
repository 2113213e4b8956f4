use super::*;

#[test]
fn loopback_origins_are_pages_served_from_this_machine() {
    for yes in [
        "http://localhost",
        "http://localhost:5173",
        "https://LOCALHOST:8443",
        "http://127.0.0.1:3000",
        "http://127.1.2.3",
        "http://[::1]:8080",
    ] {
        assert!(is_loopback(&HeaderValue::from_static(yes)), "{yes}");
    }
    for no in [
        "https://evil.example",
        "http://localhost.evil.example",
        "http://127.0.0.1.evil.example",
        "http://evil@localhost",
        "file://localhost",
        "null",
        "http://10.0.0.1",
        "http://[::2]",
    ] {
        assert!(!is_loopback(&HeaderValue::from_static(no)), "{no}");
    }
}

#[test]
fn configured_origins_are_checked_and_normalised() {
    assert_eq!(
        origin("https://App.Example.com/").expect("an origin"),
        "https://app.example.com"
    );
    assert_eq!(
        origin("http://localhost:5173").expect("an origin"),
        "http://localhost:5173"
    );
    for bad in [
        "app.example.com",
        "https://app.example.com/path",
        "ftp://x",
        "",
    ] {
        assert!(origin(bad).is_err(), "{bad:?}");
    }
}
