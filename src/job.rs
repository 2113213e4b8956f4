//! Domain types of a job: status, priority, queue names, parameters, results and input limits.
//!
//! Nothing here knows about tonic, diesel or Redis; `api/` maps these to the wire and `store/`
//! to rows.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A job's id: a UUID v7, so ids sort by creation time.
pub type JobId = Uuid;

/// Scheduling priority inside a job type; claims take urgent before high before normal before low.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Queue `openai-{job_type}-urgent`.
    Urgent,
    /// Queue `openai-{job_type}-high`.
    High,
    /// Queue `openai-{job_type}`.
    Normal,
    /// Queue `openai-{job_type}-low`.
    Low,
}

impl Priority {
    /// All priorities in claim order.
    pub const CLAIM_ORDER: [Priority; 4] = [
        Priority::Urgent,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    /// Stored spelling: `urgent`, `high`, `normal`, `low`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// Parses the stored spelling; `None` for anything else.
    pub fn parse(s: &str) -> Option<Priority> {
        Self::CLAIM_ORDER.into_iter().find(|p| p.as_str() == s)
    }
}

/// The Redis queue of a job type and priority, named as Horizon named them:
/// `openai-{job_type}-urgent`, `openai-{job_type}-high`, `openai-{job_type}` (normal),
/// `openai-{job_type}-low`.
pub fn queue_name(job_type: &str, priority: Priority) -> String {
    match priority {
        Priority::Normal => format!("openai-{job_type}"),
        other => format!("openai-{job_type}-{}", other.as_str()),
    }
}

/// Lifecycle of a job: `Queued -> Running -> Completed | Failed | Cancelled`; a retried attempt
/// goes from `Running` back to `Queued`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Waiting in its queue (first time or before a retry).
    Queued,
    /// A worker holds it and is generating.
    Running,
    /// Terminal: generation finished.
    Completed,
    /// Terminal: generation failed for good.
    Failed,
    /// Terminal: cancelled by a client.
    Cancelled,
}

impl JobStatus {
    /// Stored spelling: `queued`, `running`, `completed`, `failed`, `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Parses the stored spelling; `None` for anything else.
    pub fn parse(s: &str) -> Option<JobStatus> {
        [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// True for `Completed`, `Failed` and `Cancelled`: nothing changes a job after that.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// How token deltas reach watchers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StreamingMode {
    /// One event per upstream chunk.
    #[default]
    Realtime,
    /// Deltas coalesced by time and size (see `worker::Config`).
    Buffered,
}

impl StreamingMode {
    /// Stored spelling: `realtime`, `buffered`.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamingMode::Realtime => "realtime",
            StreamingMode::Buffered => "buffered",
        }
    }

    /// Parses the stored spelling; unknown values fall back to `Realtime`.
    pub fn parse(s: &str) -> StreamingMode {
        if s == "buffered" {
            StreamingMode::Buffered
        } else {
            StreamingMode::Realtime
        }
    }
}

/// One chat message (OpenAI chat-completions `messages[]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// Message text.
    pub content: String,
}

/// Model parameters, passed upstream as they are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationParams {
    /// Upstream model name; `sim` / `sim-*` select the simulated provider.
    pub model: String,
    /// Upper bound of output tokens.
    pub max_tokens: Option<u32>,
    /// Sampling temperature, 0..=2.
    pub temperature: Option<f32>,
    /// Nucleus sampling, 0..=1.
    pub top_p: Option<f32>,
    /// Stop sequences (at most [`Limits::max_stop_sequences`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Sampling seed.
    pub seed: Option<i64>,
    /// Structured output requested upstream; `None`: plain text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
}

/// A JSON `response_format` of the OpenAI chat-completions API (plain text is `None`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// `{"type": "json_object"}`: any JSON object; parsed, not validated.
    JsonObject,
    /// `{"type": "json_schema", "json_schema": {...}}`: parsed and validated against `schema`.
    JsonSchema {
        /// `json_schema.name`.
        name: String,
        /// The JSON Schema (a JSON object), checked to compile at submit.
        schema: serde_json::Value,
        /// `json_schema.strict`.
        #[serde(default)]
        strict: bool,
        /// `json_schema.description` (empty: not sent).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        description: String,
    },
}

