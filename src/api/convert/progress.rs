//! Progress types ([`crate::progress`]) to wire types and back.

use super::{datetime, status, timestamp};
use crate::{
    job::JobStatus,
    progress::{
        EstimateBasis, JobProgress, Milestone, MilestoneKind, ProgressEvent, ProgressEventKind,
        ProgressUpdate, Stage, StageChanged, StageState, StageStatus, WorkerResources,
    },
    proto::v1::{self, progress_event},
};

/// Wire stage.
pub fn stage(s: Stage) -> v1::Stage {
    match s {
        Stage::Queued => v1::Stage::Queued,
        Stage::Dispatched => v1::Stage::Dispatched,
        Stage::Connecting => v1::Stage::Connecting,
        Stage::AwaitingFirstToken => v1::Stage::AwaitingFirstToken,
        Stage::Generating => v1::Stage::Generating,
        Stage::Finalizing => v1::Stage::Finalizing,
        Stage::Completed => v1::Stage::Completed,
        Stage::Failed => v1::Stage::Failed,
        Stage::Cancelled => v1::Stage::Cancelled,
    }
}

/// Domain stage of a wire value (unknown or unset: `Queued`).
pub fn from_stage(value: i32) -> Stage {
    match v1::Stage::try_from(value).unwrap_or(v1::Stage::Unspecified) {
        v1::Stage::Unspecified | v1::Stage::Queued => Stage::Queued,
        v1::Stage::Dispatched => Stage::Dispatched,
        v1::Stage::Connecting => Stage::Connecting,
        v1::Stage::AwaitingFirstToken => Stage::AwaitingFirstToken,
        v1::Stage::Generating => Stage::Generating,
        v1::Stage::Finalizing => Stage::Finalizing,
        v1::Stage::Completed => Stage::Completed,
        v1::Stage::Failed => Stage::Failed,
        v1::Stage::Cancelled => Stage::Cancelled,
    }
}

/// Wire stage status.
pub fn stage_status(s: StageStatus) -> v1::StageStatus {
    match s {
        StageStatus::Pending => v1::StageStatus::Pending,
        StageStatus::Active => v1::StageStatus::Active,
        StageStatus::Completed => v1::StageStatus::Completed,
        StageStatus::Failed => v1::StageStatus::Failed,
        StageStatus::Skipped => v1::StageStatus::Skipped,
    }
}

/// Domain stage status of a wire value (unknown or unset: `Pending`).
pub fn from_stage_status(value: i32) -> StageStatus {
    match v1::StageStatus::try_from(value).unwrap_or(v1::StageStatus::Unspecified) {
        v1::StageStatus::Unspecified | v1::StageStatus::Pending => StageStatus::Pending,
        v1::StageStatus::Active => StageStatus::Active,
        v1::StageStatus::Completed => StageStatus::Completed,
        v1::StageStatus::Failed => StageStatus::Failed,
        v1::StageStatus::Skipped => StageStatus::Skipped,
    }
}

/// Wire stage state.
pub fn stage_state(s: &StageState) -> v1::StageState {
    v1::StageState {
        stage: stage(s.stage).into(),
        status: stage_status(s.status).into(),
        start_time: s.start_time.map(timestamp),
        duration_ms: s.duration_ms,
    }
}

/// Domain stage state of a wire one.
pub fn from_stage_state(s: &v1::StageState) -> StageState {
    StageState {
        stage: from_stage(s.stage),
        status: from_stage_status(s.status),
        start_time: s.start_time.as_ref().and_then(datetime),
        duration_ms: s.duration_ms,
    }
}

/// Wire stage change.
pub fn stage_changed(c: &StageChanged) -> v1::StageChanged {
    v1::StageChanged {
        attempt: c.attempt,
        current: c.current.as_ref().map(stage_state),
        previous: c.previous.as_ref().map(stage_state),
        skipped: c.skipped.iter().map(|s| stage(*s).into()).collect(),
    }
}

/// Domain stage change of a wire one.
pub fn from_stage_changed(c: &v1::StageChanged) -> StageChanged {
    StageChanged {
        attempt: c.attempt,
        current: c.current.as_ref().map(from_stage_state),
        previous: c.previous.as_ref().map(from_stage_state),
        skipped: c.skipped.iter().map(|s| from_stage(*s)).collect(),
    }
}

