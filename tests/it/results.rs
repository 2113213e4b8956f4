//! Rich results: token details as the upstream reports them, streaming statistics, the
//! upstream's request id, and structured output (response_format) valid and invalid.

use llm_jobs::proto::v1::{self, MilestoneKind, job_event::Kind, response_format::Type};
use serde_json::json;

use crate::support::{
    TestApp, collect, request,
    upstream::{Reply, Split, TestUpstream},
};

/// An SSE body whose content arrives in `pieces`, then a stop chunk and a usage chunk with
/// prompt-cache and reasoning details.
fn sse_of(pieces: &[&str]) -> String {
    let mut body = String::new();
    for p in pieces {
        let chunk = json!({"id": "chatcmpl-r", "object": "chat.completion.chunk", "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]});
        body.push_str(&format!("data: {chunk}\n\n"));
    }
    let stop = json!({"id": "chatcmpl-r", "object": "chat.completion.chunk", "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    let usage = json!({"id": "chatcmpl-r", "object": "chat.completion.chunk", "model": "gpt-4o-2024-08-06",
        "choices": [], "usage": {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160,
        "prompt_tokens_details": {"cached_tokens": 64}, "completion_tokens_details": {"reasoning_tokens": 12}}});
    body.push_str(&format!(
        "data: {stop}\n\ndata: {usage}\n\ndata: [DONE]\n\n"
    ));
    body
}

fn person_schema() -> v1::ResponseFormat {
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0}
        },
        "required": ["name", "age"],
        "additionalProperties": false
    });
    let Some(prost_types::value::Kind::StructValue(schema)) =
        llm_jobs::api::convert::json_value(&schema).kind
    else {
        unreachable!("a JSON object is a Struct")
    };
    v1::ResponseFormat {
        r#type: Type::JsonSchema.into(),
        schema_name: "person".into(),
        schema: Some(schema),
        strict: true,
        description: String::new(),
    }
}

async fn run_with_format(
    app: &TestApp,
    format: v1::ResponseFormat,
) -> anyhow::Result<(Vec<v1::JobEvent>, v1::JobResult)> {
    let mut req = request("who?", "gpt-4o");
    req.generation_config
        .get_or_insert_default()
        .response_format = Some(format);
    let mut c = app.client.clone();
    let events = collect(c.submit_and_stream(req).await?.into_inner()).await?;
    let result = app.result(&events[0].job_id).await?;
    Ok((events, result))
}

