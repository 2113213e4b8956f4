//! Client commands: talk to a running llm-jobs server over gRPC and print for humans (text to
//! stdout, progress and figures to stderr).

use std::io::Write;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use tonic::service::interceptor::InterceptedService;

use super::style;
use crate::auth::client::Bearer;

use crate::proto::v1::{self, job_event::Kind, job_service_client::JobServiceClient};

/// Where the server is and how to prove who we are.
#[derive(clap::Args, Clone, Debug)]
pub struct Connection {
    /// Server URL (`https://…` for TLS).
    #[arg(
        long = "server",
        env = "LLMJOBS_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub server: String,
    /// API key (`llmj_…`, from `llm-jobs keys create`), sent as `authorization: Bearer`
    /// [env: LLMJOBS_API_KEY]
    // The variable is read in `Connection::channel`, not by clap: clap's usage line in an
    // error lists every argument an invocation gave, the ones from the environment too, so a
    // key in the environment read as a flag the command asked for (`--api-key <API_KEY>`).
    #[arg(long = "api-key", global = true)]
    pub api_key: Option<SecretString>,
    /// PEM file of the CA that signed the server's certificate (TLS with a private CA).
    #[arg(long = "ca-file", env = "LLMJOBS_CA_FILE", global = true)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Name the server's certificate is checked against (default: the URL's host).
    #[arg(long = "tls-domain", env = "LLMJOBS_TLS_DOMAIN", global = true)]
    pub tls_domain: Option<String>,
}

/// The environment variable that holds the API key when `--api-key` is not given.
const API_KEY_ENV: &str = "LLMJOBS_API_KEY";

/// A channel that sends the API key with every request.
pub type Channel = InterceptedService<tonic::transport::Channel, Bearer>;

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
    #[arg(long = "job-type", default_value = "general")]
    pub job_type: String,
    /// urgent, high, normal or low.
    #[arg(long, default_value = "normal")]
    pub priority: String,
    /// Model (empty: the server's default; `sim` is simulated).
    #[arg(long, default_value = "")]
    pub model: String,
    /// Upper bound of output tokens.
    #[arg(long = "max-tokens")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature (0..=2).
    #[arg(long)]
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
    #[arg(long = "idempotency-key", default_value = "")]
    pub idempotency_key: String,
    /// Nucleus sampling (0..=1).
    #[arg(long = "top-p")]
    pub top_p: Option<f32>,
    /// Sampling seed.
    #[arg(long)]
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
    #[arg(long = "max-attempts")]
    pub max_attempts: Option<u32>,
    /// Limit of one attempt in seconds (default: the server's).
    #[arg(long = "timeout-seconds")]
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

/// `watch` arguments.
#[derive(clap::Args, Clone, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: Connection,
    /// The job's id.
    pub job_id: String,
    /// Resume after this sequence (0: from the start).
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// Print each event of the job's log as canonical protobuf JSON, one per line (JSON
    /// lines; heartbeats, which are not part of the log, are left out).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of commands that name one job.
#[derive(clap::Args, Clone, Debug)]
pub struct JobArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: Connection,
    /// The job's id.
    pub job_id: String,
    /// Print the response as canonical protobuf JSON.
    #[arg(long)]
    pub json: bool,
}

/// `progress` arguments.
#[derive(clap::Args, Clone, Debug)]
pub struct ProgressArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub job: JobArgs,
    /// Print the stored history of stage changes and milestones instead.
    #[arg(long)]
    pub history: bool,
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

impl Connection {
    /// The server URL, with `http://` added when no scheme is given.
    pub fn url(&self) -> String {
        if self.server.contains("://") {
            self.server.clone()
        } else {
            format!("http://{}", self.server)
        }
    }
}

