//! The progress types of a job: stages and their states, stage changes, milestones, progress
//! updates, the snapshot GetJobProgress shows and the history kept in the store.
//!
//! Plain Rust: `crate::api` maps them to and from `llmjobs.v1` (the same names there).

use chrono::{DateTime, Utc};

use crate::job::{JobId, JobStatus};

/// A stage of an attempt, in order, then the terminal stages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Waiting in its queue (the default).
    #[default]
    Queued,
    /// Claimed by a worker.
    Dispatched,
    /// Connecting to the upstream.
    Connecting,
    /// Request sent, no token yet.
    AwaitingFirstToken,
    /// Tokens arriving.
    Generating,
    /// Output done, result being stored.
    Finalizing,
    /// Terminal: completed.
    Completed,
    /// Terminal: failed (for the attempt or for good).
    Failed,
    /// Terminal: cancelled.
    Cancelled,
}

impl Stage {
    /// Its name in the progress history rows of the store (as the wire spells it).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Queued => "STAGE_QUEUED",
            Stage::Dispatched => "STAGE_DISPATCHED",
            Stage::Connecting => "STAGE_CONNECTING",
            Stage::AwaitingFirstToken => "STAGE_AWAITING_FIRST_TOKEN",
            Stage::Generating => "STAGE_GENERATING",
            Stage::Finalizing => "STAGE_FINALIZING",
            Stage::Completed => "STAGE_COMPLETED",
            Stage::Failed => "STAGE_FAILED",
            Stage::Cancelled => "STAGE_CANCELLED",
        }
    }
}

/// How far a stage got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StageStatus {
    /// Not reached yet (the default).
    #[default]
    Pending,
    /// The current stage.
    Active,
    /// Done.
    Completed,
    /// Ended unfinished.
    Failed,
    /// Never reached and never will be.
    Skipped,
}

/// One stage of an attempt with its status and timings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StageState {
    /// The stage.
    pub stage: Stage,
    /// How far it got.
    pub status: StageStatus,
    /// When it started, once it has.
    pub start_time: Option<DateTime<Utc>>,
    /// How long it took (ms), once it ended.
    pub duration_ms: Option<u64>,
}

impl StageState {
    /// The stage.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Its status.
    pub fn status(&self) -> StageStatus {
        self.status
    }
}

/// A stage change of an attempt.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StageChanged {
    /// The attempt (from 1).
    pub attempt: u32,
    /// The stage entered (active, or the terminal stage reached).
    pub current: Option<StageState>,
    /// The stage left, with its final status.
    pub previous: Option<StageState>,
    /// Stages passed over without being reached.
    pub skipped: Vec<Stage>,
}

/// What a milestone marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MilestoneKind {
    /// The first token arrived.
    FirstToken,
    /// A quarter of the estimated output.
    Progress25,
    /// Half of the estimated output.
    Progress50,
    /// Three quarters of the estimated output.
    Progress75,
    /// The attempt failed and the job retries.
    Retry,
    /// The output stopped at `max_tokens`.
    MaxTokensReached,
    /// The structured output validated.
    StructuredOutputValid,
    /// The structured output did not validate.
    StructuredOutputInvalid,
    /// The model streamed reasoning and no content.
    ReasoningOnly,
}

impl MilestoneKind {
    /// Its name in the progress history rows of the store (as the wire spells it).
    pub fn name(self) -> &'static str {
        match self {
            MilestoneKind::FirstToken => "MILESTONE_KIND_FIRST_TOKEN",
            MilestoneKind::Progress25 => "MILESTONE_KIND_PROGRESS_25",
            MilestoneKind::Progress50 => "MILESTONE_KIND_PROGRESS_50",
            MilestoneKind::Progress75 => "MILESTONE_KIND_PROGRESS_75",
            MilestoneKind::Retry => "MILESTONE_KIND_RETRY",
            MilestoneKind::MaxTokensReached => "MILESTONE_KIND_MAX_TOKENS_REACHED",
            MilestoneKind::StructuredOutputValid => "MILESTONE_KIND_STRUCTURED_OUTPUT_VALID",
            MilestoneKind::StructuredOutputInvalid => "MILESTONE_KIND_STRUCTURED_OUTPUT_INVALID",
            MilestoneKind::ReasoningOnly => "MILESTONE_KIND_REASONING_ONLY",
        }
    }
}

