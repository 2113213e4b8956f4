//! What an attempt records in the metrics ([`crate::metrics`]) when it ends: its upstream
//! call (durations, tokens, error type) and its runtime by outcome.

use std::time::Duration;

use super::{AttemptError, End};
use crate::{
    job::Job,
    metrics::{CallFigures, Ended, Outcome},
    worker::{Worker, generate::Progress},
};

impl Worker {
    /// Records the attempt's upstream call as generation `end`ed it: a completed or failed
    /// call with its durations (a failed one with its error type); one stopped by a cancel,
    /// a lost lease or a shutdown with its tokens only (they were spent, but its durations
    /// say nothing of the upstream). Nothing when no request went out.
    pub(super) fn measure_call(&self, progress: &Progress, end: &End) {
        if !progress.called {
            return;
        }
        let error = match end {
            End::Failed(AttemptError::Shutdown) | End::Stopped(_) => None,
            End::Failed(e) => Some(e.to_job_error().code),
            End::Completed => None,
        };
        let timed = matches!(end, End::Completed) || error.is_some();
        let o = &progress.outcome;
        let generating = match (progress.first_token_at, progress.last_token_at) {
            (Some(first), Some(last)) if last > first => Some(last - first),
            _ => None,
        };
        let tokens = o.usage.output_tokens;
        let figures = CallFigures {
            duration: Duration::from_millis(o.duration_ms),
            first_token: o.time_to_first_token_ms.map(Duration::from_millis),
            per_output_token: generating
                .filter(|_| tokens >= 2)
                .map(|g| g.div_f64((tokens - 1) as f64)),
            input_tokens: (!o.usage.estimated).then_some(o.usage.input_tokens),
            output_tokens: tokens,
            error: error.as_deref(),
        };
        self.deps
            .metrics
            .call_ended(&progress.call, &figures, timed);
    }

    /// Records how the attempt ended (`outcome`) and, when that ended the job, how the job
    /// ended.
    pub(super) fn measure_end(&self, job: &Job, progress: &Progress, outcome: Outcome) {
        let metrics = &self.deps.metrics;
        metrics.attempt_ended(&job.queue, outcome, progress.began.elapsed());
        let ended = match outcome {
            Outcome::Completed => Ended::Completed,
            Outcome::Failed => Ended::Failed,
            Outcome::Cancelled => Ended::Cancelled,
            Outcome::Retried => return,
        };
        metrics.ended(&job.queue, ended);
    }
}
