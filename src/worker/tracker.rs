//! The progress of one running attempt, as its worker sees it: stage changes, milestones and
//! rate-limited progress updates, each published as a job event together with a fresh
//! [`JobProgress`] snapshot, and the history to store in Postgres when the attempt ends.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::{
    events::EventKind as Kind,
    job::{Job, JobId, JobStatus},
    progress::{
        self, Estimate, JobProgress, Milestone, MilestoneKind, ProgressEvent, ProgressEventKind,
        ProgressUpdate, Stage, StageChanged, StageState, StageStatus, Stages, WorkerResources,
    },
};

/// Tracks one attempt; every method that changes something returns the events to publish.
pub(super) struct Tracker {
    job_id: JobId,
    max_attempts: u32,
    stages: Stages,
    /// When the active stage started.
    stage_started: DateTime<Utc>,
    estimate: Estimate,
    interval: Duration,
    next_update: Instant,
    /// Output tokens in the last progress update.
    reported_tokens: u64,
    /// Fraction at the last milestone check.
    fraction: Option<f64>,
    output_tokens: u64,
    output_tokens_per_second: f64,
    time_to_first_token_ms: Option<u64>,
    worker: Option<WorkerResources>,
    /// Stage changes and milestones not yet stored in Postgres.
    history: Vec<ProgressEvent>,
}

fn ms_between(from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    u64::try_from((to - from).num_milliseconds()).unwrap_or(0)
}

impl Tracker {
    /// A tracker for `job`'s current attempt, which was queued since `job.enqueued_at` and is
    /// dispatched now; progress updates go out at most every `interval`.
    pub(super) fn new(job: &Job, estimate: Estimate, interval: Duration) -> Tracker {
        Tracker {
            job_id: job.id,
            max_attempts: job.max_attempts,
            stages: Stages::new(job.attempts, job.enqueued_at),
            stage_started: job.enqueued_at,
            estimate,
            interval,
            next_update: Instant::now(),
            reported_tokens: 0,
            fraction: None,
            output_tokens: 0,
            output_tokens_per_second: 0.0,
            time_to_first_token_ms: None,
            worker: None,
            history: Vec::new(),
        }
    }

    /// The worker process's latest resource figures, shown in snapshots from now on.
    pub(super) fn set_worker(&mut self, worker: Option<WorkerResources>) {
        self.worker = worker;
    }

    /// The current snapshot (what GetJobProgress shows).
    pub(super) fn snapshot(&self) -> JobProgress {
        let stage = self.stages.current();
        let ended = progress::is_terminal(stage);
        let completed = stage == Stage::Completed;
        let fraction = progress::fraction(self.output_tokens, self.estimate.tokens, completed);
        let eta = match (self.estimate.tokens, ended) {
            (Some(total), false) if self.output_tokens_per_second > 0.0 => {
                let left = total.saturating_sub(self.output_tokens) as f64;
                let secs = left / self.output_tokens_per_second;
                chrono::Duration::try_milliseconds((secs * 1000.0) as i64).map(|d| Utc::now() + d)
            }
            _ => None,
        };
        JobProgress {
            job_id: self.job_id,
            status: if ended {
                match stage {
                    Stage::Completed => JobStatus::Completed,
                    Stage::Failed => JobStatus::Failed,
                    _ => JobStatus::Cancelled,
                }
            } else if stage == Stage::Queued {
                JobStatus::Queued
            } else {
                JobStatus::Running
            },
            attempt: self.stages.attempt,
            max_attempts: self.max_attempts,
            stage,
            stages: self.stages.states.clone(),
            output_tokens: self.output_tokens,
            estimated_output_tokens: self.estimate.tokens,
            estimate_basis: self.estimate.basis,
            estimate_sample_size: self.estimate.sample_size,
            fraction,
            output_tokens_per_second: self.output_tokens_per_second,
            estimated_completion_time: eta,
            time_to_first_token_ms: self.time_to_first_token_ms,
            worker: if ended || stage == Stage::Queued {
                None
            } else {
                self.worker.clone()
            },
            update_time: Some(Utc::now()),
        }
    }

    /// Stage changes and milestones not yet stored (taken: each is stored once).
    pub(super) fn take_history(&mut self) -> Vec<ProgressEvent> {
        std::mem::take(&mut self.history)
    }

    fn record(&mut self, kind: ProgressEventKind) {
        self.history.push(ProgressEvent {
            time: Some(Utc::now()),
            kind,
        });
    }

    /// Ends the active stage with `status` and returns its final state.
    fn close_active(&mut self, status: StageStatus, now: DateTime<Utc>) -> Option<StageState> {
        let started = self.stage_started;
        let active = *self.stages.active()?;
        Some(StageState {
            status,
            duration_ms: Some(ms_between(started, now)),
            ..active
        })
    }

