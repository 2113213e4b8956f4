//! What clients may submit to the gateway ([`Jobs`]): the default model, attempts, timeouts,
//! batch size and the input limits of [`crate::job::Limits`].
//!
//! Environment variables read here: `LLMJOBS_DEFAULT_MODEL`, `LLMJOBS_MAX_ATTEMPTS`,
//! `LLMJOBS_MAX_ATTEMPTS_CAP`, `LLMJOBS_JOB_TIMEOUT_CAP_SECS`, `LLMJOBS_MAX_BATCH_JOBS`, and
//! the input limits of [`crate::job::Limits`] (`LLMJOBS_MAX_PROMPT_BYTES`,
//! `LLMJOBS_MAX_MESSAGES`, `LLMJOBS_MAX_METADATA_ENTRIES`, `LLMJOBS_MAX_METADATA_BYTES`,
//! `LLMJOBS_MAX_STOP_SEQUENCES`, `LLMJOBS_MAX_OUTPUT_TOKENS`, `LLMJOBS_MAX_TAGS`,
//! `LLMJOBS_MAX_TAG_BYTES`, `LLMJOBS_MAX_SCHEMA_BYTES`, `LLMJOBS_ALLOWED_MODELS`).

use crate::job::Limits;

use super::Upstream;

/// What clients may submit (gateway).
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Jobs")]
pub struct Jobs {
    /// Model used when a job names none. Default: `gpt-4o-mini` with an API key, else `sim`.
    #[arg(long = "default-model", env = "LLMJOBS_DEFAULT_MODEL")]
    pub default_model: Option<String>,
    /// Attempts per job before it fails for good.
    #[arg(
        long = "max-attempts",
        env = "LLMJOBS_MAX_ATTEMPTS",
        default_value_t = 3
    )]
    pub max_attempts: u32,
    /// Largest `max_attempts` a job may ask for.
    #[arg(
        long = "max-attempts-cap",
        env = "LLMJOBS_MAX_ATTEMPTS_CAP",
        default_value_t = 10
    )]
    pub max_attempts_cap: u32,
    /// Largest `timeout_seconds` a job may ask for.
    #[arg(
        long = "job-timeout-cap-secs",
        env = "LLMJOBS_JOB_TIMEOUT_CAP_SECS",
        default_value_t = 3600
    )]
    pub job_timeout_cap_secs: u64,
    /// Most jobs one `SubmitBatch` may carry (a request message is also capped at 64 MiB).
    #[arg(
        long = "max-batch-jobs",
        env = "LLMJOBS_MAX_BATCH_JOBS",
        default_value_t = 1000,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub max_batch_jobs: usize,
    /// Input limits and the model allow-list.
    #[command(flatten)]
    pub limits: Limits,
}

impl Jobs {
    /// The model used when a job names none: `--default-model`, else `gpt-4o-mini` when
    /// `upstream` has an API key, else `sim`.
    pub fn default_model(&self, upstream: &Upstream) -> String {
        match (&self.default_model, &upstream.openai_api_key) {
            (Some(model), _) if !model.is_empty() => model.clone(),
            (_, Some(_)) => "gpt-4o-mini".to_owned(),
            _ => "sim".to_owned(),
        }
    }
}
