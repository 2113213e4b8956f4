//! The upstream LLM's settings: where it is ([`Upstream`], both sides) and how workers call
//! it ([`Provider`]: timeouts, simulation, pricing, rate budgets).
//!
//! Environment variables read here: `OPENAI_API_KEY`, `OPENAI_BASE_URL`,
//! `LLMJOBS_SIM_FIRST_TOKEN_MS`, `LLMJOBS_SIM_TOKENS_PER_SECOND`,
//! `LLMJOBS_UPSTREAM_CONNECT_TIMEOUT_SECS`, `LLMJOBS_PRICING_FILE`, `LLMJOBS_UPSTREAM_RPM`,
//! `LLMJOBS_UPSTREAM_TPM`, `LLMJOBS_UPSTREAM_MODEL_LIMITS`.

use secrecy::SecretString;

/// Where the upstream LLM is (both sides: workers call it, gateways accept only simulated
/// models when none is configured).
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Upstream")]
pub struct Upstream {
    /// API key of the OpenAI-compatible upstream. Without it, the default model is `sim`.
    #[arg(
        long = "openai-api-key",
        env = "OPENAI_API_KEY",
        hide_env_values = true
    )]
    pub openai_api_key: Option<SecretString>,
    /// Base URL of the OpenAI-compatible API (OpenAI, vLLM, Ollama, llama.cpp, OpenRouter, ...).
    #[arg(
        long = "openai-base-url",
        env = "OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    pub openai_base_url: String,
}

impl Upstream {
    /// Whether a real upstream is configured: an API key, or a base URL other than OpenAI's
    /// (local servers such as Ollama need no key). Without one only simulated models can run.
    pub fn configured(&self) -> bool {
        self.openai_api_key.is_some() || !self.openai_base_url.contains("api.openai.com")
    }
}

/// How the worker calls the upstream LLM and the simulator.
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Upstream")]
pub struct Provider {
    /// Simulated provider: time to first token (ms).
    #[arg(
        long = "sim-first-token-ms",
        env = "LLMJOBS_SIM_FIRST_TOKEN_MS",
        default_value_t = 200
    )]
    pub sim_first_token_ms: u64,
    /// Simulated provider: output tokens per second.
    #[arg(
        long = "sim-tokens-per-second",
        env = "LLMJOBS_SIM_TOKENS_PER_SECOND",
        default_value_t = 40.0
    )]
    pub sim_tokens_per_second: f64,
    /// Seconds to establish the upstream connection.
    #[arg(
        long = "upstream-connect-timeout-secs",
        env = "LLMJOBS_UPSTREAM_CONNECT_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub connect_timeout_secs: u64,
    /// JSON file of model prices (USD per million input/output tokens) that replaces or adds
    /// to the built-in table.
    #[arg(long = "pricing-file", env = "LLMJOBS_PRICING_FILE")]
    pub pricing_file: Option<std::path::PathBuf>,
    /// Upstream requests per minute per model, shared by every worker through Redis
    /// (0: no limit). Simulated models are not limited.
    #[arg(
        long = "upstream-rpm",
        env = "LLMJOBS_UPSTREAM_RPM",
        default_value_t = 0
    )]
    pub upstream_rpm: u64,
    /// Upstream tokens per minute per model (prompt estimate plus `max_tokens`, or 1,000 when
    /// unset), shared like `--upstream-rpm` (0: no limit).
    #[arg(
        long = "upstream-tpm",
        env = "LLMJOBS_UPSTREAM_TPM",
        default_value_t = 0
    )]
    pub upstream_tpm: u64,
    /// Per-model budgets `MODEL=RPM:TPM` overriding the two above (comma-separated).
    #[arg(
        long = "upstream-model-limit",
        env = "LLMJOBS_UPSTREAM_MODEL_LIMITS",
        value_delimiter = ',',
        value_parser = crate::ratelimit::upstream::parse_model_limits
    )]
    pub upstream_model_limits: Vec<(String, crate::ratelimit::upstream::Limits)>,
    /// The window the upstream budget is counted over (ms): a minute, shorter only in tests.
    #[arg(long = "upstream-window-ms", default_value_t = 60_000, hide = true)]
    pub upstream_window_ms: u64,
}
