use super::*;

fn rules() -> Rules {
    Rules {
        job_types: vec!["general".into()],
        default_model: "sim".into(),
        max_attempts: 3,
        limits: crate::job::Limits::default(),
        upstream_configured: false,
    }
}

fn ok(prompt: &str) -> v1::SubmitJobRequest {
    v1::SubmitJobRequest {
        prompt: prompt.into(),
        ..Default::default()
    }
}

fn fields(req: v1::SubmitBatchRequest, max: usize) -> Vec<String> {
    batch(req, &rules(), max)
        .expect_err("invalid")
        .into_iter()
        .map(|v| v.field)
        .collect()
}

#[test]
fn batch_labels_may_not_hold_terminal_escapes_or_bidi_controls() {
    let base = || v1::SubmitBatchRequest {
        requests: vec![ok("p")],
        ..Default::default()
    };
    let mut r = base();
    r.display_name = "\u{202e}evil".into();
    assert_eq!(fields(r, 10), ["display_name"]);
    let mut r = base();
    r.metadata.insert("k\u{1b}[31m".into(), "v".into());
    assert_eq!(fields(r, 10), ["metadata"]);
    let mut r = base();
    r.metadata.insert("k".into(), "v\u{7}".into());
    assert_eq!(fields(r, 10), ["metadata"]);
    let mut r = base();
    r.idempotency_key = "\u{202e}key".into();
    assert_eq!(fields(r, 10), ["idempotency_key"]);
    // Line breaks and tabs stay allowed in values.
    let mut r = base();
    r.metadata.insert("note".into(), "two\tlines\nhere".into());
    assert!(batch(r, &rules(), 10).is_ok());
}

#[test]
fn valid_batches_keep_request_order_in_time_ordered_ids() {
    let (batch, jobs) = batch(
        v1::SubmitBatchRequest {
            requests: (0..20).map(|i| ok(&format!("p{i}"))).collect(),
            idempotency_key: "k".into(),
            ..Default::default()
        },
        &rules(),
        20,
    )
    .expect("valid");
    assert_eq!(batch.idempotency_key.as_deref(), Some("k"));
    let prompts: Vec<_> = jobs.iter().map(|j| j.messages[0].content.clone()).collect();
    assert_eq!(
        prompts,
        (0..20).map(|i| format!("p{i}")).collect::<Vec<_>>()
    );
    assert!(jobs.windows(2).all(|w| w[0].id < w[1].id));
}

#[test]
fn violations_name_the_request_and_per_job_keys_are_refused() {
    let mut bad = ok("");
    bad.priority = 42;
    let mut keyed = ok("x");
    keyed.idempotency_key = "k".into();
    let got = fields(
        v1::SubmitBatchRequest {
            requests: vec![ok("a"), keyed, bad],
            ..Default::default()
        },
        10,
    );
    assert_eq!(
        got,
        [
            "requests[1].idempotency_key",
            "requests[2].prompt",
            "requests[2].priority"
        ]
    );
}

#[test]
fn empty_oversized_and_very_bad_batches_are_refused_briefly() {
    assert_eq!(fields(v1::SubmitBatchRequest::default(), 10), ["requests"]);
    let three = v1::SubmitBatchRequest {
        requests: vec![ok("a"), ok("b"), ok("c")],
        ..Default::default()
    };
    assert_eq!(fields(three, 2), ["requests"]);
    let all_bad = v1::SubmitBatchRequest {
        requests: (0..1000).map(|_| ok("")).collect(),
        ..Default::default()
    };
    let got = fields(all_bad, 1000);
    assert_eq!(got.len(), MAX_REPORTED_VIOLATIONS + 1);
    assert_eq!(got.last().map(String::as_str), Some("requests"));
}
