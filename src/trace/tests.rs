use super::*;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn well_formed_headers_name_a_remote_parent() {
    let cx = Headers::new(Some(PARENT), Some("vendor=1"))
        .context()
        .expect("a valid context");
    let span = cx.span();
    let sc = span.span_context();
    assert_eq!(
        sc.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert!(sc.is_remote());
    assert_eq!(sc.trace_state().header(), "vendor=1");
}

#[test]
fn malformed_or_oversized_headers_are_ignored() {
    for bad in [
        "",
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
    ] {
        assert!(Headers::new(Some(bad), None).context().is_none(), "{bad:?}");
    }
    let long = format!("{PARENT}{}", " ".repeat(MAX_HEADER_BYTES));
    assert!(Headers::new(Some(&long), None).context().is_none());
    assert!(Headers::new(None, Some("vendor=1")).context().is_none());
}

#[test]
fn a_stored_context_reads_back_with_its_state() {
    let cx = carried(&format!("{PARENT}\nvendor=1")).expect("valid");
    assert_eq!(cx.span().span_context().trace_state().header(), "vendor=1");
    assert!(carried(PARENT).is_some());
    assert!(carried("not a context").is_none());
}

/// A job of `waited` between submit and this attempt's start, carrying [`PARENT`].
fn job(waited: chrono::Duration) -> Job {
    let now = chrono::Utc::now();
    Job {
        id: uuid::Uuid::now_v7(),
        status: crate::job::JobStatus::Running,
        job_type: "general".into(),
        priority: crate::job::Priority::Normal,
        queue: "openai-general".into(),
        messages: vec![],
        params: Default::default(),
        streaming_mode: Default::default(),
        metadata: Default::default(),
        attempts: 1,
        max_attempts: 3,
        timeout: None,
        tags: vec![],
        batch_id: None,
        error: None,
        last_sequence: 0,
        created_at: now - waited,
        enqueued_at: now - waited,
        started_at: Some(now),
        finished_at: None,
        tenant: "t".into(),
        trace_context: Some(PARENT.into()),
    }
}

/// The trace id of `job`'s attempt span, under a subscriber that records spans.
fn attempt_trace(job: &Job) -> String {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::with_default(subscriber, || {
        let cx = attempt_span(job).context();
        cx.span().span_context().trace_id().to_string()
    })
}

#[test]
fn an_attempt_soon_after_the_submit_continues_its_trace_a_late_one_does_not() {
    let carried = "4bf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(attempt_trace(&job(chrono::Duration::seconds(2))), carried);
    let late = attempt_trace(&job(chrono::Duration::minutes(6)));
    assert_eq!(late.len(), 32);
    assert_ne!(late, carried);
}