/// Wire milestone kind.
pub fn milestone_kind(k: MilestoneKind) -> v1::MilestoneKind {
    match k {
        MilestoneKind::FirstToken => v1::MilestoneKind::FirstToken,
        MilestoneKind::Progress25 => v1::MilestoneKind::Progress25,
        MilestoneKind::Progress50 => v1::MilestoneKind::Progress50,
        MilestoneKind::Progress75 => v1::MilestoneKind::Progress75,
        MilestoneKind::Retry => v1::MilestoneKind::Retry,
        MilestoneKind::MaxTokensReached => v1::MilestoneKind::MaxTokensReached,
        MilestoneKind::StructuredOutputValid => v1::MilestoneKind::StructuredOutputValid,
        MilestoneKind::StructuredOutputInvalid => v1::MilestoneKind::StructuredOutputInvalid,
        MilestoneKind::ReasoningOnly => v1::MilestoneKind::ReasoningOnly,
    }
}

/// Domain milestone kind of a wire value (`None` when unknown or unset).
pub fn from_milestone_kind(value: i32) -> Option<MilestoneKind> {
    Some(match v1::MilestoneKind::try_from(value).ok()? {
        v1::MilestoneKind::Unspecified => return None,
        v1::MilestoneKind::FirstToken => MilestoneKind::FirstToken,
        v1::MilestoneKind::Progress25 => MilestoneKind::Progress25,
        v1::MilestoneKind::Progress50 => MilestoneKind::Progress50,
        v1::MilestoneKind::Progress75 => MilestoneKind::Progress75,
        v1::MilestoneKind::Retry => MilestoneKind::Retry,
        v1::MilestoneKind::MaxTokensReached => MilestoneKind::MaxTokensReached,
        v1::MilestoneKind::StructuredOutputValid => MilestoneKind::StructuredOutputValid,
        v1::MilestoneKind::StructuredOutputInvalid => MilestoneKind::StructuredOutputInvalid,
        v1::MilestoneKind::ReasoningOnly => MilestoneKind::ReasoningOnly,
    })
}

/// Wire milestone.
pub fn milestone(m: &Milestone) -> v1::Milestone {
    v1::Milestone {
        kind: milestone_kind(m.kind).into(),
        attempt: m.attempt,
        output_tokens: m.output_tokens,
        fraction: m.fraction,
        detail: m.detail.clone(),
    }
}

/// Domain milestone of a wire one (`None` when its kind is unknown).
pub fn from_milestone(m: v1::Milestone) -> Option<Milestone> {
    Some(Milestone {
        kind: from_milestone_kind(m.kind)?,
        attempt: m.attempt,
        output_tokens: m.output_tokens,
        fraction: m.fraction,
        detail: m.detail,
    })
}

/// Wire progress update.
pub fn progress_update(p: &ProgressUpdate) -> v1::ProgressUpdate {
    v1::ProgressUpdate {
        attempt: p.attempt,
        output_tokens: p.output_tokens,
        estimated_output_tokens: p.estimated_output_tokens,
        fraction: p.fraction,
        output_tokens_per_second: p.output_tokens_per_second,
    }
}

/// Domain progress update of a wire one.
pub fn from_progress_update(p: &v1::ProgressUpdate) -> ProgressUpdate {
    ProgressUpdate {
        attempt: p.attempt,
        output_tokens: p.output_tokens,
        estimated_output_tokens: p.estimated_output_tokens,
        fraction: p.fraction,
        output_tokens_per_second: p.output_tokens_per_second,
    }
}

/// Wire estimate basis.
pub fn estimate_basis(b: EstimateBasis) -> v1::EstimateBasis {
    match b {
        EstimateBasis::None => v1::EstimateBasis::None,
        EstimateBasis::RecentJobs => v1::EstimateBasis::RecentJobs,
        EstimateBasis::MaxTokens => v1::EstimateBasis::MaxTokens,
    }
}

/// Domain estimate basis of a wire value (unknown or unset: `None`).
pub fn from_estimate_basis(value: i32) -> EstimateBasis {
    match v1::EstimateBasis::try_from(value).unwrap_or(v1::EstimateBasis::Unspecified) {
        v1::EstimateBasis::Unspecified | v1::EstimateBasis::None => EstimateBasis::None,
        v1::EstimateBasis::RecentJobs => EstimateBasis::RecentJobs,
        v1::EstimateBasis::MaxTokens => EstimateBasis::MaxTokens,
    }
}

