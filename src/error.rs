//! The crate's error type for RPC handlers, and the one place that turns errors into gRPC
//! `Status`.
//!
//! Library code returns typed errors (`store::Error`, `queue::Error`, `events::Error`,
//! `provider::Error`, and the core's `jobs::Error` and `admin::Error`); handlers lift them into [`Error`], and
//! `From<Error> for Status` picks the code. Internal details are logged here once and never sent to clients. `anyhow` is used only
//! in `main.rs`, the CLI and tests.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{admin, events, jobs, queue, store};

/// One offending request field (`google.rpc.BadRequest.FieldViolation`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field, e.g. `generation_config.temperature`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        FieldViolation {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// What an RPC can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: `INVALID_ARGUMENT` with a `BadRequest` detail listing every violation.
    #[error("invalid argument: {}", .0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; "))]
    InvalidArgument(Vec<FieldViolation>),
    /// `NOT_FOUND`; the text names what was looked for.
    #[error("{0} not found")]
    NotFound(String),
    /// `FAILED_PRECONDITION` with a human-readable reason.
    #[error("{0}")]
    FailedPrecondition(String),
    /// `ALREADY_EXISTS`: what the client tried to create exists and differs (an idempotency
    /// key reused for another request).
    #[error("{0}")]
    AlreadyExists(String),
    /// The durable store failed: `UNAVAILABLE` (or `INTERNAL` for data errors).
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The queue failed: `UNAVAILABLE`.
    #[error(transparent)]
    Queue(#[from] queue::Error),
    /// The event log failed: `UNAVAILABLE`.
    #[error(transparent)]
    Events(#[from] events::Error),
}

impl Error {
    /// A single-field `InvalidArgument`.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![FieldViolation::new(field, description)])
    }
}

impl From<crate::paging::Error> for Error {
    fn from(err: crate::paging::Error) -> Error {
        Error::invalid(err.field, err.description)
    }
}

impl From<jobs::Error> for Error {
    fn from(err: jobs::Error) -> Error {
        match err {
            jobs::Error::InvalidArgument { field, reason } => Error::invalid(field, reason),
            jobs::Error::NotFound { what } => Error::NotFound(what),
            jobs::Error::FailedPrecondition { reason } => Error::FailedPrecondition(reason),
            jobs::Error::AlreadyExists { reason } => Error::AlreadyExists(reason),
            jobs::Error::Store(e) => Error::Store(e),
            jobs::Error::Queue(e) => Error::Queue(e),
            jobs::Error::Events(e) => Error::Events(e),
        }
    }
}

impl From<jobs::Error> for Status {
    fn from(err: jobs::Error) -> Status {
        Error::from(err).into()
    }
}

impl From<admin::Error> for Error {
    fn from(err: admin::Error) -> Error {
        match err {
            admin::Error::InvalidArgument { field, reason } => Error::invalid(field, reason),
            admin::Error::NotFound { what } => Error::NotFound(what),
            admin::Error::Store(e) => Error::Store(e),
            admin::Error::Queue(e) => Error::Queue(e),
            admin::Error::Events(e) => Error::Events(e),
        }
    }
}

impl From<admin::Error> for Status {
    fn from(err: admin::Error) -> Status {
        Error::from(err).into()
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        match err {
            Error::InvalidArgument(violations) => {
                let mut details = ErrorDetails::new();
                for v in &violations {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
                Status::with_error_details(
                    Code::InvalidArgument,
                    Error::InvalidArgument(violations).to_string(),
                    details,
                )
            }
            Error::NotFound(what) => Status::not_found(format!("{what} not found")),
            Error::FailedPrecondition(why) => Status::failed_precondition(why),
            Error::AlreadyExists(why) => Status::already_exists(why),
            Error::Store(e) => {
                tracing::error!(error = %e, "store error");
                // A cut connection or a busy file may pass: the caller's retry may succeed.
                if e.is_unavailable() || e.is_transient() {
                    Status::unavailable("the job store is unavailable; retry later")
                } else {
                    Status::internal("internal store error")
                }
            }
            Error::Queue(e) => {
                tracing::error!(error = %e, "queue error");
                Status::unavailable("the job queue is unavailable; retry later")
            }
            Error::Events(e) => {
                tracing::error!(error = %e, "event log error");
                Status::unavailable("the job event log is unavailable; retry later")
            }
        }
    }
}

#[cfg(test)]
mod tests;