impl Connection {
    /// Connects (TLS for `https://` URLs, trusting `--ca-file` when given) and returns a
    /// channel that sends the API key with every request.
    ///
    /// Errors: an unreadable CA file, a bad URL or key, or no connection.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let url = self.url();
        let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())
            .with_context(|| format!("bad server URL {url}"))?;
        if url.starts_with("https://") || self.ca_file.is_some() {
            let mut tls = tonic::transport::ClientTlsConfig::new();
            if let Some(path) = &self.ca_file {
                let pem = std::fs::read(path)
                    .with_context(|| format!("cannot read the CA file {}", path.display()))?;
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            if let Some(domain) = &self.tls_domain {
                tls = tls.domain_name(domain.clone());
            }
            endpoint = endpoint.tls_config(tls).context("TLS configuration")?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot connect to {url}"))?;
        // The flag, else LLMJOBS_API_KEY; an empty key means no key, as an unset one does.
        let from_env = std::env::var(API_KEY_ENV).ok().map(SecretString::from);
        let key = self
            .api_key
            .as_ref()
            .or(from_env.as_ref())
            .map(ExposeSecret::expose_secret)
            .filter(|k| !k.is_empty());
        let bearer =
            Bearer::new(key).context("the API key has characters a header cannot carry")?;
        Ok(InterceptedService::new(channel, bearer))
    }
}

/// Largest response the CLI reads (bytes): a result holds the whole answer, which the server
/// stores whatever its size; tonic's default of 4 MiB would refuse long ones.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

async fn connect(c: &Connection) -> anyhow::Result<JobServiceClient<Channel>> {
    Ok(JobServiceClient::new(c.channel().await?).max_decoding_message_size(MAX_RESPONSE_BYTES))
}

/// An error and its causes as one line, `outer: inner: …`, leaving out a cause that repeats
/// the text before it (tonic's transport errors say "tcp connect error" twice).
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut previous = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.is_empty() {
            if previous.ends_with(&part) {
                continue;
            }
            text.push_str(": ");
        }
        text.push_str(&part);
        previous = part;
    }
    text
}

/// Whether a job in `status` has ended.
fn ended(status: v1::JobStatus) -> bool {
    matches!(
        status,
        v1::JobStatus::Completed | v1::JobStatus::Failed | v1::JobStatus::Cancelled
    )
}

/// A job's error as one line: `code: message`.
/// A job error for a terminal: `code: message`, with control characters shown escaped, not
/// interpreted (an upstream's error text can carry escape sequences that clear the screen or
/// retitle the window).
fn error_text(e: &v1::JobError) -> String {
    format!("{}: {}", inert(&e.code), inert(&e.message))
}

/// `s` with every control character escaped (`\u{1b}`).
pub(crate) fn inert(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A status as a readable error: its code and message (the code once: a message that opens
/// with it in words, as `invalid argument: …` does, is not prefixed again), then each field
/// violation the message does not already say, and the retry delay of a
/// `google.rpc.RetryInfo` detail.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    use tonic_types::StatusExt;
    let code = format!("{:?}", s.code());
    let message = s.message();
    let mut msg = match strip_code(message, &code) {
        Some(rest) => format!("{code}: {rest}"),
        None => format!("{code}: {message}"),
    };
    if let Some(bad) = s.get_details_bad_request() {
        for v in bad.field_violations {
            let line = format!("{}: {}", v.field, v.description);
            if !s.message().contains(&line) {
                msg.push_str(&format!("\n  {line}"));
            }
        }
    }
    if let Some(delay) = s.get_details_retry_info().and_then(|r| r.retry_delay) {
        msg.push_str(&format!("\n  retry in {:.1} s", delay.as_secs_f64()));
    }
    anyhow::anyhow!(msg)
}

/// `message` without its opening `code` in words and the `: ` after them (`InvalidArgument`
/// opens as `invalid argument: `, in any case); `None` when it does not open so.
fn strip_code<'a>(message: &'a str, code: &str) -> Option<&'a str> {
    let mut words = String::new();
    for c in code.chars() {
        if c.is_uppercase() && !words.is_empty() {
            words.push(' ');
        }
        words.extend(c.to_lowercase());
    }
    let head = message.get(..words.len())?;
    let rest = message[words.len()..].strip_prefix(": ")?;
    head.eq_ignore_ascii_case(&words).then_some(rest)
}

