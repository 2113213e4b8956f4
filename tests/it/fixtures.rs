//! The shared fixture streams, served byte for byte (and split at awkward offsets), end up as
//! the documented results (`tests/fixtures/openai-sse/README.md`).

use std::time::Duration;

use llm_jobs::proto::v1::{self, job_event::Kind};

use crate::support::{
    TestApp, assert_well_formed, collect, request, text_of,
    upstream::{Reply, TestUpstream},
};

const BASIC: &str = "The queue is a line of work waiting its turn.";

struct Case {
    fixture: &'static str,
    chunk_bytes: usize,
    content: &'static str,
    finish_reason: &'static str,
    /// (input, output, total) when the stream reports usage.
    usage: Option<(u64, u64, u64)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_streams_become_the_documented_results() -> anyhow::Result<()> {
    let cases = [
        Case {
            fixture: "basic.sse",
            chunk_bytes: 4096,
            content: BASIC,
            finish_reason: "stop",
            usage: None,
        },
        Case {
            fixture: "with-usage.sse",
            chunk_bytes: 4096,
            content: BASIC,
            finish_reason: "stop",
            usage: Some((19, 11, 30)),
        },
        Case {
            fixture: "keepalive-comments.sse",
            chunk_bytes: 13,
            content: BASIC,
            finish_reason: "stop",
            usage: None,
        },
        Case {
            fixture: "crlf.sse",
            chunk_bytes: 5,
            content: BASIC,
            finish_reason: "stop",
            usage: None,
        },
        Case {
            fixture: "length.sse",
            chunk_bytes: 4096,
            content: "The queue is a line of",
            finish_reason: "length",
            usage: None,
        },
        Case {
            fixture: "unicode.sse",
            chunk_bytes: 7,
            content: "Grüße 👋🏽 你好 — naïve café 𝔘𝔫𝔦 ✓",
            finish_reason: "stop",
            usage: None,
        },
        Case {
            fixture: "reasoning.sse",
            chunk_bytes: 64,
            content: "Answer: 42",
            finish_reason: "stop",
            usage: None,
        },
    ];
    let upstream = TestUpstream::start(Reply::fixture("basic.sse")).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    for case in &cases {
        upstream.push_reply(Reply::Fixture {
            name: case.fixture,
            chunk_bytes: case.chunk_bytes,
            delay: Duration::from_millis(1),
        });
        let mut client = app.client.clone();
        let stream = client
            .submit_and_stream(request("Explain a queue.", "gpt-4o-mini"))
            .await?
            .into_inner();
        let events = collect(stream).await?;
        assert_well_formed(&events, 0);
        assert_eq!(
            text_of(&events),
            case.content,
            "{}: streamed text",
            case.fixture
        );
        let job_id = &events[0].job_id;
        let result = app.result(job_id).await?;
        assert_eq!(
            result.status(),
            v1::JobStatus::Completed,
            "{}",
            case.fixture
        );
        assert_eq!(
            result.content, case.content,
            "{}: stored content",
            case.fixture
        );
        assert_eq!(result.finish_reason, case.finish_reason, "{}", case.fixture);
        assert_eq!(result.provider, "openai");
        assert!(!result.simulated);
        assert_eq!(
            result.model, "gpt-4o-mini-2024-07-18",
            "{}: model as reported",
            case.fixture
        );
        let usage = result.usage.expect("usage");
        match case.usage {
            Some((i, o, t)) => {
                assert_eq!(
                    (usage.input_tokens, usage.output_tokens, usage.total_tokens),
                    (i, o, t)
                );
                assert!(!usage.estimated);
            }
            None => {
                assert!(
                    usage.estimated,
                    "{}: usage not reported, so estimated",
                    case.fixture
                );
                assert!(usage.output_tokens > 0);
            }
        }
        assert!(result.time_to_first_token_ms.is_some(), "{}", case.fixture);
        if case.fixture == "reasoning.sse" {
            assert!(!result.reasoning_content.is_empty());
            assert!(!result.content.contains(&result.reasoning_content));
        }
        let completed = events.last().and_then(|e| e.kind.clone());
        assert!(
            matches!(completed, Some(Kind::Completed(ref c)) if c.finish_reason == case.finish_reason),
            "{}: completed event {completed:?}",
            case.fixture
        );
    }

    // What went upstream: one streaming request per job, usage asked for, the key sent.
    let requests = upstream.requests();
    assert_eq!(
        requests.len(),
        cases.len(),
        "exactly one upstream request per job"
    );
    let first = &requests[0];
    assert_eq!(first.body["stream"], true);
    assert_eq!(first.body["stream_options"]["include_usage"], true);
    assert_eq!(first.body["model"], "gpt-4o-mini");
    assert_eq!(first.body["messages"][0]["role"], "user");
    assert_eq!(first.body["messages"][0]["content"], "Explain a queue.");
    assert_eq!(first.authorization.as_deref(), Some("Bearer sk-test-key"));
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sim_model_streams_deterministic_text_marked_simulated() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let mut texts = Vec::new();
    for _ in 0..2 {
        let mut client = app.client.clone();
        let stream = client
            .submit_and_stream(request("same prompt", "sim"))
            .await?
            .into_inner();
        let events = collect(stream).await?;
        assert_well_formed(&events, 0);
        let result = app.result(&events[0].job_id).await?;
        assert!(result.simulated);
        assert_eq!(result.provider, "sim");
        assert_eq!(result.content, text_of(&events));
        texts.push(result.content);
    }
    assert!(!texts[0].is_empty());
    assert_eq!(texts[0], texts[1], "same prompt, same simulated text");
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_is_tokens_times_price_and_absent_when_unknown() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::fixture("with-usage.sse")).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let run = |model: &'static str| {
        let mut client = app.client.clone();
        async move {
            let s = client
                .submit_and_stream(request("price me", model))
                .await?
                .into_inner();
            let events = collect(s).await?;
            Ok::<_, anyhow::Error>(events[0].job_id.clone())
        }
    };
    // Reported model gpt-4o-mini-2024-07-18, 19 input and 11 output tokens, $0.15 / $0.60 per M.
    let known = app.result(&run("gpt-4o-mini").await?).await?;
    let cost = known.cost_usd.expect("a known model has a cost");
    assert!(
        (cost - (19.0 * 0.15 + 11.0 * 0.60) / 1e6).abs() < 1e-12,
        "{cost}"
    );
    // Estimated usage (no usage in the stream): no cost rather than a wrong one.
    upstream.push_reply(Reply::fixture("basic.sse"));
    assert_eq!(app.result(&run("gpt-4o-mini").await?).await?.cost_usd, None);
    // Simulated: never a cost.
    assert_eq!(app.result(&run("sim").await?).await?.cost_usd, None);
    app.stop().await
}
