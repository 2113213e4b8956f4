use super::*;

#[test]
fn the_cancel_flag_is_read_by_the_first_flush_then_at_most_every_interval() {
    let mut u = Unpublished::default();
    let t0 = Instant::now();
    assert!(u.cancel_read_due(t0), "the first flush reads it");
    assert!(!u.cancel_read_due(t0 + CANCEL_CHECK_EVERY / 2));
    assert!(u.cancel_read_due(t0 + CANCEL_CHECK_EVERY));
    assert!(!u.cancel_read_due(t0 + CANCEL_CHECK_EVERY + Duration::from_millis(1)));
    u.read_cancel_next();
    assert!(
        u.cancel_read_due(t0 + CANCEL_CHECK_EVERY + Duration::from_millis(2)),
        "the last flush reads it"
    );
}

#[test]
fn a_read_by_the_start_counts_for_the_first_flush() {
    let mut u = Unpublished::default();
    let t0 = Instant::now();
    u.cancel_read(t0);
    assert!(!u.cancel_read_due(t0 + CANCEL_CHECK_EVERY / 2));
    assert!(u.cancel_read_due(t0 + CANCEL_CHECK_EVERY));
}

#[test]
fn deltas_split_on_character_boundaries() {
    let mut s = "aé👋b".to_owned(); // 1 + 2 + 4 + 1 bytes
    assert_eq!(take_prefix(&mut s, 2), "a");
    assert_eq!(take_prefix(&mut s, 2), "é");
    assert_eq!(
        take_prefix(&mut s, 2),
        "👋",
        "one character even when wider than max"
    );
    assert_eq!(take_prefix(&mut s, 2), "b");
    assert!(s.is_empty());
}

#[test]
fn realtime_chunks_stay_separate_deltas_with_their_own_counts() {
    let mut u = Unpublished::default();
    u.push("Hel", "", 1, true);
    u.push("lo", "", 2, true);
    u.push("", "think", 3, true);
    assert_eq!((u.pieces(), u.bytes()), (3, 10));
    let deltas = u.take_append();
    let got: Vec<(&str, &str, u64)> = deltas
        .iter()
        .map(|d| (d.text.as_str(), d.reasoning_text.as_str(), d.output_tokens))
        .collect();
    assert_eq!(got, [("Hel", "", 1), ("lo", "", 2), ("", "think", 3)]);
    assert!(u.is_empty());
    assert_eq!(u.bytes(), 0);
}

#[test]
fn buffered_chunks_join_into_one_delta_with_the_latest_count() {
    let mut u = Unpublished::default();
    u.push("Hel", "a", 1, false);
    u.push("lo", "b", 2, false);
    let deltas = u.take_append();
    assert_eq!(deltas.len(), 1);
    assert_eq!(
        (deltas[0].text.as_str(), deltas[0].reasoning_text.as_str()),
        ("Hello", "ab")
    );
    assert_eq!(deltas[0].output_tokens, 2);
}

#[test]
fn restored_deltas_go_out_again_first_and_unchanged() {
    let mut u = Unpublished::default();
    u.push("a", "", 1, true);
    u.push("b", "r", 2, true);
    let taken = u.take_append();
    u.push("c", "", 3, true);
    u.restore(taken.clone());
    assert_eq!(u.bytes(), 4);
    let again = u.take_append();
    assert_eq!(again[..2], taken[..]);
    assert_eq!(again[2].text, "c");
    assert!(u.is_empty());
}

#[test]
fn one_append_is_bounded_and_the_rest_waits_in_order() {
    let mut u = Unpublished::default();
    let big = "x".repeat(MAX_DELTA_BYTES * 20 + 3);
    u.push(&big, "", 7, true);
    for i in 0..(MAX_APPEND_DELTAS as u64 + 10) {
        u.push("t", "", 8 + i, true);
    }
    let first = u.take_append();
    assert_eq!(first.len(), 16, "1 MiB of text, then stop");
    assert!(first.iter().all(|d| d.text.len() == MAX_DELTA_BYTES));
    let mut all = first;
    while !u.is_empty() {
        let next = u.take_append();
        assert!(next.len() <= MAX_APPEND_DELTAS);
        assert!(!next.is_empty());
        all.extend(next);
    }
    let text: String = all.iter().map(|d| d.text.as_str()).collect();
    assert_eq!(text.len(), big.len() + MAX_APPEND_DELTAS + 10);
    assert!(
        all.windows(2)
            .all(|w| w[0].output_tokens <= w[1].output_tokens),
        "counts never go back"
    );
    assert_eq!(u.bytes(), 0);
}