/// `submit`.
pub async fn submit(a: SubmitArgs) -> anyhow::Result<()> {
    let priority = match a.priority.as_str() {
        "urgent" => v1::Priority::Urgent,
        "high" => v1::Priority::High,
        "normal" => v1::Priority::Normal,
        "low" => v1::Priority::Low,
        other => anyhow::bail!("unknown priority {other:?} (urgent, high, normal, low)"),
    };
    let prompt = if a.prompt == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| anyhow::anyhow!("cannot read the prompt from standard input: {e}"))?;
        text
    } else {
        a.prompt
    };
    let req = v1::SubmitJobRequest {
        prompt,
        system_prompt: a.system.unwrap_or_default(),
        job_type: a.job_type,
        priority: priority.into(),
        generation_config: Some(v1::GenerationConfig {
            model: a.model,
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
        metadata: a.metadata.into_iter().collect(),
        idempotency_key: a.idempotency_key,
        ..Default::default()
    };
    let mut client = connect(&a.connection).await?;
    if a.stream {
        let stream = client
            .submit_and_stream(req)
            .await
            .map_err(status_error)?
            .into_inner();
        let shown = print_events(stream, 0, a.json).await?;
        if a.cancel_on_disconnect && matches!(shown.cut, Some(Cut::Interrupted)) {
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
        if a.json {
            return super::print_json("llmjobs.v1.Job", &job);
        }
        println!("{}", job.id);
        eprintln!("queued in {}", job.queue);
        Ok(())
    }
}

/// `watch`.
pub async fn watch(a: WatchArgs) -> anyhow::Result<()> {
    let mut client = connect(&a.connection).await?;
    let stream = client
        .stream_job(v1::StreamJobRequest {
            job_id: a.job_id.clone(),
            after_sequence: a.after,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let mut shown = print_events(stream, a.after, a.json).await?;
    if shown.job_id.is_empty() {
        shown.job_id = a.job_id;
    }
    finish(&mut client, shown, a.after).await
}

/// What [`print_events`] showed: the job, the last sequence printed, and why the stream
/// stopped before the job's end (`None`: it reached the end).
struct Shown {
    job_id: String,
    last: u64,
    cut: Option<Cut>,
}

/// Why an event stream stopped before the job's terminal event.
enum Cut {
    /// The server ended it with this status.
    Status(tonic::Status),
    /// Ctrl-C.
    Interrupted,
    /// It closed without a terminal event.
    Closed,
}

/// Ends a printed stream: nothing more when the job's end was shown; else an error that
/// names the sequence to resume from (or, resumed at the end of a job that did not complete,
/// says how it ended), or, for an `--after` past the job's last event
/// (`after`), the right bound (asked of GetJob).
async fn finish(
    client: &mut JobServiceClient<Channel>,
    shown: Shown,
    after: u64,
) -> anyhow::Result<()> {
    let Shown { job_id, last, cut } = shown;
    let resume = format!("resume with `llm-jobs watch {job_id} --after {last}`");
    match cut {
        None => Ok(()),
        Some(Cut::Status(s)) if s.code() == tonic::Code::OutOfRange && last == after => {
            let bound = client
                .get_job(v1::GetJobRequest {
                    job_id: job_id.clone(),
                })
                .await
                .ok()
                .map(|j| j.into_inner().last_sequence)
                .filter(|n| *n > 0);
            match bound {
                Some(bound) => anyhow::bail!(
                    "--after {after} is past the job's last event (sequence {bound}); use \
                     --after {bound} or less (0 replays everything)"
                ),
                None => Err(status_error(s)),
            }
        }
        Some(Cut::Status(s)) => {
            Err(status_error(s)).context(format!("stream ended at sequence {last}; {resume}"))
        }
        Some(Cut::Interrupted) => anyhow::bail!("interrupted at sequence {last}; {resume}"),
        Some(Cut::Closed) => {
            // A resume at the job's last event gets nothing more: the job had ended there.
            let job = client
                .get_job(v1::GetJobRequest {
                    job_id: job_id.clone(),
                })
                .await
                .ok()
                .map(tonic::Response::into_inner);
            match job {
                Some(j) if j.last_sequence == last && ended(j.status()) => {
                    let said = format!(
                        "the job had already ended ({}) at sequence {last}",
                        j.status().as_str_name().trim_start_matches("JOB_STATUS_")
                    );
                    // As at its terminal event: only a completed job is a success.
                    if j.status() != v1::JobStatus::Completed {
                        anyhow::bail!(said);
                    }
                    eprintln!("{said}");
                    Ok(())
                }
                _ => anyhow::bail!(
                    "the stream closed at sequence {last} before the job ended; {resume}"
                ),
            }
        }
    }
}

/// Prints a job's events as they come (tokens on stdout, the rest on stderr; with `json`,
/// every event but heartbeats as one JSON line on stdout), from after sequence `after`, until
/// the job's end, a broken stream or Ctrl-C; stdout always ends with a line break. Errors: a
/// job that did not complete (failed or cancelled, after its events), writing to stdout.
async fn print_events(
    mut stream: tonic::Streaming<v1::JobEvent>,
    after: u64,
    json: bool,
) -> anyhow::Result<Shown> {
    let mut out = std::io::stdout();
    let mut shown = Shown {
        job_id: String::new(),
        last: after,
        cut: None,
    };
    // True while stdout's last line has no line break yet.
    let mut open_line = false;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let next = tokio::select! {
            next = stream.message() => next.map_err(Cut::Status),
            _ = &mut interrupted => Err(Cut::Interrupted),
        };
        let event = match next {
            Ok(Some(e)) => e,
            Ok(None) => {
                shown.cut = Some(Cut::Closed);
                break;
            }
            Err(cut) => {
                shown.cut = Some(cut);
                break;
            }
        };
        shown.last = event.sequence;
        if shown.job_id.is_empty() {
            shown.job_id.clone_from(&event.job_id);
        }
        if json {
            match &event.kind {
                Some(Kind::Heartbeat(_)) => continue,
                _ => super::print_json_line("llmjobs.v1.JobEvent", &event)?,
            }
            match event.kind {
                Some(Kind::Completed(_)) => return Ok(shown),
                Some(Kind::Failed(f)) => anyhow::bail!(failure(event.sequence, &f)),
                Some(Kind::Cancelled(c)) => anyhow::bail!(cancellation(event.sequence, &c)),
                _ => continue,
            }
        }
        let mut text = |t: &str| -> anyhow::Result<()> {
            if !t.is_empty() {
                write!(out, "{t}")?;
                out.flush()?;
                open_line = !t.ends_with('\n');
            }
            Ok(())
        };
        match event.kind {
            Some(Kind::Queued(q)) => eprintln!(
                "[{}] job {} queued in {}",
                event.sequence, event.job_id, q.queue
            ),
            Some(Kind::Started(s)) => {
                end_line(&mut open_line);
                eprintln!(
                    "[{}] attempt {} started on {} ({})",
                    event.sequence, s.attempt, s.worker_id, s.model
                )
            }
            Some(Kind::TokenDelta(d)) => text(&d.text)?,
            Some(Kind::Snapshot(s)) => text(&s.content)?,
            Some(Kind::AttemptFailed(f)) => {
                end_line(&mut open_line);
                let e = f.error.unwrap_or_default();
                eprintln!(
                    "[{}] attempt {} failed: {} (retry: {})",
                    event.sequence,
                    f.attempt,
                    error_text(&e),
                    f.will_retry
                );
            }
            Some(Kind::Completed(c)) => {
                end_line(&mut open_line);
                let u = c.usage.unwrap_or_default();
                anstream::eprintln!(
                    "[{}] {}: finish_reason={} input_tokens={} output_tokens={}",
                    event.sequence,
                    style::status("completed"),
                    c.finish_reason,
                    u.input_tokens,
                    u.output_tokens
                );
                return Ok(shown);
            }
            Some(Kind::Failed(f)) => {
                end_line(&mut open_line);
                anyhow::bail!(failure(event.sequence, &f));
            }
            Some(Kind::Cancelled(c)) => {
                end_line(&mut open_line);
                anyhow::bail!(cancellation(event.sequence, &c));
            }
            // Progress has its own command (`llm-jobs progress`); the text stays clean here.
            Some(Kind::Heartbeat(_) | Kind::StageChanged(_) | Kind::Milestone(_))
            | Some(Kind::Progress(_))
            | None => {}
        }
    }
    end_line(&mut open_line);
    Ok(shown)
}

/// The error a job's `failed` event (at `sequence`) ends `watch` with.
fn failure(sequence: u64, f: &v1::JobFailed) -> String {
    let e = f.error.clone().unwrap_or_default();
    format!(
        "[{sequence}] job failed after {} attempt(s): {}",
        f.attempts,
        error_text(&e)
    )
}

/// The error a job's `cancelled` event (at `sequence`) ends `watch` with: the job did not
/// complete, as `result` says with its exit code too. The reason is a client's text, shown
/// inert.
fn cancellation(sequence: u64, c: &v1::JobCancelled) -> String {
    format!("[{sequence}] job cancelled: {}", inert(&c.reason))
}

/// Ends stdout's open line, if any, so what follows starts on a line of its own.
fn end_line(open_line: &mut bool) {
    if std::mem::take(open_line) {
        println!();
    }
}

fn status_name(s: i32) -> String {
    v1::JobStatus::try_from(s)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("JOB_STATUS_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| s.to_string())
}

/// `status`.
pub async fn status(a: JobArgs) -> anyhow::Result<()> {
    let mut client = connect(&a.connection).await?;
    let job = client
        .get_job(v1::GetJobRequest { job_id: a.job_id })
        .await
        .map_err(status_error)?
        .into_inner();
    if a.json {
        return super::print_json("llmjobs.v1.Job", &job);
    }
    println!("id:            {}", job.id);
    anstream::println!("status:        {}", style::status(&status_name(job.status)));
    println!("queue:         {}", job.queue);
    println!("attempts:      {}", job.attempts);
    println!("output tokens: {}", job.output_tokens);
    // GetJob knows the last sequence once the job has ended (0 before): no figure until then.
    if job.last_sequence > 0 {
        println!("last sequence: {}", job.last_sequence);
    }
    let time = |t: Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(crate::api::convert::datetime)
            .map_or("-".to_owned(), |t| t.to_rfc3339())
    };
    println!("created:       {}", time(job.create_time));
    println!("started:       {}", time(job.start_time));
    println!("ended:         {}", time(job.end_time));
    if let Some(e) = job.error {
        println!("error:         {}", error_text(&e));
    }
    Ok(())
}

/// `result`.
pub async fn result(a: JobArgs) -> anyhow::Result<()> {
    let mut client = connect(&a.connection).await?;
    let r = client
        .get_job_result(v1::GetJobResultRequest { job_id: a.job_id })
        .await
        .map_err(status_error)?
        .into_inner();
    if a.json {
        super::print_json("llmjobs.v1.JobResult", &r)?;
        return completed(&r);
    }
    println!("{}", r.content);
    let outcome = completed(&r);
    let u = r.usage.unwrap_or_default();
    eprintln!(
        "status={} finish_reason={} model={} provider={}{} attempts={}",
        status_name(r.status),
        r.finish_reason,
        r.model,
        r.provider,
        if r.simulated { " (simulated)" } else { "" },
        r.attempts
    );
    eprintln!(
        "input_tokens={} output_tokens={}{} time_to_first_token_ms={} duration_ms={} output_tokens_per_second={:.1} queue_wait_ms={}",
        u.input_tokens,
        u.output_tokens,
        if u.estimated { " (estimated)" } else { "" },
        r.time_to_first_token_ms
            .map_or("-".into(), |v| v.to_string()),
        r.duration_ms,
        r.output_tokens_per_second,
        r.queue_wait_ms
    );
    if let Some(cost) = r.cost_usd {
        eprintln!("cost_usd={cost:.6}");
    }
    if let Some(s) = r.streaming_stats {
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        eprintln!(
            "chunks={} bytes={} inter_token_latency_p50_ms={} p95_ms={}",
            s.chunks,
            s.bytes,
            ms(s.inter_token_latency_p50_ms),
            ms(s.inter_token_latency_p95_ms)
        );
    }
    if !r.upstream_request_id.is_empty() {
        eprintln!("upstream_request_id={}", r.upstream_request_id);
    }
    if let Some(so) = r.structured_output {
        eprintln!("structured_output valid={}", so.valid);
        for e in so.errors {
            eprintln!(
                "  {} {}",
                if e.path.is_empty() { "/" } else { &e.path },
                e.message
            );
        }
    }
    for f in r.attempt_errors {
        let e = f.error.unwrap_or_default();
        eprintln!("attempt {} failed: {}", f.attempt, error_text(&e));
    }
    if let Some(e) = r.error {
        eprintln!("error: {}", error_text(&e));
    }
    outcome
}

/// Scripts tell a completed job from a failed or cancelled one by `result`'s exit code.
fn completed(r: &v1::JobResult) -> anyhow::Result<()> {
    if r.status() != v1::JobStatus::Completed {
        anyhow::bail!("the job did not complete: {}", status_name(r.status));
    }
    Ok(())
}

fn enum_name(full: &str, prefix: &str) -> String {
    full.trim_start_matches(prefix).to_lowercase()
}

/// A stage's status as shown to people. The wire calls a stage a cancel ended "failed" (the
/// attempt ended there without finishing it); in a cancelled job's history that reads as an
/// error, so it shows as "stopped".
fn stage_status_name(status: v1::StageStatus, cancelled: bool) -> String {
    if cancelled && status == v1::StageStatus::Failed {
        return "stopped".into();
    }
    enum_name(status.as_str_name(), "STAGE_STATUS_")
}

/// `progress`.
pub async fn progress(a: ProgressArgs) -> anyhow::Result<()> {
    let mut client = connect(&a.job.connection).await?;
    if a.history {
        let mut page_token = String::new();
        loop {
            let page = client
                .list_job_progress_events(v1::ListJobProgressEventsRequest {
                    job_id: a.job.job_id.clone(),
                    page_size: 1000,
                    page_token,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            for e in &page.events {
                if a.job.json {
                    super::print_json("llmjobs.v1.ProgressEvent", e)?;
                    continue;
                }
                let time = e
                    .time
                    .as_ref()
                    .and_then(crate::api::convert::datetime)
                    .map_or("-".to_owned(), |t| t.format("%H:%M:%S%.3f").to_string());
                match &e.kind {
                    Some(v1::progress_event::Kind::StageChanged(c)) => {
                        let cur = c.current.unwrap_or_default();
                        let cancelled = cur.stage() == v1::Stage::Cancelled;
                        let prev = c.previous.map_or(String::new(), |p| {
                            format!(
                                " (after {} {} in {} ms)",
                                enum_name(p.stage().as_str_name(), "STAGE_"),
                                stage_status_name(p.status(), cancelled),
                                p.duration_ms.unwrap_or(0)
                            )
                        });
                        println!(
                            "{time} attempt {} stage {}{prev}",
                            c.attempt,
                            enum_name(cur.stage().as_str_name(), "STAGE_")
                        );
                    }
                    Some(v1::progress_event::Kind::Milestone(m)) => println!(
                        "{time} attempt {} milestone {} at {} tokens{}{}",
                        m.attempt,
                        enum_name(m.kind().as_str_name(), "MILESTONE_KIND_"),
                        m.output_tokens,
                        m.fraction
                            .map_or(String::new(), |f| format!(" ({:.0} %)", f * 100.0)),
                        if m.detail.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", m.detail)
                        }
                    ),
                    None => {}
                }
            }
            if page.next_page_token.is_empty() {
                return Ok(());
            }
            page_token = page.next_page_token;
        }
    }
    let p = client
        .get_job_progress(v1::GetJobProgressRequest {
            job_id: a.job.job_id,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if a.job.json {
        return super::print_json("llmjobs.v1.JobProgress", &p);
    }
    println!("status:         {}", status_name(p.status));
    println!(
        "stage:          {} (attempt {}/{})",
        enum_name(p.stage().as_str_name(), "STAGE_"),
        p.attempt,
        p.max_attempts
    );
    println!("output tokens:  {}", output_tokens(&p));
    if let Some(f) = p.fraction {
        println!("progress:       {:.0} %", f * 100.0);
    }
    println!("tokens/s:       {:.1}", p.output_tokens_per_second);
    if let Some(t) = p.time_to_first_token_ms {
        println!("first token:    {t} ms");
    }
    if let Some(eta) = p
        .estimated_completion_time
        .as_ref()
        .and_then(crate::api::convert::datetime)
    {
        println!("eta:            {}", eta.to_rfc3339());
    }
    if let Some(w) = &p.worker {
        println!(
            "worker:         {} rss={} cpu={}",
            w.worker_id,
            w.resident_memory_mib
                .map_or("-".to_owned(), |m| format!("{m:.1} MiB")),
            w.cpu_percent
                .map_or("-".to_owned(), |c| format!("{c:.1} %"))
        );
    }
    let cancelled = p.stage() == v1::Stage::Cancelled;
    for s in &p.stages {
        println!(
            "  {:<22} {:<10} {}",
            enum_name(s.stage().as_str_name(), "STAGE_"),
            stage_status_name(s.status(), cancelled),
            s.duration_ms.map_or(String::new(), |d| format!("{d} ms"))
        );
    }
    Ok(())
}

/// The output tokens of `progress`: so far, and of about how many with what the estimate
/// rests on when there is one (`12 of ~200 (recent_jobs, 30 jobs)`); only the count without.
fn output_tokens(p: &v1::JobProgress) -> String {
    let Some(total) = p.estimated_output_tokens else {
        return p.output_tokens.to_string();
    };
    let sample = if p.estimate_sample_size > 0 {
        format!(", {} jobs", p.estimate_sample_size)
    } else {
        String::new()
    };
    format!(
        "{} of ~{total} ({}{sample})",
        p.output_tokens,
        enum_name(p.estimate_basis().as_str_name(), "ESTIMATE_BASIS_"),
    )
}

/// `cancel` arguments.
#[derive(clap::Args, Clone, Debug)]
pub struct CancelArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: Connection,
    /// The job's id.
    pub job_id: String,
    /// Why (kept with the cancelled event).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Print the job as canonical protobuf JSON.
    #[arg(long)]
    pub json: bool,
}

/// `jobs` arguments.
#[derive(clap::Args, Clone, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: Connection,
    /// Only this status (queued, running, completed, failed, cancelled).
    #[arg(long)]
    pub status: Option<String>,
    /// Only this job type.
    #[arg(long = "job-type")]
    pub job_type: Option<String>,
    /// Only jobs with this tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Jobs to show (newest first).
    #[arg(long, default_value_t = 20)]
    pub limit: i32,
    /// Continue after a previous page (the token it printed).
    #[arg(long = "page-token", default_value = "")]
    pub page_token: String,
    /// Print the page as canonical protobuf JSON (a ListJobsResponse).
    #[arg(long)]
    pub json: bool,
}

/// `jobs`: the newest jobs, filtered.
pub async fn list(a: ListArgs) -> anyhow::Result<()> {
    let status = match a.status.as_deref() {
        None => v1::JobStatus::Unspecified,
        Some(s) => v1::JobStatus::from_str_name(&format!("JOB_STATUS_{}", s.to_uppercase()))
            .ok_or_else(|| anyhow::anyhow!("unknown status {s:?}"))?,
    };
    let mut client = connect(&a.connection).await?;
    let r = client
        .list_jobs(v1::ListJobsRequest {
            page_size: a.limit,
            status: status.into(),
            job_type: a.job_type.unwrap_or_default(),
            tag: a.tag.unwrap_or_default(),
            page_token: a.page_token,
            ..Default::default()
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if a.json {
        return super::print_json("llmjobs.v1.ListJobsResponse", &r);
    }
    let rows = r.jobs.iter().map(|j| {
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            j.id,
            style::status(&status_name(j.status)),
            j.queue,
            j.attempts,
            j.create_time
                .as_ref()
                .and_then(crate::api::convert::datetime)
                .map_or("-".to_owned(), |t| t
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            j.tags.join(",")
        )
    });
    let header = "JOB\tSTATUS\tQUEUE\tATTEMPTS\tCREATED\tTAGS".to_owned();
    anstream::print!("{}", style::table(std::iter::once(header).chain(rows)));
    if !r.next_page_token.is_empty() {
        eprintln!("more: --page-token {}", r.next_page_token);
    }
    Ok(())
}

/// `cancel`.
pub async fn cancel(a: CancelArgs) -> anyhow::Result<()> {
    let mut client = connect(&a.connection).await?;
    let job = client
        .cancel_job(v1::CancelJobRequest {
            job_id: a.job_id,
            reason: a.reason,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if a.json {
        return super::print_json("llmjobs.v1.Job", &job);
    }
    anstream::println!("{} {}", job.id, style::status(&status_name(job.status)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic_types::{ErrorDetails, StatusExt};

    use super::{error_chain, error_text, output_tokens, status_error};
    use crate::proto::v1;

    #[test]
    fn job_errors_reach_the_terminal_with_their_escape_sequences_inert() {
        let e = v1::JobError {
            code: "upstream_bad_request".into(),
            message: "bad\u{1b}[2J \u{1b}]0;PWNED\u{7} request".into(),
        };
        let shown = error_text(&e);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert_eq!(
            shown,
            "upstream_bad_request: bad\\u{1b}[2J \\u{1b}]0;PWNED\\u{7} request"
        );
    }

    #[test]
    fn output_tokens_name_a_total_only_when_there_is_an_estimate() {
        let unknown = v1::JobProgress {
            output_tokens: 12,
            estimated_output_tokens: None,
            estimate_basis: v1::EstimateBasis::None.into(),
            ..Default::default()
        };
        assert_eq!(output_tokens(&unknown), "12");
        let recent = v1::JobProgress {
            output_tokens: 12,
            estimated_output_tokens: Some(200),
            estimate_basis: v1::EstimateBasis::RecentJobs.into(),
            estimate_sample_size: 30,
            ..Default::default()
        };
        assert_eq!(output_tokens(&recent), "12 of ~200 (recent_jobs, 30 jobs)");
        let bound = v1::JobProgress {
            output_tokens: 0,
            estimated_output_tokens: Some(64),
            estimate_basis: v1::EstimateBasis::MaxTokens.into(),
            ..Default::default()
        };
        assert_eq!(output_tokens(&bound), "0 of ~64 (max_tokens)");
    }

    #[test]
    fn a_cause_that_repeats_its_parent_is_left_out() {
        let inner = std::io::Error::other("tcp connect error");
        let e = anyhow::Error::new(inner)
            .context("tcp connect error")
            .context("cannot connect to http://127.0.0.1:1");
        assert_eq!(
            error_chain(&e),
            "cannot connect to http://127.0.0.1:1: tcp connect error"
        );
        let e = anyhow::anyhow!("refused").context("transport error");
        assert_eq!(error_chain(&e), "transport error: refused");
    }

    #[test]
    fn a_violation_the_message_says_is_printed_once() {
        let mut details = ErrorDetails::new();
        details.add_bad_request_violation("job_id", "must be a UUID");
        details.add_bad_request_violation("after_sequence", "must be at most 9");
        let status = tonic::Status::with_error_details(
            Code::InvalidArgument,
            "invalid argument: job_id: must be a UUID",
            details,
        );
        let text = status_error(status).to_string();
        assert_eq!(text.matches("job_id: must be a UUID").count(), 1, "{text}");
        assert!(
            text.contains("\n  after_sequence: must be at most 9"),
            "{text}"
        );
    }

    #[test]
    fn the_status_code_is_printed_once() {
        let status = tonic::Status::invalid_argument("invalid argument: job_id: must be a UUID");
        assert_eq!(
            status_error(status).to_string(),
            "InvalidArgument: job_id: must be a UUID"
        );
        let status = tonic::Status::permission_denied("Permission denied: needs operator");
        assert_eq!(
            status_error(status).to_string(),
            "PermissionDenied: needs operator"
        );
        // Only an opening of the code's words followed by `: ` is taken off.
        let status = tonic::Status::not_found("job 42 not found");
        assert_eq!(
            status_error(status).to_string(),
            "NotFound: job 42 not found"
        );
        let status = tonic::Status::unavailable("unavailable store");
        assert_eq!(
            status_error(status).to_string(),
            "Unavailable: unavailable store"
        );
    }

    #[test]
    fn a_rate_limit_shows_its_retry_delay() {
        let mut details = ErrorDetails::new();
        details.set_retry_info(Some(std::time::Duration::from_millis(2_500)));
        let status =
            tonic::Status::with_error_details(Code::ResourceExhausted, "rate limit", details);
        let text = status_error(status).to_string();
        assert!(text.ends_with("retry in 2.5 s"), "{text}");
    }
}
