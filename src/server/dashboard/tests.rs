use super::*;

#[test]
fn if_none_match_lists_are_compared_weakly() {
    let etag = HeaderValue::from_static("\"abc\"");
    let yes = ["\"abc\"", "W/\"abc\"", "\"x\", \"abc\"", "*"];
    for value in yes {
        assert!(
            matches(Some(&HeaderValue::from_static(value)), &etag),
            "{value}"
        );
    }
    for value in ["\"abd\"", "abc", ""] {
        assert!(
            !matches(Some(&HeaderValue::from_static(value)), &etag),
            "{value}"
        );
    }
    assert!(!matches(None, &etag));
}

#[test]
fn every_asset_has_a_distinct_etag_and_the_page_links_the_others() {
    let tags = etags();
    assert_eq!(tags.len(), ASSETS.len());
    let page = std::str::from_utf8(ASSETS[0].body).expect("the page is UTF-8");
    for asset in &ASSETS[1..] {
        assert!(page.contains(asset.path), "the page links {}", asset.path);
    }
    assert!(!page.contains("<script>"), "no inline script");
}
