//! `llm-jobs submit`: a job from the command line's flags (the prompt from standard input with
//! `-`), then its id, or with `--stream` its tokens as they arrive.

use anyhow::Context;

use super::{
    Connection, connect, status_error,
    watch::{Cut, finish, print_events},
};
use crate::proto::v1;

/// A job's priority on the command line: `llmjobs.v1.Priority` without its prefix, each
/// with its queue (named after Horizon's, as the proto says).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PriorityArg {
    /// Queue `openai-{job_type}-urgent`.
    Urgent,
    /// Queue `openai-{job_type}-high`.
    High,
    /// Queue `openai-{job_type}`.
    Normal,
    /// Queue `openai-{job_type}-low`.
    Low,
}

/// `submit` arguments.
#[derive(clap::Args, Clone, Debug)]
pub struct SubmitArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: Connection,
    /// The prompt; `-` reads it from standard input (for prompts too long for a command
    /// line, e.g. `llm-jobs submit - < prompt.txt`).
    pub prompt: String,
    /// System prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Job type (one of the server's configured types).
    #[arg(
        long = "job-type",
        default_value = "general",
        value_parser = clap::builder::NonEmptyStringValueParser::new()
    )]
    pub job_type: String,
    /// urgent, high, normal or low (any case).
    #[arg(long, value_enum, ignore_case = true, default_value_t = PriorityArg::Normal)]
    pub priority: PriorityArg,
    /// Model (default: the server's; `sim` is simulated).
    #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub model: Option<String>,
    /// Upper bound of output tokens.
    #[arg(long = "max-tokens", allow_negative_numbers = true)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature (0..=2).
    #[arg(long, allow_negative_numbers = true)]
    pub temperature: Option<f32>,
    /// Coalesce deltas (BUFFERED) instead of one event per token.
    #[arg(long)]
    pub buffered: bool,
    /// Metadata entries, `key=value`.
    #[arg(long = "metadata", value_parser = parse_kv)]
    pub metadata: Vec<(String, String)>,
    /// Tag for listing (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Idempotency key: resubmitting with it returns the first job.
    #[arg(long = "idempotency-key", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub idempotency_key: Option<String>,
    /// Nucleus sampling (0..=1).
    #[arg(long = "top-p", allow_negative_numbers = true)]
    pub top_p: Option<f32>,
    /// Sampling seed.
    #[arg(long, allow_negative_numbers = true)]
    pub seed: Option<i64>,
    /// Ask for a JSON object (`response_format` json_object); the result carries it parsed.
    #[arg(long = "json-object", conflicts_with = "json_schema")]
    pub json_object: bool,
    /// Ask for JSON matching the JSON Schema in this file (`response_format` json_schema);
    /// the result carries it parsed and validated.
    #[arg(long = "json-schema", value_name = "FILE")]
    pub json_schema: Option<std::path::PathBuf>,
    /// With --json-schema: the schema's name (default: the file name without extension).
    #[arg(long = "schema-name", requires = "json_schema")]
    pub schema_name: Option<String>,
    /// Stop sequence (repeatable, at most 4).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Attempts before the job fails for good (default: the server's).
    #[arg(long = "max-attempts", allow_negative_numbers = true)]
    pub max_attempts: Option<u32>,
    /// Limit of one attempt in seconds (default: the server's).
    #[arg(long = "timeout-seconds", allow_negative_numbers = true)]
    pub timeout_seconds: Option<u32>,
    /// Follow the job and print tokens as they arrive.
    #[arg(long)]
    pub stream: bool,
    /// With --stream: cancel the job if this command is interrupted.
    #[arg(long = "cancel-on-disconnect", requires = "stream")]
    pub cancel_on_disconnect: bool,
    /// Print the job as canonical protobuf JSON (with --stream: each event of its log as one
    /// JSON line, as `watch --json` does).
    #[arg(long)]
    pub json: bool,
}

