//! How generation ended, and why an attempt failed.

use std::time::Duration;

use super::super::StopReason;
use crate::{job::JobError, provider};

/// How generation ended.
pub(in crate::worker) enum End {
    Completed,
    Failed(AttemptError),
    Stopped(StopReason),
}

impl End {
    /// The `error.type` of the upstream call that ended so (`None`: it completed): the
    /// failure's stable code, or why the attempt stopped.
    pub(in crate::worker) fn error_type(&self) -> Option<&'static str> {
        match self {
            End::Completed => None,
            End::Failed(AttemptError::Provider(e)) => Some(e.code()),
            End::Failed(AttemptError::Timeout) => Some("timeout"),
            End::Failed(AttemptError::FirstTokenTimeout) => Some("first_token_timeout"),
            End::Failed(AttemptError::Shutdown) | End::Stopped(StopReason::Shutdown) => {
                Some("worker_shutdown")
            }
            End::Stopped(StopReason::Cancelled) => Some("cancelled"),
            End::Stopped(StopReason::LeaseLost) => Some("lease_lost"),
        }
    }
}

/// An attempt failure: the provider's, or a timeout of ours.
pub(in crate::worker) enum AttemptError {
    Provider(provider::Error),
    Timeout,
    FirstTokenTimeout,
    /// The worker shut down before the attempt ended; never counts against the job.
    Shutdown,
}

impl AttemptError {
    pub(in crate::worker) fn to_job_error(&self) -> JobError {
        match self {
            AttemptError::Provider(e) => JobError {
                code: e.code().to_owned(),
                message: e.to_string(),
            },
            AttemptError::Timeout => JobError {
                code: "timeout".to_owned(),
                message: "the attempt exceeded the job timeout".to_owned(),
            },
            AttemptError::Shutdown => JobError {
                code: "worker_shutdown".to_owned(),
                message: "the worker shut down during the attempt; the job goes back to its queue"
                    .to_owned(),
            },
            AttemptError::FirstTokenTimeout => JobError {
                code: "first_token_timeout".to_owned(),
                message: "no token arrived within the first-token timeout".to_owned(),
            },
        }
    }

    pub(in crate::worker) fn is_retryable(&self) -> bool {
        match self {
            AttemptError::Provider(e) => e.is_retryable(),
            AttemptError::Timeout | AttemptError::FirstTokenTimeout | AttemptError::Shutdown => {
                true
            }
        }
    }

    pub(in crate::worker) fn retry_after(&self) -> Option<Duration> {
        match self {
            AttemptError::Provider(e) => e.retry_after(),
            AttemptError::Timeout | AttemptError::FirstTokenTimeout | AttemptError::Shutdown => {
                None
            }
        }
    }
}
