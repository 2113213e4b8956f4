//! Removing secrets from text that leaves the process: logs, error messages, the audit log and
//! (when so configured) stored prompts.
//!
//! Built in: OpenAI-style keys (`sk-…`), `Bearer …` credentials, llm-jobs keys (the secret
//! part; the prefix stays, it names the key), AWS access key ids (`AKIA…`, `ASIA…`) and PEM
//! private key blocks. More patterns (regular expressions) come from
//! `LLMJOBS_REDACT_PATTERNS` through [`configure`], once at start-up.
//!
//! [`Writer`] wraps the log output so every formatted log line passes through [`redact`].

use std::{borrow::Cow, io, sync::OnceLock};

use regex::Regex;

/// What replaces a secret.
pub const MASK: &str = "[redacted]";

struct Rule {
    pattern: Regex,
    replacement: &'static str,
}

fn builtin() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        let rule = |pattern: &str, replacement| Rule {
            pattern: Regex::new(pattern).expect("built-in redaction patterns compile"),
            replacement,
        };
        vec![
            rule(
                r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|$)",
                "[redacted private key]",
            ),
            rule(r"\bsk-[A-Za-z0-9_\-]{8,}", "sk-[redacted]"),
            rule(r"(?i)\b(bearer)\s+[A-Za-z0-9\-_.=+/~]{8,}", "$1 [redacted]"),
            rule(r"\b(llmj_[0-9a-f]{12})_[0-9a-f]{8,}", "${1}_[redacted]"),
            rule(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", "$1[redacted]"),
        ]
    })
}

static EXTRA: OnceLock<Vec<Regex>> = OnceLock::new();

/// Adds operator patterns (regular expressions; each match becomes [`MASK`]). Only the first
/// call takes effect (start-up).
///
/// Errors: the first pattern that does not compile, with the reason.
pub fn configure(patterns: &[String]) -> Result<(), String> {
    let _ = EXTRA.set(compile(patterns)?);
    Ok(())
}

/// The operator patterns compiled; empty ones are skipped.
///
/// Errors: a pattern that does not compile, or one that matches the empty string (`.*`,
/// `a?`): it would mask between every two characters of every text, log lines included.
fn compile(patterns: &[String]) -> Result<Vec<Regex>, String> {
    patterns
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| {
            let re = Regex::new(p).map_err(|e| format!("redaction pattern {p:?}: {e}"))?;
            if re.is_match("") {
                return Err(format!(
                    "redaction pattern {p:?} matches the empty string, so it would mask every \
                     text (log lines included): make it match at least one character"
                ));
            }
            Ok(re)
        })
        .collect()
}

/// `text` with every secret replaced; borrowed when nothing matched.
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    for rule in builtin() {
        if let Cow::Owned(s) = rule.pattern.replace_all(&out, rule.replacement) {
            out = Cow::Owned(s);
        }
    }
    for pattern in EXTRA.get().map(Vec::as_slice).unwrap_or_default() {
        if let Cow::Owned(s) = pattern.replace_all(&out, MASK) {
            out = Cow::Owned(s);
        }
    }
    out
}

/// A log writer that redacts each write (the fmt layer writes one whole event at a time).
pub struct Writer<W>(pub W);

impl<W: io::Write> io::Write for Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Makes [`Writer`]s around the writers of `M`.
pub struct MakeWriter<M>(pub M);

impl<'a, M: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a>
    for MakeWriter<M>
{
    type Writer = Writer<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Writer(self.0.make_writer())
    }
}

/// A URL without its password, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match url[scheme + 3..at].split_once(':') {
            Some((user, _password)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests;