/// A validated job, ready to be stored and enqueued.
#[derive(Clone, Debug)]
pub struct NewJob {
    /// UUID v7.
    pub id: JobId,
    /// One of the configured job types.
    pub job_type: String,
    /// Scheduling priority.
    pub priority: Priority,
    /// `queue_name(job_type, priority)`.
    pub queue: String,
    /// The conversation sent upstream (system prompt first, when given).
    pub messages: Vec<ChatMessage>,
    /// Model parameters; `model` is already resolved to the server default when it was empty.
    pub params: GenerationParams,
    /// Delivery mode of token deltas.
    pub streaming_mode: StreamingMode,
    /// Caller data.
    pub metadata: BTreeMap<String, String>,
    /// Client-chosen deduplication key.
    pub idempotency_key: Option<String>,
    /// Attempts allowed before the job fails for good.
    pub max_attempts: u32,
    /// Limit of one attempt; `None`: the worker's default.
    pub timeout: Option<std::time::Duration>,
    /// Labels for listing.
    pub tags: Vec<String>,
    /// Tenant of the key that submitted it ([`crate::auth::DEFAULT_TENANT`] without auth).
    pub tenant: String,
    /// Whether the store replaces `messages` with an empty conversation once the job has
    /// ended (`--prompt-storage none`).
    pub discard_prompt: bool,
    /// The W3C trace context of the submitting call's span: its `traceparent`, then a newline
    /// and its `tracestate` when it has one; `None` when the call was not traced.
    pub trace_context: Option<String>,
}

impl NewJob {
    /// Whether this request asks for the same job as `earlier`, the job stored under the same
    /// idempotency key: same job type, priority, parameters, mode, metadata, attempts,
    /// timeout, tags and conversation. The conversation is not compared when `earlier` has
    /// ended and its prompt was discarded (`--prompt-storage none`).
    pub fn same_request_as(&self, earlier: &Job) -> bool {
        let prompt_discarded = earlier.status.is_terminal() && earlier.messages.is_empty();
        self.job_type == earlier.job_type
            && self.priority == earlier.priority
            && self.params == earlier.params
            && self.streaming_mode == earlier.streaming_mode
            && self.metadata == earlier.metadata
            && self.max_attempts == earlier.max_attempts
            && self.timeout == earlier.timeout
            && self.tags == earlier.tags
            && (prompt_discarded || self.messages == earlier.messages)
    }
}

/// Why a job or an attempt failed: a stable code and a human-readable message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobError {
    /// e.g. `upstream_server_error`, `upstream_stream_truncated`, `timeout`.
    pub code: String,
    /// Detail for humans; never contains secrets.
    pub message: String,
}

/// A job as stored.
#[derive(Clone, Debug)]
pub struct Job {
    /// UUID v7.
    pub id: JobId,
    /// Current status.
    pub status: JobStatus,
    /// Configured job type.
    pub job_type: String,
    /// Scheduling priority.
    pub priority: Priority,
    /// Queue name.
    pub queue: String,
    /// Conversation sent upstream.
    pub messages: Vec<ChatMessage>,
    /// Model parameters.
    pub params: GenerationParams,
    /// Delivery mode of token deltas.
    pub streaming_mode: StreamingMode,
    /// Caller data.
    pub metadata: BTreeMap<String, String>,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Limit of one attempt; `None`: the worker's default.
    pub timeout: Option<std::time::Duration>,
    /// Labels for listing.
    pub tags: Vec<String>,
    /// The batch it was submitted in, if any.
    pub batch_id: Option<Uuid>,
    /// Last error, for failed jobs.
    pub error: Option<JobError>,
    /// Sequence of the terminal event, once it is known (0 before).
    pub last_sequence: u64,
    /// Submission time.
    pub created_at: DateTime<Utc>,
    /// When it (last) entered its queue.
    pub enqueued_at: DateTime<Utc>,
    /// Start of the current or last attempt.
    pub started_at: Option<DateTime<Utc>>,
    /// When it became terminal.
    pub finished_at: Option<DateTime<Utc>>,
    /// Tenant of the key that submitted it; only that tenant (and admins) may see it.
    pub tenant: String,
    /// The W3C trace context of the submitting call (see [`NewJob::trace_context`]).
    pub trace_context: Option<String>,
}

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

