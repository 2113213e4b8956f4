use super::*;
use crate::server::Cors;

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
