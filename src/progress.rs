//! Progress of a job: the stages of an attempt, the estimate of its total output, the progress
//! fraction and the milestones it crosses.
//!
//! A worker keeps a [`JobProgress`] snapshot in Redis (see
//! [`crate::events::EventLog::append_tracked`]) and its stage changes and milestones in the
//! store; [`Stages::apply`] rebuilds the stages of an attempt from stored stage changes when
//! the snapshot has expired. The types are in [`types`].

pub mod types;

use chrono::{DateTime, Utc};

pub use types::{
    EstimateBasis, JobProgress, Milestone, MilestoneKind, ProgressEvent, ProgressEventKind,
    ProgressRecord, ProgressUpdate, Stage, StageChanged, StageState, StageStatus, WorkerResources,
};

/// The non-terminal stages of every attempt, in order.
pub const ATTEMPT_STAGES: [Stage; 6] = [
    Stage::Queued,
    Stage::Dispatched,
    Stage::Connecting,
    Stage::AwaitingFirstToken,
    Stage::Generating,
    Stage::Finalizing,
];

/// Fewest completed jobs of a job type and model before their median is the estimate.
pub const MIN_ESTIMATE_SAMPLE: usize = 5;
/// Most recent completed jobs the estimate looks at.
pub const ESTIMATE_WINDOW: i64 = 50;
/// Largest fraction before the job has completed: 1.0 means done.
pub const MAX_RUNNING_FRACTION: f64 = 0.99;

/// True for the completed, failed and cancelled stages.
pub fn is_terminal(stage: Stage) -> bool {
    matches!(stage, Stage::Completed | Stage::Failed | Stage::Cancelled)
}

/// The stages of one attempt with their status and timings.
#[derive(Clone, Debug, PartialEq)]
pub struct Stages {
    /// The attempt they belong to.
    pub attempt: u32,
    /// The six attempt stages in order, then the terminal stage once reached.
    pub states: Vec<StageState>,
}

impl Stages {
    /// A fresh attempt: QUEUED active since `queued_at`, every other stage pending.
    pub fn new(attempt: u32, queued_at: DateTime<Utc>) -> Stages {
        let states = ATTEMPT_STAGES
            .iter()
            .map(|&stage| StageState {
                stage,
                status: if stage == Stage::Queued {
                    StageStatus::Active
                } else {
                    StageStatus::Pending
                },
                start_time: (stage == Stage::Queued).then_some(queued_at),
                duration_ms: None,
            })
            .collect();
        Stages { attempt, states }
    }

    /// The active stage, or the terminal stage once reached.
    pub fn current(&self) -> Stage {
        self.states
            .iter()
            .rev()
            .find(|s| {
                s.status() == StageStatus::Active
                    || (is_terminal(s.stage()) && s.status() == StageStatus::Completed)
            })
            .map_or(Stage::Queued, StageState::stage)
    }

    /// The active stage's state, if one is active.
    pub fn active(&self) -> Option<&StageState> {
        self.states
            .iter()
            .find(|s| s.status() == StageStatus::Active)
    }

    /// Applies one stage change: a change for a later attempt starts a fresh set; otherwise
    /// the previous stage takes its final status, skipped stages are marked, and the current
    /// stage becomes active (or, for a terminal stage, is appended as reached).
    pub fn apply(&mut self, change: &StageChanged) {
        if change.attempt > self.attempt {
            self.attempt = change.attempt;
            self.states = Stages::new(change.attempt, Utc::now()).states;
            // The fresh QUEUED stage starts when the change says.
            if let (Some(first), Some(current)) = (self.states.first_mut(), &change.current) {
                first.start_time = current.start_time;
            }
            return;
        }
        if let Some(prev) = &change.previous
            && let Some(s) = self.states.iter_mut().find(|s| s.stage == prev.stage)
        {
            *s = *prev;
        }
        for skipped in &change.skipped {
            if let Some(s) = self.states.iter_mut().find(|s| s.stage == *skipped) {
                s.status = StageStatus::Skipped;
                s.start_time = None;
                s.duration_ms = None;
            }
        }
        if let Some(current) = &change.current {
            match self.states.iter_mut().find(|s| s.stage == current.stage) {
                Some(s) => *s = *current,
                None => self.states.push(*current),
            }
        }
    }
}

/// The stage change of a job cancelled while it waited for attempt `attempt` in its queue
/// (since `since`): QUEUED ends unfinished, the rest of the attempt is skipped.
pub fn cancelled_in_queue(attempt: u32, since: DateTime<Utc>, now: DateTime<Utc>) -> StageChanged {
    StageChanged {
        attempt,
        current: Some(StageState {
            stage: Stage::Cancelled,
            status: StageStatus::Completed,
            start_time: Some(now),
            duration_ms: Some(0),
        }),
        previous: Some(StageState {
            stage: Stage::Queued,
            status: StageStatus::Failed,
            start_time: Some(since),
            duration_ms: Some(u64::try_from((now - since).num_milliseconds()).unwrap_or(0)),
        }),
        skipped: ATTEMPT_STAGES[1..].to_vec(),
    }
}

/// What the total output of a job is expected to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// Expected output tokens; `None` without a basis.
    pub tokens: Option<u64>,
    /// Where `tokens` comes from.
    pub basis: EstimateBasis,
    /// Completed jobs behind a `RecentJobs` estimate (0 otherwise).
    pub sample_size: u32,
}

/// The estimate for a job: the median output of `recent` completed jobs of the same job type
/// and model when there are at least [`MIN_ESTIMATE_SAMPLE`] (capped by `max_tokens`, which the
/// output cannot exceed), else `max_tokens`, else none.
pub fn estimate(recent: &[u64], max_tokens: Option<u32>) -> Estimate {
    if recent.len() >= MIN_ESTIMATE_SAMPLE {
        let mut sorted = recent.to_vec();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2].max(1);
        let capped = max_tokens.map_or(median, |m| median.min(u64::from(m.max(1))));
        return Estimate {
            tokens: Some(capped),
            basis: EstimateBasis::RecentJobs,
            sample_size: u32::try_from(sorted.len()).unwrap_or(u32::MAX),
        };
    }
    match max_tokens {
        Some(m) => Estimate {
            tokens: Some(u64::from(m.max(1))),
            basis: EstimateBasis::MaxTokens,
            sample_size: 0,
        },
        None => Estimate {
            tokens: None,
            basis: EstimateBasis::None,
            sample_size: 0,
        },
    }
}

/// `output_tokens / estimate`, at most [`MAX_RUNNING_FRACTION`] while running and 1 once
/// completed; `None` without an estimate. It never falls while `output_tokens` grows.
pub fn fraction(output_tokens: u64, estimate: Option<u64>, completed: bool) -> Option<f64> {
    if completed {
        return Some(1.0);
    }
    let total = estimate?;
    Some((output_tokens as f64 / total.max(1) as f64).min(MAX_RUNNING_FRACTION))
}

/// The 25/50/75 % milestones crossed when the fraction moved from `before` to `after`.
pub fn crossed(before: Option<f64>, after: Option<f64>) -> Vec<MilestoneKind> {
    let (before, Some(after)) = (before.unwrap_or(0.0), after) else {
        return Vec::new();
    };
    [
        (0.25, MilestoneKind::Progress25),
        (0.50, MilestoneKind::Progress50),
        (0.75, MilestoneKind::Progress75),
    ]
    .into_iter()
    .filter(|(at, _)| before < *at && after >= *at)
    .map(|(_, kind)| kind)
    .collect()
}

#[cfg(test)]
mod tests;