fn milestone_of(events: &[v1::JobEvent], kind: MilestoneKind) -> Option<v1::Milestone> {
    events.iter().find_map(|e| match &e.kind {
        Some(Kind::Milestone(m)) if m.kind() == kind => Some(m.clone()),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_carry_token_details_stream_statistics_and_the_request_id() -> anyhow::Result<()> {
    let pieces = [
        "Queues ",
        "hold ",
        "work ",
        "until ",
        "a worker ",
        "is free.",
    ];
    let upstream = TestUpstream::start(Reply::sse(sse_of(&pieces))).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let job = app.submit(request("q", "gpt-4o")).await?;
    let mut c = app.client.clone();
    collect(
        c.stream_job(v1::StreamJobRequest {
            job_id: job.id.clone(),
            after_sequence: 0,
        })
        .await?
        .into_inner(),
    )
    .await?;
    let r = app.result(&job.id).await?;
    let u = r.usage.expect("usage");
    assert_eq!((u.input_tokens, u.output_tokens), (120, 40));
    assert_eq!(u.cached_input_tokens, Some(64));
    assert_eq!(u.reasoning_tokens, Some(12));
    let s = r.streaming_stats.expect("stream statistics");
    assert_eq!(s.chunks, pieces.len() as u64);
    assert_eq!(s.bytes, pieces.concat().len() as u64);
    let (p50, p95) = (
        s.inter_token_latency_p50_ms.expect("p50 with 6 chunks"),
        s.inter_token_latency_p95_ms.expect("p95 with 6 chunks"),
    );
    assert!(p50 >= 0.0 && p95 >= p50, "p50 {p50} p95 {p95}");
    assert_eq!(r.upstream_request_id, "req_test_1");
    assert_eq!(r.provider, "openai");
    assert!(r.attempt_errors.is_empty());
    assert!(
        r.structured_output.is_none(),
        "plain text has no structured output"
    );
    // Pricing: gpt-4o at $2.50 / $10.00 per million input / output tokens.
    let cost = r.cost_usd.expect("a known model has a cost");
    assert!(
        (cost - (120.0 * 2.5 + 40.0 * 10.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_output_is_sent_upstream_parsed_and_validated() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::slow(1, 1, 1)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;

    // Valid: the JSON arrives split across chunks.
    upstream.push_reply(
        Reply::sse(sse_of(&[r#"{"name": "#, r#""Ada", "#, r#""age": 36}"#])).split(Split::Every(7)),
    );
    let (events, r) = run_with_format(&app, person_schema()).await?;
    assert_eq!(r.status(), v1::JobStatus::Completed);
    let so = r.structured_output.expect("structured output");
    assert!(so.valid, "{so:?}");
    assert!(so.errors.is_empty());
    let json = so.json.expect("parsed JSON");
    assert_eq!(
        llm_jobs::api::convert::value_json(&json),
        json!({"name": "Ada", "age": 36})
    );
    assert!(milestone_of(&events, MilestoneKind::StructuredOutputValid).is_some());
    let sent = &upstream.requests()[0].body;
    assert_eq!(sent["response_format"]["type"], "json_schema");
    assert_eq!(sent["response_format"]["json_schema"]["name"], "person");
    assert_eq!(sent["response_format"]["json_schema"]["strict"], true);
    assert_eq!(
        sent["response_format"]["json_schema"]["schema"]["required"],
        json!(["name", "age"])
    );

    // Invalid against the schema: the job still completes, the result says why.
    upstream.push_reply(Reply::sse(sse_of(&[
        r#"{"name": "Ada", "age": -3, "x": 1}"#,
    ])));
    let (events, r) = run_with_format(&app, person_schema()).await?;
    assert_eq!(r.status(), v1::JobStatus::Completed);
    let so = r.structured_output.expect("structured output");
    assert!(!so.valid);
    assert!(so.json.is_some(), "parsed though invalid");
    let paths: Vec<&str> = so.errors.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"/age"), "{:?}", so.errors);
    assert!(
        paths.contains(&""),
        "the extra property is reported at the root: {:?}",
        so.errors
    );
    let m = milestone_of(&events, MilestoneKind::StructuredOutputInvalid).expect("milestone");
    assert!(!m.detail.is_empty());

    // Not JSON at all, for a json_object request.
    upstream.push_reply(Reply::sse(sse_of(&["Sure! Here is ", "your JSON."])));
    let (_, r) = run_with_format(
        &app,
        v1::ResponseFormat {
            r#type: Type::JsonObject.into(),
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(r.status(), v1::JobStatus::Completed);
    let so = r.structured_output.expect("structured output");
    assert!(!so.valid && so.json.is_none());
    assert!(so.errors[0].message.starts_with("not valid JSON"), "{so:?}");
    assert_eq!(
        upstream.requests()[2].body["response_format"],
        json!({"type": "json_object"})
    );
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_response_formats_are_refused_naming_the_field() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::slow(1, 1, 1)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .without_worker()
        .start()
        .await?;
    let mut c = app.client.clone();
    let broken_schema = {
        let mut f = person_schema();
        if let Some(s) = f.schema.as_mut() {
            s.fields.insert(
                "type".into(),
                llm_jobs::api::convert::json_value(&json!(12)),
            );
        }
        f
    };
    let remote_ref = {
        let mut f = person_schema();
        f.schema = match llm_jobs::api::convert::json_value(
            &json!({"$ref": "http://169.254.169.254/latest/meta-data"}),
        )
        .kind
        {
            Some(prost_types::value::Kind::StructValue(s)) => Some(s),
            _ => None,
        };
        f
    };
    let cases = [
        (
            v1::ResponseFormat {
                r#type: Type::JsonSchema.into(),
                schema_name: "x".into(),
                ..Default::default()
            },
            "generation_config.response_format.schema",
        ),
        (
            v1::ResponseFormat {
                schema_name: "has spaces".into(),
                ..person_schema()
            },
            "generation_config.response_format.schema_name",
        ),
        (broken_schema, "generation_config.response_format.schema"),
        (remote_ref, "generation_config.response_format.schema"),
        (
            v1::ResponseFormat {
                r#type: 99,
                ..Default::default()
            },
            "generation_config.response_format.type",
        ),
    ];
    for (format, field) in cases {
        let mut req = request("q", "gpt-4o");
        req.generation_config
            .get_or_insert_default()
            .response_format = Some(format);
        let e = c.submit_job(req).await.expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let details = tonic_types::StatusExt::get_details_bad_request(&e).expect("BadRequest");
        assert!(
            details.field_violations.iter().any(|v| v.field == field),
            "{field}: {details:?}"
        );
    }
    let listed = c
        .list_jobs(v1::ListJobsRequest::default())
        .await?
        .into_inner();
    assert!(listed.jobs.is_empty(), "nothing was stored");
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_models_have_no_cost_and_length_cuts_are_milestones() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::fixture("length.sse")).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    // A model the pricing table does not know, with real usage: cost absent, not zero.
    let unknown = sse_of(&["Hello ", "there."]).replace("gpt-4o-2024-08-06", "acme-llm-7b");
    upstream.push_reply(Reply::sse(unknown));
    let job = app.submit(request("q", "acme-llm-7b")).await?;
    let mut c = app.client.clone();
    collect(
        c.stream_job(v1::StreamJobRequest {
            job_id: job.id.clone(),
            after_sequence: 0,
        })
        .await?
        .into_inner(),
    )
    .await?;
    let r = app.result(&job.id).await?;
    assert_eq!(r.model, "acme-llm-7b");
    assert_eq!(r.usage.map(|u| u.output_tokens), Some(40));
    assert_eq!(r.cost_usd, None);

    // finish_reason "length": the answer was cut by max_tokens.
    let events = collect(
        c.submit_and_stream(request("long", "gpt-4o-mini"))
            .await?
            .into_inner(),
    )
    .await?;
    let m = milestone_of(&events, MilestoneKind::MaxTokensReached).expect("a length milestone");
    assert_eq!(m.attempt, 1);
    assert!(m.output_tokens > 0);
    assert!(milestone_of(&events, MilestoneKind::StructuredOutputValid).is_none());
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_result_command_exits_non_zero_for_a_job_that_did_not_complete() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::fixture("basic.sse")).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let ok = app.submit(request("fine", "gpt-4o-mini")).await?;
    app.wait_for_job(&ok.id, |j| j.status() == v1::JobStatus::Completed)
        .await?;
    let (success, stdout, stderr) = app.cli_outcome(&["result", &ok.id])?;
    assert!(success, "completed job: {stderr}");
    assert_eq!(stdout.trim_end(), app.result(&ok.id).await?.content);

    // 400 is permanent: the job fails on its first attempt.
    upstream.push_reply(Reply::Status {
        status: 400,
        error_type: "invalid_request_error",
        retry_after_secs: None,
    });
    let bad = app.submit(request("refused", "gpt-4o-mini")).await?;
    app.wait_for_job(&bad.id, |j| j.status() == v1::JobStatus::Failed)
        .await?;
    let (success, _, stderr) = app.cli_outcome(&["result", &bad.id])?;
    assert!(!success, "failed job must exit non-zero: {stderr}");
    assert!(stderr.contains("upstream_invalid_request"), "{stderr}");
    assert!(stderr.contains("did not complete: failed"), "{stderr}");
    app.stop().await
}