/// The `response_format` of `submit`'s flags. Errors: an unreadable or non-JSON schema file.
fn response_format(
    json_object: bool,
    schema: Option<&std::path::Path>,
    name: Option<String>,
) -> anyhow::Result<Option<v1::ResponseFormat>> {
    use v1::response_format::Type;
    if let Some(path) = schema {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let serde_json::Value::Object(_) = json else {
            anyhow::bail!("{} must hold a JSON object", path.display());
        };
        let Some(prost_types::value::Kind::StructValue(schema)) =
            crate::api::convert::json_value(&json).kind
        else {
            anyhow::bail!("{} must hold a JSON object", path.display());
        };
        let name = name.unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().replace('.', "_"))
                .unwrap_or_else(|| "schema".to_owned())
        });
        return Ok(Some(v1::ResponseFormat {
            r#type: Type::JsonSchema.into(),
            schema_name: name,
            schema: Some(schema),
            ..Default::default()
        }));
    }
    Ok(json_object.then(|| v1::ResponseFormat {
        r#type: Type::JsonObject.into(),
        ..Default::default()
    }))
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

/// The `--metadata` entries as the request's map. Errors: a key given twice (the request
/// holds one value per key, and keeping either silently would lose the other).
fn metadata(
    entries: Vec<(String, String)>,
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let mut map = std::collections::HashMap::with_capacity(entries.len());
    for (key, value) in entries {
        anyhow::ensure!(
            !map.contains_key(&key),
            "--metadata {key:?} is given twice; give each key once"
        );
        map.insert(key, value);
    }
    Ok(map)
}

/// `submit`.
pub async fn submit(a: SubmitArgs) -> anyhow::Result<()> {
    let connection = a.connection.clone();
    let (stream, json, cancel_on_disconnect) = (a.stream, a.json, a.cancel_on_disconnect);
    let req = request(a)?;
    let mut client = connect(&connection).await?;
    if stream {
        let stream = client
            .submit_and_stream(req)
            .await
            .map_err(status_error)?
            .into_inner();
        let shown = print_events(stream, 0, json).await?;
        if cancel_on_disconnect && matches!(shown.cut, Some(Cut::Interrupted)) {
            // Leaving cancels the job: there is nothing to resume.
            anyhow::bail!(
                "interrupted at sequence {}; the job {} is being cancelled \
                 (--cancel-on-disconnect)",
                shown.last,
                shown.job_id
            );
        }
        finish(&mut client, shown, 0).await
    } else {
        let job = client
            .submit_job(req)
            .await
            .map_err(status_error)?
            .into_inner()
            .job;
        let job = job.context("server sent no job")?;
        if json {
            return crate::cli::print_json("llmjobs.v1.Job", &job);
        }
        println!("{}", job.id);
        eprintln!("queued in {}", job.queue);
        Ok(())
    }
}

/// The request `a` asks for; the prompt is read from standard input when it is `-`.
///
/// Errors: an unreadable standard input or schema file.
fn request(a: SubmitArgs) -> anyhow::Result<v1::SubmitJobRequest> {
    let priority = match a.priority {
        PriorityArg::Urgent => v1::Priority::Urgent,
        PriorityArg::High => v1::Priority::High,
        PriorityArg::Normal => v1::Priority::Normal,
        PriorityArg::Low => v1::Priority::Low,
    };
    let prompt = if a.prompt == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| anyhow::anyhow!("cannot read the prompt from standard input: {e}"))?;
        text
    } else {
        a.prompt
    };
    Ok(v1::SubmitJobRequest {
        prompt,
        system_prompt: a.system.unwrap_or_default(),
        job_type: a.job_type,
        priority: priority.into(),
        generation_config: Some(v1::GenerationConfig {
            model: a.model.unwrap_or_default(),
            max_tokens: a.max_tokens,
            temperature: a.temperature,
            top_p: a.top_p,
            stop: a.stop,
            seed: a.seed,
            response_format: response_format(
                a.json_object,
                a.json_schema.as_deref(),
                a.schema_name,
            )?,
        }),
        max_attempts: a.max_attempts,
        timeout_seconds: a.timeout_seconds,
        cancel_on_disconnect: a.cancel_on_disconnect,
        tags: a.tags,
        streaming_mode: if a.buffered {
            v1::StreamingMode::Buffered
        } else {
            v1::StreamingMode::Realtime
        }
        .into(),
        metadata: metadata(a.metadata)?,
        idempotency_key: a.idempotency_key.unwrap_or_default(),
        ..Default::default()
    })
}
