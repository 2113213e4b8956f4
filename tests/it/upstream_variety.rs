//! What real OpenAI-compatible servers send (Azure OpenAI, OpenRouter, vLLM, SGLang, Ollama,
//! llama.cpp, LM Studio, Gemini's and DeepSeek's compatible endpoints, proxies in front of them)
//! ends as it should: odd but healthy streams complete, errors inside the stream fail as
//! classified, non-SSE answers become clear upstream errors, and every attempt sends exactly
//! one upstream request.
//!
//! Each case has its own model name; the test upstream routes by model, so the cases of a test
//! run concurrently against one service and one upstream.

use std::time::Duration;

use futures::future::join_all;
use llm_jobs::proto::v1::{self, job_event::Kind};

use crate::support::{
    TestApp, assert_well_formed, collect, request, text_of,
    upstream::{Reply, Split, TestUpstream},
};

const BASIC: &str = "The queue is a line of work waiting its turn.";

/// Usage the result must carry.
#[derive(Clone, Copy, Debug)]
enum Usage {
    /// As the upstream reported it (input, output, total).
    Reported(u64, u64, u64),
    /// Not reported: estimated from the number of streamed chunks.
    Estimated(u64),
}

#[derive(Clone, Debug)]
enum Expect {
    Completed {
        content: &'static str,
        reasoning: &'static str,
        finish_reason: &'static str,
        usage: Option<Usage>,
        /// The model the result names (the upstream's, else the requested one).
        model: Option<&'static str>,
    },
    Failed {
        code: &'static str,
        /// Retryable errors use every attempt, permanent ones one.
        retryable: bool,
        /// A piece of the provider's message the error must carry.
        message: &'static str,
    },
}

struct Case {
    model: String,
    reply: Reply,
    expect: Expect,
}

fn completed(content: &'static str, finish_reason: &'static str) -> Expect {
    Expect::Completed {
        content,
        reasoning: "",
        finish_reason,
        usage: None,
        model: None,
    }
}

fn failed(code: &'static str, retryable: bool, message: &'static str) -> Expect {
    Expect::Failed {
        code,
        retryable,
        message,
    }
}

fn case(model: &str, reply: Reply, expect: Expect) -> Case {
    Case {
        model: model.to_owned(),
        reply,
        expect,
    }
}

fn sse(body: &'static str) -> Reply {
    Reply::sse(body)
}

/// Runs every case concurrently on one service (`max_attempts` attempts per job) and reports
/// all the cases that went wrong at once.
async fn check_all(max_attempts: u32, cases: Vec<Case>) -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::raw(
        599,
        Some("text/plain"),
        "no route for this model",
    ))
    .await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .max_attempts(max_attempts)
        .concurrency(32)
        .start()
        .await?;
    for c in &cases {
        upstream.route(&c.model, c.reply.clone());
    }
    let outcomes = join_all(
        cases
            .iter()
            .map(|c| run_case(&app, &upstream, c, max_attempts)),
    )
    .await;
    let failures: Vec<String> = outcomes
        .into_iter()
        .filter_map(Result::err)
        .map(|e| format!("{e:#}"))
        .collect();
    app.stop().await?;
    anyhow::ensure!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    Ok(())
}