    fn change(&mut self, change: StageChanged) -> Kind {
        self.stages.apply(&change);
        self.record(ProgressEventKind::StageChanged(change.clone()));
        Kind::StageChanged(change)
    }

    /// The attempt moves on to `next` (a non-terminal stage after the active one).
    pub(super) fn advance(&mut self, next: Stage) -> Kind {
        let now = Utc::now();
        let previous = self.close_active(StageStatus::Completed, now);
        self.stage_started = now;
        self.change(StageChanged {
            attempt: self.stages.attempt,
            current: Some(StageState {
                stage: next,
                status: StageStatus::Active,
                start_time: Some(now),
                duration_ms: None,
            }),
            previous,
            skipped: Vec::new(),
        })
    }

    /// Stages after the active one that the attempt never reached.
    fn unreached(&self) -> Vec<Stage> {
        let active = self.stages.current();
        progress::ATTEMPT_STAGES
            .iter()
            .filter(|s| (**s as u8) > (active as u8))
            .copied()
            .collect()
    }

    /// The attempt ended in `terminal` (completed, failed or cancelled). For completed jobs
    /// the active stage (finalizing) completes; otherwise it failed.
    pub(super) fn end(&mut self, terminal: Stage) -> Kind {
        let now = Utc::now();
        let status = if terminal == Stage::Completed {
            StageStatus::Completed
        } else {
            StageStatus::Failed
        };
        let skipped = self.unreached();
        let previous = self.close_active(status, now);
        self.stage_started = now;
        self.change(StageChanged {
            attempt: self.stages.attempt,
            current: Some(StageState {
                stage: terminal,
                status: StageStatus::Completed,
                start_time: Some(now),
                duration_ms: Some(0),
            }),
            previous,
            skipped,
        })
    }

    /// The attempt failed and the job waits for attempt + 1: its QUEUED stage starts at
    /// `retry_at`. Returns the retry milestone and the stage change.
    pub(super) fn retry(&mut self, error_code: &str, retry_at: DateTime<Utc>) -> [Kind; 2] {
        let milestone = self.milestone(MilestoneKind::Retry, error_code);
        let now = Utc::now();
        let skipped = self.unreached();
        let previous = self.close_active(StageStatus::Failed, now);
        self.stage_started = retry_at;
        let next = self.stages.attempt + 1;
        let change = self.change(StageChanged {
            attempt: next,
            current: Some(StageState {
                stage: Stage::Queued,
                status: StageStatus::Active,
                start_time: Some(retry_at),
                duration_ms: None,
            }),
            previous,
            skipped,
        });
        self.output_tokens = 0;
        self.output_tokens_per_second = 0.0;
        self.time_to_first_token_ms = None;
        self.fraction = None;
        [milestone, change]
    }

    /// A milestone now, with `detail`.
    pub(super) fn milestone(&mut self, kind: MilestoneKind, detail: &str) -> Kind {
        let m = Milestone {
            kind,
            attempt: self.stages.attempt,
            output_tokens: self.output_tokens,
            fraction: progress::fraction(self.output_tokens, self.estimate.tokens, false),
            detail: detail.chars().take(1024).collect(),
        };
        self.record(ProgressEventKind::Milestone(m.clone()));
        Kind::Milestone(m)
    }

    /// The first output token arrived `ttft` after the request was sent.
    pub(super) fn first_token(&mut self, ttft: Duration) -> [Kind; 2] {
        self.time_to_first_token_ms = Some(u64::try_from(ttft.as_millis()).unwrap_or(u64::MAX));
        self.output_tokens = self.output_tokens.max(1);
        let stage = self.advance(Stage::Generating);
        [stage, self.milestone(MilestoneKind::FirstToken, "")]
    }

    /// Output tokens delivered so far, at `rate` tokens per second. Returns a progress update
    /// when one is due (at most every `interval`, and only when the count moved) and the
    /// milestones crossed.
    pub(super) fn tokens(&mut self, output_tokens: u64, rate: f64) -> Vec<Kind> {
        self.output_tokens = output_tokens;
        self.output_tokens_per_second = rate;
        let now = Instant::now();
        if now < self.next_update || output_tokens == self.reported_tokens {
            return Vec::new();
        }
        self.next_update = now + self.interval;
        self.reported_tokens = output_tokens;
        let fraction = progress::fraction(output_tokens, self.estimate.tokens, false);
        let mut events = vec![Kind::Progress(ProgressUpdate {
            attempt: self.stages.attempt,
            output_tokens,
            estimated_output_tokens: self.estimate.tokens,
            fraction,
            output_tokens_per_second: rate,
        })];
        let crossed = progress::crossed(self.fraction, fraction);
        self.fraction = fraction;
        for kind in crossed {
            events.push(self.milestone(kind, ""));
        }
        events
    }
}

#[cfg(test)]
mod tests;
