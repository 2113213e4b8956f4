//! Bounds on client input, checked at submit before anything is written.

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