/// Submits one job with `SubmitAndStream`, follows it to its end and checks the stream, the
/// stored result and the upstream requests.
async fn run_case(
    app: &TestApp,
    upstream: &TestUpstream,
    case: &Case,
    max_attempts: u32,
) -> anyhow::Result<()> {
    let model = case.model.as_str();
    let mut client = app.client.clone();
    let stream = client
        .submit_and_stream(request("Say something.", model))
        .await?
        .into_inner();
    let events = collect(stream).await?;
    assert_well_formed(&events, 0);
    let job_id = &events[0].job_id;
    let result = app.result(job_id).await?;
    let requests = upstream.requests_for(model).len();
    anyhow::ensure!(
        requests == result.attempts as usize,
        "{model}: {requests} upstream requests for {} attempts",
        result.attempts
    );
    let terminal = events.last().and_then(|e| e.kind.clone());
    let error = result.error.clone().unwrap_or_default();
    match &case.expect {
        Expect::Completed {
            content,
            reasoning,
            finish_reason,
            usage,
            model: served,
        } => {
            anyhow::ensure!(
                result.status() == v1::JobStatus::Completed,
                "{model}: expected COMPLETED, got {:?} ({error:?})",
                result.status()
            );
            anyhow::ensure!(
                result.attempts == 1,
                "{model}: {} attempts",
                result.attempts
            );
            anyhow::ensure!(
                result.content == *content,
                "{model}: content {:?}",
                result.content
            );
            anyhow::ensure!(
                text_of(&events) == *content,
                "{model}: streamed text {:?}",
                text_of(&events)
            );
            anyhow::ensure!(
                result.reasoning_content == *reasoning,
                "{model}: reasoning {:?}",
                result.reasoning_content
            );
            let streamed_reasoning: String = events
                .iter()
                .filter_map(|e| match &e.kind {
                    Some(Kind::TokenDelta(d)) => Some(d.reasoning_text.as_str()),
                    _ => None,
                })
                .collect();
            anyhow::ensure!(
                streamed_reasoning == *reasoning,
                "{model}: streamed reasoning {streamed_reasoning:?}"
            );
            anyhow::ensure!(
                result.finish_reason == *finish_reason,
                "{model}: finish reason {:?}",
                result.finish_reason
            );
            anyhow::ensure!(
                matches!(&terminal, Some(Kind::Completed(c)) if c.finish_reason == *finish_reason),
                "{model}: terminal event {terminal:?}"
            );
            let flagged = events.iter().any(|e| {
                matches!(&e.kind, Some(Kind::Milestone(m))
                    if m.kind() == v1::MilestoneKind::ReasoningOnly)
            });
            anyhow::ensure!(
                flagged == (content.is_empty() && !reasoning.is_empty()),
                "{model}: reasoning-only milestone {flagged}"
            );
            let got = result.usage.unwrap_or_default();
            match usage {
                Some(Usage::Reported(i, o, t)) => anyhow::ensure!(
                    (
                        got.input_tokens,
                        got.output_tokens,
                        got.total_tokens,
                        got.estimated
                    ) == (*i, *o, *t, false),
                    "{model}: usage {got:?}"
                ),
                Some(Usage::Estimated(o)) => anyhow::ensure!(
                    (got.input_tokens, got.output_tokens, got.estimated) == (0, *o, true),
                    "{model}: usage {got:?}"
                ),
                None => {}
            }
            let served = served.unwrap_or(model);
            anyhow::ensure!(
                result.model == served,
                "{model}: result model {:?}",
                result.model
            );
        }
        Expect::Failed {
            code,
            retryable,
            message,
        } => {
            anyhow::ensure!(
                result.status() == v1::JobStatus::Failed,
                "{model}: expected FAILED, got {:?} (content {:?})",
                result.status(),
                result.content
            );
            anyhow::ensure!(error.code == *code, "{model}: error {error:?}");
            anyhow::ensure!(
                error.message.contains(message),
                "{model}: error message {:?} lacks {message:?}",
                error.message
            );
            let attempts = if *retryable { max_attempts } else { 1 };
            anyhow::ensure!(
                result.attempts == attempts,
                "{model}: {} attempts, expected {attempts} ({error:?})",
                result.attempts
            );
            // An empty answer is flagged after the upstream's finish_reason arrived; the worker
            // keeps that finish_reason in the failed partial result.
            anyhow::ensure!(
                result.finish_reason.is_empty() || *code == "upstream_empty_answer",
                "{model}: finish reason {:?}",
                result.finish_reason
            );
            anyhow::ensure!(
                matches!(&terminal, Some(Kind::Failed(f))
                    if f.error.as_ref().is_some_and(|e| e.code == *code)),
                "{model}: terminal event {terminal:?}"
            );
            let will_retry: Vec<bool> = events
                .iter()
                .filter_map(|e| match &e.kind {
                    Some(Kind::AttemptFailed(f)) => Some(f.will_retry),
                    _ => None,
                })
                .collect();
            let mut expected = vec![true; attempts as usize - 1];
            expected.push(false);
            anyhow::ensure!(
                will_retry == expected,
                "{model}: attempt failures {will_retry:?}"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn odd_but_healthy_streams_complete() -> anyhow::Result<()> {
    check_all(
        2,
        vec![
            case(
                "v-envelope-missing",
                sse(concat!(
                    "data: {\"choices\":[{\"delta\":{\"content\":\"Hello\"}}]}\n\n",
                    "data: {\"choices\":[{\"delta\":{\"content\":\" world\"}}]}\n\n",
                    "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
                    "data: [DONE]\n\n",
                )),
                Expect::Completed {
                    content: "Hello world",
                    reasoning: "",
                    finish_reason: "stop",
                    usage: Some(Usage::Estimated(2)),
                    model: None,
                },
            ),
            case(
                "v-envelope-null",
                sse(concat!(
                    "data: {\"id\":\"\",\"object\":\"\",\"created\":null,\"model\":null,\"system_fingerprint\":null,\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
                    "data: {\"id\":null,\"object\":null,\"created\":\"now\",\"model\":\"\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
                    "data: {\"id\":7,\"created\":1.5,\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
                    "data: [DONE]\n\n",
                )),
                completed("Hi", "stop"),
            ),
            case(
                "v-served-model",
                sse(concat!(
                    "data: {\"model\":\"qwen3-8b-awq\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n",
                    "data: {\"model\":\"\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
                    "data: [DONE]\n\n",
                )),
                Expect::Completed {
                    content: "Hi",
                    reasoning: "",
                    finish_reason: "stop",
                    usage: None,
                    model: Some("qwen3-8b-awq"),
                },
            ),
            case(
                "v-role-and-finish-odd",
                sse(concat!(
                    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"\",\"content\":\"A\"},\"finish_reason\":\"\"}]}\n\n",
                    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"model\",\"content\":\"B\"},\"finish_reason\":\"\"}]}\n\n",
                    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":null},\"finish_reason\":\"end_turn\"}]}\n\n",
                    "data: [DONE]\n\n",
                )),
                completed("AB", "end_turn"),
            ),
            case(
                "v-azure-no-delta",
                sse(concat!(
                    "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":\"safe\"}}}]}\n\n",
                    "data: {\"choices\":[{\"content_filter_results\":{},\"delta\":{\"content\":\"\",\"role\":\"assistant\"},\"finish_reason\":null,\"index\":0}],\"id\":\"chatcmpl-a\",\"model\":\"gpt-4o-2024-08-06\",\"object\":\"chat.completion.chunk\"}\n\n",
                    "data: {\"choices\":[{\"content_filter_results\":{\"hate\":{\"filtered\":false}},\"delta\":{\"content\":\"Safe\"},\"finish_reason\":null,\"index\":0}],\"model\":\"gpt-4o-2024-08-06\"}\n\n",
                    "data: {\"choices\":[{\"content_filter_offsets\":{\"check_offset\":0},\"content_filter_results\":{\"hate\":{\"filtered\":false}},\"finish_reason\":null,\"index\":0}],\"model\":\"\"}\n\n",
                    "data: {\"choices\":[{\"content_filter_results\":{},\"delta\":{},\"finish_reason\":\"stop\",\"index\":0}],\"model\":\"gpt-4o-2024-08-06\"}\n\n",
                    "data: [DONE]\n\n",
                )),
                Expect::Completed {
                    content: "Safe",
                    reasoning: "",
                    finish_reason: "stop",
                    usage: None,
                    model: Some("gpt-4o-2024-08-06"),
                },
            ),
            case(
                "v-no-choices",
                sse(concat!(
                    "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1}\n\n",
                    "data: {\"choices\":[{\"delta\":{\"content\":\"One\"}}]}\n\n",
                    "data: {\"choices\":[]}\n\n",
                    "data: {\"choices\":null}\n\n",
                    "data: {\"choices\":[{\"delta\":{\"content\":\" two\"},\"finish_reason\":\"stop\"}]}\n\n",
                    "data: [DONE]\n\n",
                )),
                completed("One two", "stop"),
            ),
            case(
                "v-usage-empty",
                sse(concat!(
                    "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":{}}\n\n",
                    "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}],\"usage\":null}\n\n",
                    "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{}}\n\n",
                    "data: {\"choices\":[],\"usage\":{}}\n\n",
                    "data: [DONE]\n\n",
                )),
                Expect::Completed {
                    content: "ab",
                    reasoning: "",
                    finish_reason: "stop",
                    usage: Some(Usage::Estimated(2)),
                    model: None,
                },
            ),
            case(
                "v-usage-alone",
                sse(concat!(
                    "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
                    "data: {\"choices\":[{\"delta\":{\"content\":\"b\"},\"finish_reason\":\"stop\"}]}\n\n",
                    "data: {\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n",
                    "data: [DONE]\n\n",
                )),
                Expect::Completed {
                    content: "ab",
                    reasoning: "",
                    finish_reason: "stop",
                    usage: Some(Usage::Reported(5, 2, 7)),
                    model: None,
                },
            ),
            case(
                "v-reasoning-content",
                sse(concat!(
                    "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":null,\"reasoning_content\":\"\"}}]}\n\n",
                    "data: {\"choices\":[{\"delta\":{\"content\":null,\"reasoning_content\":\"Think\"}}]}\n\n",
                    "data: {\"choices\":[{\"delta\":{\"content\":null,\"reasoning_content\":\".\"}}]}\n\n",
                    "data: {\"choices\":[{\"delta\":{\"content\":\"\\n\\n42\",\"reasoning_content\":null}}]}\n\n",
                    "data: {\"choices\":[{\"delta\":{\"content\":\"\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13,\"completion_tokens_details\":{\"reasoning_tokens\":2}}}\n\n",
                    "data: [DONE]\n\n",
                )),
                Expect::Completed {
                    content: "\n\n42",
                    reasoning: "Think.",
                    finish_reason: "stop",
                    usage: Some(Usage::Reported(9, 4, 13)),
                    model: None,
                },
            ),
            case(
                "v-reasoning-openrouter",
                sse(concat!(
                    ": OPENROUTER PROCESSING\n\n",
                    "data: {\"id\":\"gen-1\",\"provider\":\"X\",\"model\":\"deepseek/deepseek-r1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"reasoning\":\"Hmm\",\"reasoning_details\":[{\"type\":\"reasoning.text\",\"text\":\"Hmm\"}]},\"finish_reason\":null,\"native_finish_reason\":null,\"logprobs\":null}]}\n\n",
                    "data: {\"id\":\"gen-1\",\"model\":\"deepseek/deepseek-r1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Yes\",\"reasoning\":null},\"finish_reason\":null}]}\n\n",
                    "data: {\"id\":\"gen-1\",\"model\":\"deepseek/deepseek-r1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":\"stop\",\"native_finish_reason\":\"stop\"}]}\n\n",
                    "data: {\"id\":\"gen-1\",\"model\":\"deepseek/deepseek-r1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":3,\"total_tokens\":7,\"cost\":0.0001}}\n\n",
                    "data: [DONE]\n\n",
                )),
                Expect::Completed {
                    content: "Yes",
                    reasoning: "Hmm",
                    finish_reason: "stop",
                    usage: Some(Usage::Reported(4, 3, 7)),
                    model: Some("deepseek/deepseek-r1"),
                },
            ),
            case(
                "v-error-null-and-nan",
                sse(concat!(
                    "data: {\"error\":null,\"choices\":[{\"delta\":{\"content\":\"fine\"},\"logprobs\":{\"content\":[{\"token\":\"fine\",\"logprob\":-Infinity}]}}]}\n\n",
                    "data: {\"error\":{},\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2,\"cost\":NaN}}\n\n",
                    "data: [DONE]\n\n",
                )),
                Expect::Completed {
                    content: "fine",
                    reasoning: "",
                    finish_reason: "stop",
                    usage: Some(Usage::Reported(1, 1, 2)),
                    model: None,
                },
            ),
            case(
                "v-data-without-space",
                sse(concat!(
                    "data:{\"choices\":[{\"delta\":{\"content\":\"tight\"}}]}\n\n",
                    "data:{\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
                    "data:[DONE]\n\n",
                )),
                completed("tight", "stop"),
            ),
            case(
                "v-keepalives",
                sse(concat!(
                    ": ping\n\n",
                    ":\n\n",
                    "data:\n\n",
                    "data: \n\n",
                    "data: ping\n\n",
                    "data: \"keep-alive\"\n\n",
                    "data: 0\n\n",
                    "data: []\n\n",
                    "data: {}\n\n",
                    "event: ping\ndata: {}\n\n",
                    "id: 3\nretry: 1000\n\n",
                    "data: {\"choices\":[{\"delta\":{\"content\":\"kept\"}}]}\n\n",
                    ": - 2025-01-01 keep-alive\n\n",
                    "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
                    "data: [DONE]\n\n",
                )),
                completed("kept", "stop"),
            ),
            case(
                "v-no-done-after-finish",
                sse(concat!(
                    "data: {\"choices\":[{\"delta\":{\"content\":\"done\"}}]}\n\n",
                    "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
                )),
                completed("done", "length"),
            ),
            case(
                "v-last-line-unended",
                sse(concat!(
                    "data: {\"choices\":[{\"delta\":{\"content\":\"edge\"}}]}\n\n",
                    "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}",
                )),
                // The SSE spec discards an event not ended by a blank line, so the finish is
                // lost: a retryable truncation, never a silent success.
                failed("upstream_stream_truncated", true, "ended early"),
            ),
            case(
                "v-bare-cr",
                sse(concat!(
                    "data: {\"choices\":[{\"delta\":{\"content\":\"c\"}}]}\r\r",
                    "data: {\"choices\":[{\"delta\":{\"content\":\"r\"},\"finish_reason\":\"stop\"}]}\r\r",
                    "data: [DONE]\r\r",
                )),
                completed("cr", "stop"),
            ),
            case(
                "v-two-chunks-one-event",
                sse(concat!(
                    "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n",
                    "data: {\"choices\":[{\"delta\":{\"content\":\"y\"},\"finish_reason\":\"stop\"}]}\n\n",
                )),
                completed("xy", "stop"),
            ),
            case(
                "v-mislabelled-text-plain",
                Reply::raw(
                    200,
                    Some("text/plain; charset=utf-8"),
                    concat!(
                        "data: {\"choices\":[{\"delta\":{\"content\":\"plain\"}}]}\n\n",
                        "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
                        "data: [DONE]\n\n",
                    ),
                ),
                completed("plain", "stop"),
            ),
            case(
                "v-no-content-type",
                Reply::raw(
                    200,
                    None,
                    "data: {\"choices\":[{\"delta\":{\"content\":\"bare\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
                ),
                completed("bare", "stop"),
            ),
            case(
                "v-one-byte-writes",
                sse(concat!(
                    "data: {\"choices\":[{\"delta\":{\"content\":\"Grüße 👋🏽\"}}]}\r\n\r\n",
                    "data:{\"choices\":[{\"delta\":{\"content\":\" 你好\"},\"finish_reason\":\"stop\"}]}\r\n\r\n",
                    "data: [DONE]\r\n\r\n",
                ))
                .split(Split::Every(1)),
                completed("Grüße 👋🏽 你好", "stop"),
            ),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn errors_inside_the_stream_fail_as_classified() -> anyhow::Result<()> {
    check_all(
        2,
        vec![
            case(
                "s-error-without-choices",
                sse(concat!(
                    "data: {\"choices\":[{\"delta\":{\"content\":\"partial\"}}]}\n\n",
                    "data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n",
                )),
                failed(
                    "upstream_server_error",
                    true,
                    "server_error: The server had an error",
                ),
            ),
            case(
                "s-error-with-choices",
                sse(concat!(
                    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"partial\"},\"finish_reason\":null}]}\n\n",
                    "data: {\"id\":\"gen-1\",\"object\":\"chat.completion.chunk\",\"error\":{\"code\":\"server_error\",\"message\":\"Provider disconnected\"},\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":\"error\"}]}\n\n",
                    "data: [DONE]\n\n",
                )),
                failed("upstream_server_error", true, "Provider disconnected"),
            ),
            case(
                "s-finish-reason-error",
                sse(concat!(
                    "data: {\"choices\":[{\"delta\":{\"content\":\"partial\"}}]}\n\n",
                    "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"error\"}]}\n\n",
                    "data: [DONE]\n\n",
                )),
                failed("upstream_server_error", true, "finish_reason \"error\""),
            ),
            case(
                "s-overloaded",
                sse(
                    "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
                ),
                failed("upstream_server_error", true, "overloaded_error: Overloaded"),
            ),
            case(
                "s-rate-limited",
                sse(concat!(
                    "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
                    "data: {\"error\":{\"message\":\"Rate limit reached for requests\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}\n\n",
                )),
                failed("upstream_rate_limited", true, "Rate limit reached"),
            ),
            case(
                "s-context-length",
                sse(
                    "data: {\"error\":{\"message\":\"This model's maximum context length is 8192 tokens.\",\"type\":\"invalid_request_error\",\"param\":\"messages\",\"code\":\"context_length_exceeded\"}}\n\n",
                ),
                failed("upstream_invalid_request", false, "maximum context length"),
            ),
            case(
                "s-vllm-bad-request",
                sse(
                    "data: {\"object\":\"error\",\"message\":\"max_tokens must be at least 1, got 0.\",\"type\":\"BadRequestError\",\"param\":null,\"code\":400}\n\n",
                ),
                failed("upstream_invalid_request", false, "max_tokens must be at least 1"),
            ),
            case(
                "s-content-filter",
                sse(concat!(
                    "data: {\"choices\":[{\"delta\":{\"content\":\"Sure\"},\"index\":0}]}\n\n",
                    "data: {\"error\":{\"message\":\"The response was filtered due to the prompt triggering content management policy.\",\"type\":null,\"param\":\"prompt\",\"code\":\"content_filter\",\"status\":400,\"innererror\":{\"code\":\"ResponsibleAIPolicyViolation\"}}}\n\n",
                )),
                failed("upstream_invalid_request", false, "content management policy"),
            ),
            case(
                "s-error-string",
                sse(concat!(
                    "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
                    "data: {\"error\":\"model runner has unexpectedly stopped\"}\n\n",
                )),
                failed("upstream_server_error", true, "model runner has unexpectedly stopped"),
            ),
            case(
                "s-llamacpp-error-line",
                sse(concat!(
                    "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
                    "error: {\"code\":400,\"message\":\"the request exceeds the available context size, try increasing it\",\"type\":\"exceed_context_size_error\",\"n_prompt_tokens\":5000,\"n_ctx\":4096}\n\n",
                )),
                // async-openai's SSE parser ignores the non-standard `error:` field (as the SSE
                // spec says to), so this is a stream without a finish: a retryable failure,
                // never a success.
                failed("upstream_stream_truncated", true, "ended early"),
            ),
            case(
                "s-error-event",
                sse("event: error\ndata: {\"message\":\"upstream timed out\"}\n\n"),
                // The event name is not visible through async-openai's streaming call; the
                // payload has no `error` key, so the stream ends without a finish.
                failed("upstream_stream_truncated", true, "ended early"),
            ),
            case(
                "s-malformed-chunk",
                sse(concat!(
                    "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
                    "data: {\"choices\":[{\"delta\":{\"content\":\"b\"\n\n",
                    "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
                )),
                failed("upstream_malformed_chunk", true, "content"),
            ),
            case(
                "s-truncated",
                sse("data: {\"choices\":[{\"delta\":{\"content\":\"cut\"}}]}\n\n"),
                failed("upstream_stream_truncated", true, "no finish_reason"),
            ),
            case(
                "s-done-without-finish",
                sse("data: {\"choices\":[{\"delta\":{\"content\":\"cut\"}}]}\n\ndata: [DONE]\n\n"),
                failed("upstream_stream_truncated", true, "no finish_reason"),
            ),
            case(
                "s-empty-body",
                sse(""),
                failed("upstream_stream_truncated", true, "no finish_reason"),
            ),
            case(
                "s-only-keepalives",
                sse(": ping\n\n: ping\n\n"),
                failed("upstream_stream_truncated", true, "no finish_reason"),
            ),
            case(
                "s-reasoning-only-stop",
                sse(concat!(
                    "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"The answer is 4.\"}}]}\n\n",
                    "data: {\"choices\":[{\"delta\":{\"content\":\"\"},\"finish_reason\":\"stop\"}]}\n\n",
                    "data: [DONE]\n\n",
                )),
                // Completes (the same request would get the same answer), flagged.
                Expect::Completed {
                    content: "",
                    reasoning: "The answer is 4.",
                    finish_reason: "stop",
                    usage: None,
                    model: None,
                },
            ),
            case(
                "s-reasoning-only-length",
                sse(concat!(
                    "data: {\"choices\":[{\"delta\":{\"reasoning\":\"Let me think step by step\"}}]}\n\n",
                    "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
                    "data: [DONE]\n\n",
                )),
                failed("upstream_empty_answer", false, "finish_reason \"length\""),
            ),
            case(
                "s-connection-dropped",
                Reply::DropAfter {
                    name: "basic.sse",
                    after_bytes: 700,
                },
                failed("upstream_connection_failed", true, "error decoding response body"),
            ),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn non_sse_answers_are_clear_upstream_errors() -> anyhow::Result<()> {
    check_all(
        2,
        vec![
            case(
                "h-500-json",
                Reply::raw(
                    500,
                    Some("application/json"),
                    r#"{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}"#,
                ),
                failed("upstream_server_error", true, "server_error: The server had an error"),
            ),
            case(
                "h-502-nginx-html",
                Reply::raw(
                    502,
                    Some("text/html"),
                    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.25.3</center>\r\n</body>\r\n</html>\r\n",
                ),
                failed("upstream_server_error", true, "502 Bad Gateway"),
            ),
            case(
                "h-503-envoy-text",
                Reply::raw(
                    503,
                    Some("text/plain"),
                    "upstream connect error or disconnect/reset before headers. reset reason: overflow",
                ),
                failed("upstream_server_error", true, "upstream connect error"),
            ),
            case(
                "h-429",
                Reply::Status {
                    status: 429,
                    error_type: "rate_limit_error",
                    retry_after_secs: Some(0),
                },
                failed("upstream_rate_limited", true, "HTTP 429"),
            ),
            case(
                "h-429-insufficient-quota",
                Reply::raw(
                    429,
                    Some("application/json"),
                    r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
                ),
                failed("upstream_invalid_request", false, "exceeded your current quota"),
            ),
            case(
                "h-400-context-length",
                Reply::raw(
                    400,
                    Some("application/json"),
                    r#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
                ),
                failed("upstream_invalid_request", false, "maximum context length"),
            ),
            case(
                "h-401",
                Reply::raw(
                    401,
                    Some("application/json; charset=utf-8"),
                    r#"{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
                ),
                failed("upstream_auth_failed", false, "Incorrect API key"),
            ),
            case(
                "h-404-html",
                Reply::raw(404, Some("text/html"), "<!DOCTYPE html><h1>Not Found</h1>"),
                failed("upstream_invalid_request", false, "Not Found (text/html)"),
            ),
            case(
                "h-422-fastapi",
                Reply::raw(
                    422,
                    Some("application/json"),
                    r#"{"detail":[{"loc":["body","messages"],"msg":"field required","type":"value_error.missing"}]}"#,
                ),
                failed("upstream_invalid_request", false, "field required"),
            ),
            case(
                "h-200-json-completion",
                Reply::raw(
                    200,
                    Some("application/json"),
                    r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
                ),
                failed("upstream_not_event_stream", false, "Hello there"),
            ),
            case(
                "h-200-json-error",
                Reply::raw(
                    200,
                    Some("application/json"),
                    "{\n  \"error\": {\n    \"message\": \"Internal error encountered.\",\n    \"type\": \"server_error\"\n  }\n}\n",
                ),
                failed("upstream_server_error", true, "Internal error encountered."),
            ),
            case(
                "h-200-html",
                Reply::raw(
                    200,
                    Some("text/html; charset=utf-8"),
                    "<!doctype html><html><head><title>Service Maintenance</title><style>h1{color:red}</style></head><body><h1>We'll be back shortly</h1></body></html>",
                ),
                failed("upstream_server_error", true, "Service Maintenance We'll be back shortly"),
            ),
        ],
    )
    .await
}

/// Every shared fixture, cut into writes at seeded-random byte offsets, ends as its README row
/// says. Each case gets two attempts, so the retryable failures show that they retry (and
/// still never become COMPLETED).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fixtures_split_at_random_offsets_end_as_documented() -> anyhow::Result<()> {
    let rows: [(&str, Expect); 9] = [
        ("basic.sse", completed(BASIC, "stop")),
        (
            "with-usage.sse",
            Expect::Completed {
                content: BASIC,
                reasoning: "",
                finish_reason: "stop",
                usage: Some(Usage::Reported(19, 11, 30)),
                model: Some("gpt-4o-mini-2024-07-18"),
            },
        ),
        ("keepalive-comments.sse", completed(BASIC, "stop")),
        (
            "error-midstream.sse",
            failed(
                "upstream_server_error",
                true,
                "The server had an error while processing your request",
            ),
        ),
        ("length.sse", completed("The queue is a line of", "length")),
        (
            "unicode.sse",
            completed("Grüße 👋🏽 你好 — naïve café 𝔘𝔫𝔦 ✓", "stop"),
        ),
        (
            "reasoning.sse",
            Expect::Completed {
                content: "Answer: 42",
                reasoning: "Let me think.",
                finish_reason: "stop",
                usage: None,
                model: None,
            },
        ),
        ("crlf.sse", completed(BASIC, "stop")),
        (
            "truncated.sse",
            failed("upstream_stream_truncated", true, "no finish_reason"),
        ),
    ];
    let mut cases = Vec::new();
    for (name, expect) in rows {
        for (seed, max) in [(1_u64, 3_usize), (2, 17), (3, 211)] {
            let mut expect = expect.clone();
            if let Expect::Completed { model, .. } = &mut expect {
                *model = Some("gpt-4o-mini-2024-07-18");
            }
            cases.push(case(
                &format!("fx-{name}-{seed}"),
                Reply::fixture_split(name, seed, max),
                expect,
            ));
        }
    }
    check_all(2, cases).await
}

/// A server that sends the finish but neither `[DONE]` nor the end of the body: the answer
/// completes after a short grace, not at the job timeout (300 s, far beyond the harness's
/// patience, so waiting for it would fail the test).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_finished_stream_that_stays_open_completes() -> anyhow::Result<()> {
    check_all(
        1,
        vec![case(
            "v-lingering",
            sse(concat!(
                "data: {\"choices\":[{\"delta\":{\"content\":\"open\"}}]}\n\n",
                "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            ))
            .linger(Duration::from_secs(60)),
            completed("open", "stop"),
        )],
    )
    .await
}
