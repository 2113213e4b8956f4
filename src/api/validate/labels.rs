//! Validators for the labels a client attaches to a job (`SubmitJobRequest`'s metadata, tags
//! and idempotency key): bounded, and safe to show back to people (dashboards, logs).

use std::collections::HashMap;

use super::text::{metadata_printable, printable, truncate};
use crate::{error::FieldViolation, job::Limits};

const MAX_IDEMPOTENCY_KEY_BYTES: usize = 200;

/// Checks the metadata's size and that every entry is printable (NUL is reported on its own,
/// before).
pub(super) fn metadata(
    metadata: &HashMap<String, String>,
    limits: &Limits,
    v: &mut Vec<FieldViolation>,
) {
    if metadata.len() > limits.max_metadata_entries {
        v.push(FieldViolation::new(
            "metadata",
            format!("at most {} entries", limits.max_metadata_entries),
        ));
    }
    let most = limits.max_metadata_bytes;
    if metadata.keys().any(String::is_empty) {
        v.push(FieldViolation::new(
            "metadata",
            format!("an entry has an empty key; keys must be 1..={most} bytes"),
        ));
    }
    if let Some((k, val)) = metadata
        .iter()
        .find(|(k, val)| k.len() > most || val.len() > most)
    {
        let (what, len) = if k.len() > most {
            ("key", k.len())
        } else {
            ("value", val.len())
        };
        v.push(FieldViolation::new(
            "metadata",
            format!(
                "entry {:?}: its {what} is {len} bytes; keys and values may hold at most {most} \
                 bytes",
                truncate(k)
            ),
        ));
    }
    // Metadata is shown back to people (dashboards, logs): nothing that moves a cursor,
    // rewrites a terminal or reorders text. Values may hold tabs and line breaks. (NUL has
    // its own violation.)
    if let Some((k, _)) = metadata.iter().find(|(k, val)| !metadata_printable(k, val)) {
        v.push(FieldViolation::new(
            "metadata",
            format!(
                "entry {:?}: keys may hold no control characters and values none but tab and \
                 line breaks; neither may hold bidirectional controls",
                truncate(k)
            ),
        ));
    }
}

/// Checks the idempotency key's length and characters (NUL is reported on its own, before).
pub(super) fn idempotency_key(key: &str, v: &mut Vec<FieldViolation>) {
    if key.len() > MAX_IDEMPOTENCY_KEY_BYTES || (!printable(key) && !key.contains('\0')) {
        v.push(FieldViolation::new(
            "idempotency_key",
            format!(
                "at most {MAX_IDEMPOTENCY_KEY_BYTES} bytes, without control or bidirectional \
                 characters"
            ),
        ));
    }
}

/// Checks the number of tags, each tag's length and characters, and that none repeats.
pub(super) fn tags(tags: &[String], limits: &Limits, v: &mut Vec<FieldViolation>) {
    if tags.len() > limits.max_tags {
        v.push(FieldViolation::new(
            "tags",
            format!("at most {} tags", limits.max_tags),
        ));
    }
    if tags
        .iter()
        .any(|t| t.is_empty() || t.len() > limits.max_tag_bytes || !printable(t))
    {
        v.push(FieldViolation::new(
            "tags",
            format!(
                "tags must be 1..={} bytes without control or bidirectional characters",
                limits.max_tag_bytes
            ),
        ));
    }
    // A tag is a label a job has or not; a repeat is a client's mistake, and would count
    // twice against the tag limit.
    if let Some(repeated) = tags
        .iter()
        .enumerate()
        .find(|(i, t)| tags[..*i].contains(t))
        .map(|(_, t)| t)
    {
        v.push(FieldViolation::new(
            "tags",
            format!("tag {:?} is given more than once", truncate(repeated)),
        ));
    }
}
