//! Validators for the reasons of `CancelJobRequest` and `CancelBatchRequest`: a reason
//! reaches every watcher (`llm-jobs watch` prints it), so it holds no terminal escapes.

use super::printable;
use crate::error::FieldViolation;

const MAX_REASON_BYTES: usize = 1024;

/// Checks a `CancelJobRequest`'s `reason`. Errors: the violation naming `reason`.
pub fn job_reason(reason: &str) -> Result<(), FieldViolation> {
    if !reason_ok(reason) {
        return Err(FieldViolation::new(
            "reason",
            "at most 1024 bytes, without control characters (tab and newline aside) or \
             bidirectional ones",
        ));
    }
    Ok(())
}

/// Checks a `CancelBatchRequest`'s `reason`, as for CancelJob. Errors: the violation naming
/// `reason`.
pub fn batch_reason(reason: &str) -> Result<(), FieldViolation> {
    if !reason_ok(reason) {
        return Err(FieldViolation::new(
            "reason",
            format!(
                "at most {MAX_REASON_BYTES} bytes, no control characters but tab and line \
                 feed, no bidirectional characters"
            ),
        ));
    }
    Ok(())
}

/// True when `reason` is short enough and printable, tabs and line feeds allowed.
fn reason_ok(reason: &str) -> bool {
    reason.len() <= MAX_REASON_BYTES && printable(&reason.replace(['\t', '\n'], " "))
}
