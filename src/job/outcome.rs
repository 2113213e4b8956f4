//! What an attempt produced: its text, token usage, stream figures and structured output.

use serde::{Deserialize, Serialize};

/// Token usage, named after the OpenTelemetry GenAI conventions (`gen_ai.usage.*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Sum reported by the upstream.
    pub total_tokens: u64,
    /// True when the upstream reported nothing and `output_tokens` counts streamed deltas.
    pub estimated: bool,
    /// Input tokens read from the upstream's prompt cache, when reported.
    pub cached_input_tokens: Option<u64>,
    /// Output tokens spent on reasoning (part of `output_tokens`), when reported.
    pub reasoning_tokens: Option<u64>,
}

/// How an attempt's stream arrived.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamingStats {
    /// Upstream chunks that carried text.
    pub chunks: u64,
    /// Bytes of text, content and reasoning (UTF-8).
    pub bytes: u64,
    /// Median gap between consecutive text chunks (ms); `None` with fewer than two chunks.
    pub inter_token_p50_ms: Option<f64>,
    /// 95th percentile of those gaps (ms).
    pub inter_token_p95_ms: Option<f64>,
}

/// The parsed final content of a job that asked for a JSON `response_format`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StructuredOutput {
    /// Parsed, and with a schema valid.
    pub valid: bool,
    /// The parsed content; `None` when it did not parse.
    pub json: Option<serde_json::Value>,
    /// (JSON Pointer path, message) of each problem: a parse error has an empty path.
    pub errors: Vec<(String, String)>,
}

/// What one attempt produced, stored as the job's result when the attempt is the final one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Generated text.
    pub content: String,
    /// Reasoning text, kept apart from `content`.
    pub reasoning_content: String,
    /// Upstream finish reason (`stop`, `length`, ...); empty when it did not finish.
    pub finish_reason: String,
    /// Model as reported by the upstream (or the requested one).
    pub model: String,
    /// `openai` or `sim`.
    pub provider: String,
    /// True for the simulated provider.
    pub simulated: bool,
    /// Token usage.
    pub usage: Usage,
    /// Request sent to first content token, ms.
    pub time_to_first_token_ms: Option<u64>,
    /// Request sent to end of stream, ms.
    pub duration_ms: u64,
    /// Output tokens per second between first and last token.
    pub output_tokens_per_second: f64,
    /// Time in queue before this attempt, ms.
    pub queue_wait_ms: u64,
    /// Cost in USD, when the model's price is known.
    pub cost_usd: Option<f64>,
    /// Chunk, byte and inter-token latency figures of the stream.
    pub streaming: StreamingStats,
    /// The upstream's `x-request-id` for this attempt's request.
    pub upstream_request_id: Option<String>,
    /// Parsed (and validated) content, when a JSON response format was asked for.
    pub structured: Option<StructuredOutput>,
}