/// Wire worker resources.
pub fn worker_resources(w: &WorkerResources) -> v1::WorkerResources {
    v1::WorkerResources {
        worker_id: w.worker_id.clone(),
        resident_memory_mib: w.resident_memory_mib,
        cpu_percent: w.cpu_percent,
        sample_time: w.sample_time.map(timestamp),
    }
}

/// Domain worker resources of wire ones.
pub fn from_worker_resources(w: v1::WorkerResources) -> WorkerResources {
    WorkerResources {
        worker_id: w.worker_id,
        resident_memory_mib: w.resident_memory_mib,
        cpu_percent: w.cpu_percent,
        sample_time: w.sample_time.as_ref().and_then(datetime),
    }
}

/// Domain status of a wire value (`None` when unknown or unset).
pub fn from_status(value: i32) -> Option<JobStatus> {
    Some(match v1::JobStatus::try_from(value).ok()? {
        v1::JobStatus::Unspecified => return None,
        v1::JobStatus::Queued => JobStatus::Queued,
        v1::JobStatus::Running => JobStatus::Running,
        v1::JobStatus::Completed => JobStatus::Completed,
        v1::JobStatus::Failed => JobStatus::Failed,
        v1::JobStatus::Cancelled => JobStatus::Cancelled,
    })
}

/// Wire job progress (GetJobProgress, and the snapshot's stored form).
pub fn job_progress(p: &JobProgress) -> v1::JobProgress {
    v1::JobProgress {
        job_id: p.job_id.to_string(),
        status: status(p.status).into(),
        attempt: p.attempt,
        max_attempts: p.max_attempts,
        stage: stage(p.stage).into(),
        stages: p.stages.iter().map(stage_state).collect(),
        output_tokens: p.output_tokens,
        estimated_output_tokens: p.estimated_output_tokens,
        estimate_basis: estimate_basis(p.estimate_basis).into(),
        estimate_sample_size: p.estimate_sample_size,
        fraction: p.fraction,
        output_tokens_per_second: p.output_tokens_per_second,
        estimated_completion_time: p.estimated_completion_time.map(timestamp),
        time_to_first_token_ms: p.time_to_first_token_ms,
        worker: p.worker.as_ref().map(worker_resources),
        update_time: p.update_time.map(timestamp),
    }
}

/// Domain job progress of a wire one (an unknown status reads as queued; a job id that does
/// not parse as nil).
pub fn from_job_progress(p: v1::JobProgress) -> JobProgress {
    JobProgress {
        job_id: p.job_id.parse().unwrap_or_default(),
        status: from_status(p.status).unwrap_or(JobStatus::Queued),
        attempt: p.attempt,
        max_attempts: p.max_attempts,
        stage: from_stage(p.stage),
        stages: p.stages.iter().map(from_stage_state).collect(),
        output_tokens: p.output_tokens,
        estimated_output_tokens: p.estimated_output_tokens,
        estimate_basis: from_estimate_basis(p.estimate_basis),
        estimate_sample_size: p.estimate_sample_size,
        fraction: p.fraction,
        output_tokens_per_second: p.output_tokens_per_second,
        estimated_completion_time: p.estimated_completion_time.as_ref().and_then(datetime),
        time_to_first_token_ms: p.time_to_first_token_ms,
        worker: p.worker.map(from_worker_resources),
        update_time: p.update_time.as_ref().and_then(datetime),
    }
}

/// Wire progress history entry.
pub fn progress_event(e: &ProgressEvent) -> v1::ProgressEvent {
    v1::ProgressEvent {
        time: e.time.map(timestamp),
        kind: Some(match &e.kind {
            ProgressEventKind::StageChanged(c) => {
                progress_event::Kind::StageChanged(stage_changed(c))
            }
            ProgressEventKind::Milestone(m) => progress_event::Kind::Milestone(milestone(m)),
        }),
    }
}

/// Domain progress history entry of a wire one. Errors: a message when it has no kind this
/// version knows.
pub fn from_progress_event(e: v1::ProgressEvent) -> Result<ProgressEvent, String> {
    let kind = match e.kind.ok_or("a progress event of unknown kind")? {
        progress_event::Kind::StageChanged(c) => {
            ProgressEventKind::StageChanged(from_stage_changed(&c))
        }
        progress_event::Kind::Milestone(m) => {
            ProgressEventKind::Milestone(from_milestone(m).ok_or("a milestone of unknown kind")?)
        }
    };
    Ok(ProgressEvent {
        time: e.time.as_ref().and_then(datetime),
        kind,
    })
}
