use super::*;

fn cors(configured: &[String], auth_off: bool) -> Result<Cors, String> {
    Cors::configured(configured, auth_off)
}

fn list(entries: &[&str]) -> Vec<String> {
    entries.iter().map(|e| (*e).to_owned()).collect()
}

#[test]
fn an_unset_or_empty_list_depends_on_auth_and_separators_alone_are_refused() {
    assert_eq!(cors(&[], false), Ok(Cors::Any));
    assert_eq!(cors(&[], true), Ok(Cors::Loopback));
    assert_eq!(cors(&list(&[""]), true), Ok(Cors::Loopback));
    for blank in [&[" ", ""][..], &["", ""], &["", "", ""]] {
        let e = cors(&list(blank), false).expect_err("a list naming nothing");
        assert!(e.contains("names no origin"), "{e}");
    }
}

#[test]
fn every_entry_is_checked_even_beside_a_star() {
    assert_eq!(cors(&list(&["*"]), false), Ok(Cors::Any));
    assert_eq!(cors(&list(&["*", "http://x.com"]), false), Ok(Cors::Any));
    let e = cors(&list(&["*", "garbage"]), false).expect_err("a bad entry beside `*`");
    assert!(e.contains("\"garbage\" is not an origin"), "{e}");
    assert_eq!(
        cors(
            &list(&["https://A.example/", " http://localhost:5173 "]),
            true
        ),
        Ok(Cors::Only(vec![
            http::HeaderValue::from_static("https://a.example"),
            http::HeaderValue::from_static("http://localhost:5173"),
        ]))
    );
}

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