/// Bounds on client input, checked at submit before anything is written. Each bound is a
/// `serve`/`gateway` flag with an environment variable; the defaults are [`Limits::DEFAULT`].
#[derive(Clone, Debug, clap::Args)]
pub struct Limits {
    /// Most bytes of prompt, system prompt and message contents together, per job (UTF-8
    /// bytes; a request message is also capped at 4 MiB by the transport).
    #[arg(long = "max-prompt-bytes", env = "LLMJOBS_MAX_PROMPT_BYTES", default_value_t = Limits::DEFAULT.max_prompt_bytes)]
    pub max_prompt_bytes: usize,
    /// Most messages per job.
    #[arg(long = "max-messages", env = "LLMJOBS_MAX_MESSAGES", default_value_t = Limits::DEFAULT.max_messages)]
    pub max_messages: usize,
    /// Most metadata entries per job (and per batch).
    #[arg(long = "max-metadata-entries", env = "LLMJOBS_MAX_METADATA_ENTRIES", default_value_t = Limits::DEFAULT.max_metadata_entries)]
    pub max_metadata_entries: usize,
    /// Most bytes per metadata key or value (UTF-8 bytes).
    #[arg(long = "max-metadata-bytes", env = "LLMJOBS_MAX_METADATA_BYTES", default_value_t = Limits::DEFAULT.max_metadata_bytes)]
    pub max_metadata_bytes: usize,
    /// Most stop sequences per job (the OpenAI API accepts at most 4).
    #[arg(long = "max-stop-sequences", env = "LLMJOBS_MAX_STOP_SEQUENCES", default_value_t = Limits::DEFAULT.max_stop_sequences)]
    pub max_stop_sequences: usize,
    /// Largest accepted `max_tokens` (tokens).
    #[arg(long = "max-output-tokens", env = "LLMJOBS_MAX_OUTPUT_TOKENS", default_value_t = Limits::DEFAULT.max_output_tokens)]
    pub max_output_tokens: u32,
    /// Largest accepted per-job `max_attempts` (set by `--max-attempts-cap`).
    #[arg(skip = Limits::DEFAULT.max_attempts_cap)]
    pub max_attempts_cap: u32,
    /// Largest accepted per-job timeout (set by `--job-timeout-cap-secs`).
    #[arg(skip = Limits::DEFAULT.timeout_cap)]
    pub timeout_cap: std::time::Duration,
    /// Most tags per job.
    #[arg(long = "max-tags", env = "LLMJOBS_MAX_TAGS", default_value_t = Limits::DEFAULT.max_tags)]
    pub max_tags: usize,
    /// Most bytes per tag (UTF-8 bytes).
    #[arg(long = "max-tag-bytes", env = "LLMJOBS_MAX_TAG_BYTES", default_value_t = Limits::DEFAULT.max_tag_bytes)]
    pub max_tag_bytes: usize,
    /// Most bytes of a `response_format` JSON schema, encoded as JSON.
    #[arg(long = "max-schema-bytes", env = "LLMJOBS_MAX_SCHEMA_BYTES", default_value_t = Limits::DEFAULT.max_schema_bytes)]
    pub max_schema_bytes: usize,
    /// Models a job may name, comma-separated (the server's default model must be one of
    /// them); empty: any model.
    #[arg(
        long = "allowed-models",
        env = "LLMJOBS_ALLOWED_MODELS",
        value_delimiter = ','
    )]
    pub allowed_models: Vec<String>,
}

impl Limits {
    /// The defaults: 1 MiB of prompt, 256 messages, 64 metadata entries of at most 1 KiB, 4
    /// stop sequences, `max_tokens` up to 128,000, 10 attempts, an hour per attempt, 16 tags
    /// of at most 64 bytes, 64 KiB of response schema, any model.
    pub const DEFAULT: Limits = Limits {
        max_prompt_bytes: 1024 * 1024,
        max_messages: 256,
        max_metadata_entries: 64,
        max_metadata_bytes: 1024,
        max_stop_sequences: 4,
        max_output_tokens: 128_000,
        max_attempts_cap: 10,
        timeout_cap: std::time::Duration::from_secs(3600),
        max_tags: 16,
        max_tag_bytes: 64,
        max_schema_bytes: 64 * 1024,
        allowed_models: Vec::new(),
    };

    /// Whether a job may run on `model`: the allow-list is empty or names it (blank entries,
    /// e.g. from an empty environment variable, are ignored).
    pub fn allows_model(&self, model: &str) -> bool {
        let mut allowed = self
            .allowed_models
            .iter()
            .map(|m| m.trim())
            .filter(|m| !m.is_empty())
            .peekable();
        allowed.peek().is_none() || allowed.any(|m| m == model)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_follow_horizon() {
        assert_eq!(
            queue_name("general", Priority::Urgent),
            "openai-general-urgent"
        );
        assert_eq!(queue_name("general", Priority::High), "openai-general-high");
        assert_eq!(queue_name("general", Priority::Normal), "openai-general");
        assert_eq!(
            queue_name("code_review", Priority::Low),
            "openai-code_review-low"
        );
    }

    #[test]
    fn spellings_round_trip() {
        for p in Priority::CLAIM_ORDER {
            assert_eq!(Priority::parse(p.as_str()), Some(p));
        }
        for s in ["queued", "running", "completed", "failed", "cancelled"] {
            assert_eq!(JobStatus::parse(s).map(JobStatus::as_str), Some(s));
        }
        assert_eq!(JobStatus::parse("retrying"), None);
    }
}
