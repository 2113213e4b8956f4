//! Request validation: one validator per request message, each reporting every violation
//! with its field path, so a client learns everything wrong with a request at once.
//!
//! - [`submit()`] (`SubmitJobRequest`), with `generation` for its `GenerationConfig` and
//!   `labels` for its metadata, tags and idempotency key;
//! - [`batch()`] (`SubmitBatchRequest`), every job through [`submit()`];
//! - [`cancel`] (the reasons of `CancelJobRequest` and `CancelBatchRequest`);
//! - [`filters`] (list filters);
//! - [`id`] reads every job or batch id a client sends; `text` says what text shown to
//!   people may hold ([`printable`], [`metadata_printable`]).

mod batch;
pub mod cancel;
pub mod filters;
mod generation;
mod labels;
mod submit;
mod text;

pub use batch::{MAX_REPORTED_VIOLATIONS, batch};
pub use submit::submit;
pub use text::{metadata_printable, printable};

use crate::{error::FieldViolation, job::Limits};

/// What validation needs from the server's configuration.
#[derive(Clone, Debug)]
pub struct Rules {
    /// Accepted job types.
    pub job_types: Vec<String>,
    /// Model used when the request names none.
    pub default_model: String,
    /// Attempts per job.
    pub max_attempts: u32,
    /// Input limits.
    pub limits: Limits,
    /// Whether non-simulated models can be served: an API key is set, or the base URL is not
    /// OpenAI's (self-hosted servers often need no key).
    pub upstream_configured: bool,
}

/// Reads `raw`, the job or batch id a client sent in `field`: a UUID in the hyphenated form
/// the API writes, in either case (RFC 9562 §4: UUIDs are case-insensitive on input, and some
/// platforms print them in upper case). Other spellings (braces, `urn:uuid:`, no hyphens)
/// would read as the same job under a second name in logs and clients' maps, so they are
/// refused, naming the form to send.
pub fn id(field: impl Into<String>, raw: &str) -> Result<uuid::Uuid, FieldViolation> {
    if raw.is_empty() {
        return Err(FieldViolation::new(field, "must not be empty"));
    }
    match uuid::Uuid::try_parse(raw) {
        Ok(id) if id.hyphenated().to_string().eq_ignore_ascii_case(raw) => Ok(id),
        Ok(id) => Err(FieldViolation::new(
            field,
            format!("must be a UUID as the API writes it (with hyphens): {id}"),
        )),
        Err(_) => Err(FieldViolation::new(field, "must be a UUID")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_read_only_in_the_form_the_api_writes() {
        let canonical = "0190b4d2-5e6f-7000-8abc-0123456789ab";
        assert_eq!(
            id("job_id", canonical).map(|u| u.to_string()).as_deref(),
            Ok(canonical)
        );
        assert_eq!(
            id("job_id", &canonical.to_uppercase())
                .map(|u| u.to_string())
                .as_deref(),
            Ok(canonical)
        );
        for other in [
            "{0190b4d2-5e6f-7000-8abc-0123456789ab}",
            "urn:uuid:0190b4d2-5e6f-7000-8abc-0123456789ab",
            "0190b4d25e6f70008abc0123456789ab",
        ] {
            let v = id("job_ids[2]", other).expect_err(other);
            assert_eq!(v.field, "job_ids[2]");
            assert!(v.description.ends_with(canonical), "{other}: {v:?}");
        }
        for (bad, description) in [("", "must not be empty"), ("x", "must be a UUID")] {
            let v = id("batch_id", bad).expect_err(bad);
            assert_eq!(
                (v.field.as_str(), v.description.as_str()),
                ("batch_id", description)
            );
        }
    }
}
