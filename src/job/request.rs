//! What a job asks of the model: its chat messages, model parameters and response format.

use serde::{Deserialize, Serialize};

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

/// How a job's prompt is stored (`LLMJOBS_PROMPT_STORAGE`, set by the operator).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PromptStorage {
    /// As submitted.
    Full,
    /// With secrets masked (see `crate::redact`).
    Redacted,
    /// Only until the job ends.
    None,
}
