//! Client commands: talk to a running llm-jobs server over gRPC and print for humans (text to
//! stdout, progress and figures to stderr). This module connects and says errors; each
//! command is a module of its own:
//!
//! - `submit`: `submit` (with `--stream`, through `watch`'s printer);
//! - `watch`: `watch`, a job's events as they arrive;
//! - `jobs`: `status`, `result`, `cancel` and `jobs` (the list);
//! - `progress`: `progress`, now or its history.

mod jobs;
mod progress;
mod submit;
mod watch;

pub use jobs::{CancelArgs, JobArgs, ListArgs, cancel, list, result, status};
pub use progress::{ProgressArgs, progress};
pub use submit::{SubmitArgs, submit};
pub use watch::{WatchArgs, watch};

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use tonic::service::interceptor::InterceptedService;

use crate::{
    auth::client::Bearer,
    proto::v1::{self, job_service_client::JobServiceClient},
};

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

impl Connection {
    /// The server URL, with `http://` added when no scheme is given.
    /// The scheme is lowercased (schemes are case-insensitive, RFC 3986 §3.1).
    pub fn url(&self) -> String {
        match self.server.split_once("://") {
            Some((scheme, rest)) => format!("{}://{rest}", scheme.to_ascii_lowercase()),
            None => format!("http://{}", self.server),
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
        // tonic would take any other scheme as plaintext HTTP/2: `ftp://` or a mistyped
        // `htps://` must not quietly send the key unencrypted.
        anyhow::ensure!(
            url.starts_with("http://") || url.starts_with("https://"),
            "bad server URL {url}: the scheme must be http:// or https://"
        );
        // A CA file asks for TLS: with http:// the key would go out in plaintext.
        anyhow::ensure!(
            self.ca_file.is_none() || url.starts_with("https://"),
            "--ca-file needs an https:// server URL (got {url})"
        );
        let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())
            .with_context(|| format!("bad server URL {url}"))?;
        if url.starts_with("https://") {
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

fn status_name(s: i32) -> String {
    v1::JobStatus::try_from(s)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("JOB_STATUS_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| s.to_string())
}

fn enum_name(full: &str, prefix: &str) -> String {
    full.trim_start_matches(prefix).to_lowercase()
}

#[cfg(test)]
mod tests;
