use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

use super::{error_chain, error_text, status_error};
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
    let status = tonic::Status::with_error_details(Code::ResourceExhausted, "rate limit", details);
    let text = status_error(status).to_string();
    assert!(text.ends_with("retry in 2.5 s"), "{text}");
}