/// A milestone an attempt crossed.
#[derive(Clone, Debug, PartialEq)]
pub struct Milestone {
    /// What it marks.
    pub kind: MilestoneKind,
    /// The attempt (from 1).
    pub attempt: u32,
    /// Output tokens when it was crossed.
    pub output_tokens: u64,
    /// The progress fraction then, when known.
    pub fraction: Option<f64>,
    /// Detail (an error code for a retry); empty when none.
    pub detail: String,
}

/// A rate-limited progress update of a running attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProgressUpdate {
    /// The attempt (from 1).
    pub attempt: u32,
    /// Output tokens so far.
    pub output_tokens: u64,
    /// Expected output tokens of the whole answer, when estimated.
    pub estimated_output_tokens: Option<u64>,
    /// 0..=1, when estimated.
    pub fraction: Option<f64>,
    /// Since the first token.
    pub output_tokens_per_second: f64,
}

/// Where an output estimate comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EstimateBasis {
    /// No estimate (the default).
    #[default]
    None,
    /// The median output of recent completed jobs of the same job type and model.
    RecentJobs,
    /// The request's `max_tokens`.
    MaxTokens,
}

/// A worker process's resource figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerResources {
    /// The worker's id.
    pub worker_id: String,
    /// Resident memory (MiB), when known.
    pub resident_memory_mib: Option<f64>,
    /// CPU use (percent of one core), when known.
    pub cpu_percent: Option<f64>,
    /// When they were sampled.
    pub sample_time: Option<DateTime<Utc>>,
}

/// A job's progress: what GetJobProgress shows and what a worker keeps as the job's snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobProgress {
    /// The job.
    pub job_id: JobId,
    /// Its status.
    pub status: JobStatus,
    /// The current (or last) attempt; 0 while it has never run.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The stage the attempt is in now (for an ended job: its terminal stage).
    pub stage: Stage,
    /// Every stage of the current (or last) attempt, in order.
    pub stages: Vec<StageState>,
    /// Output tokens of the current (or last) attempt so far.
    pub output_tokens: u64,
    /// Estimated output tokens of the whole answer; `None` when the basis is `None`.
    pub estimated_output_tokens: Option<u64>,
    /// Where the estimate comes from.
    pub estimate_basis: EstimateBasis,
    /// Completed jobs a `RecentJobs` estimate was taken from.
    pub estimate_sample_size: u32,
    /// 0..=1; at most 0.99 until completed; `None` without an estimate.
    pub fraction: Option<f64>,
    /// Since the first token of the attempt.
    pub output_tokens_per_second: f64,
    /// From the rate so far and the estimate; `None` without both, or once ended.
    pub estimated_completion_time: Option<DateTime<Utc>>,
    /// Time to first token of the attempt (ms).
    pub time_to_first_token_ms: Option<u64>,
    /// The worker's resources; `None` while queued and once ended.
    pub worker: Option<WorkerResources>,
    /// When the worker last updated it.
    pub update_time: Option<DateTime<Utc>>,
}

impl JobProgress {
    /// The stage (as [`JobProgress::stage`]).
    pub fn stage(&self) -> Stage {
        self.stage
    }
}

/// One entry of a job's progress history (stored when its attempt ends).
#[derive(Clone, Debug, PartialEq)]
pub struct ProgressEvent {
    /// When it happened.
    pub time: Option<DateTime<Utc>>,
    /// What happened.
    pub kind: ProgressEventKind,
}

/// What a progress history entry holds.
#[derive(Clone, Debug, PartialEq)]
pub enum ProgressEventKind {
    /// A stage change.
    StageChanged(StageChanged),
    /// A milestone.
    Milestone(Milestone),
}

/// A progress history entry as the store keeps it: the entry, and its stored bytes (the
/// encoding of the event log's codec, see `crate::events::Codec::encode_progress_event`).
#[derive(Clone, Debug, PartialEq)]
pub struct ProgressRecord {
    /// The entry (the store files it by kind, name, attempt and time).
    pub event: ProgressEvent,
    /// Its stored bytes.
    pub encoded: Vec<u8>,
}
