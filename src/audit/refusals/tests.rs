use super::*;

#[test]
fn a_flood_from_one_host_is_counted_in_one_more_row() {
    let event = |peer: &str| Event {
        id: 0,
        time: chrono::Utc::now(),
        actor: "anonymous".into(),
        tenant: "unknown".into(),
        action: "authenticate".into(),
        target: "/llmjobs.v1.JobService/GetJob".into(),
        peer: peer.into(),
        outcome: super::super::Outcome::Denied,
        detail: "invalid API key".into(),
    };
    let w = Window {
        started: Instant::now(),
        more: 499,
        last: event("10.0.0.1:4000"),
    };
    let summary = w.summary().expect("counted refusals are reported");
    assert_eq!(summary.detail, "499 more: invalid API key");
    assert_eq!(host("10.0.0.1:4000"), "10.0.0.1");
    assert_eq!(host("[::1]:4000"), "::1");
    assert_eq!(host("unknown"), "unknown");
    let quiet = Window {
        started: Instant::now(),
        more: 0,
        last: event("10.0.0.1:4000"),
    };
    assert!(quiet.summary().is_none());
}
