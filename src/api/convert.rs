//! Domain types to wire types (`llmjobs.v1`).

use chrono::{DateTime, Utc};

use crate::{
    job::{GenerationParams, Job, JobError, JobStatus, Outcome, Priority, StreamingMode, Usage},
    proto::v1,
};

/// A protobuf timestamp.
pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// Wire status.
pub fn status(s: JobStatus) -> v1::JobStatus {
    match s {
        JobStatus::Queued => v1::JobStatus::Queued,
        JobStatus::Running => v1::JobStatus::Running,
        JobStatus::Completed => v1::JobStatus::Completed,
        JobStatus::Failed => v1::JobStatus::Failed,
        JobStatus::Cancelled => v1::JobStatus::Cancelled,
    }
}

/// Wire priority.
pub fn priority(p: Priority) -> v1::Priority {
    match p {
        Priority::Urgent => v1::Priority::Urgent,
        Priority::High => v1::Priority::High,
        Priority::Normal => v1::Priority::Normal,
        Priority::Low => v1::Priority::Low,
    }
}

/// Wire streaming mode.
pub fn streaming_mode(m: StreamingMode) -> v1::StreamingMode {
    match m {
        StreamingMode::Realtime => v1::StreamingMode::Realtime,
        StreamingMode::Buffered => v1::StreamingMode::Buffered,
    }
}

/// Wire usage.
pub fn usage(u: &Usage) -> v1::Usage {
    v1::Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        total_tokens: u.total_tokens,
        estimated: u.estimated,
    }
}

/// Wire error.
pub fn job_error(e: &JobError) -> v1::JobError {
    v1::JobError {
        code: e.code.clone(),
        message: e.message.clone(),
    }
}

/// Wire generation config.
pub fn generation_config(p: &GenerationParams) -> v1::GenerationConfig {
    v1::GenerationConfig {
        model: p.model.clone(),
        max_tokens: p.max_tokens,
        temperature: p.temperature,
        top_p: p.top_p,
        stop: p.stop.clone(),
        seed: p.seed,
    }
}

/// Wire job; `output_tokens` comes from the live state (0 when unknown).
pub fn job(j: &Job, output_tokens: u64) -> v1::Job {
    v1::Job {
        id: j.id.to_string(),
        status: status(j.status).into(),
        job_type: j.job_type.clone(),
        priority: priority(j.priority).into(),
        queue: j.queue.clone(),
        attempts: j.attempts,
        output_tokens,
        generation_config: Some(generation_config(&j.params)),
        streaming_mode: streaming_mode(j.streaming_mode).into(),
        metadata: j.metadata.clone().into_iter().collect(),
        create_time: Some(timestamp(j.created_at)),
        start_time: j.started_at.map(timestamp),
        end_time: j.finished_at.map(timestamp),
        error: if j.status == JobStatus::Failed {
            j.error.as_ref().map(job_error)
        } else {
            None
        },
        last_sequence: j.last_sequence,
        tags: j.tags.clone(),
    }
}

/// Wire result of a terminal job.
pub fn job_result(j: &Job, outcome: Option<&Outcome>) -> v1::JobResult {
    let empty = Outcome::default();
    let o = outcome.unwrap_or(&empty);
    v1::JobResult {
        job_id: j.id.to_string(),
        status: status(j.status).into(),
        content: o.content.clone(),
        reasoning_content: o.reasoning_content.clone(),
        finish_reason: o.finish_reason.clone(),
        model: if o.model.is_empty() {
            j.params.model.clone()
        } else {
            o.model.clone()
        },
        usage: outcome.map(|o| usage(&o.usage)),
        time_to_first_token_ms: o.time_to_first_token_ms,
        duration_ms: o.duration_ms,
        output_tokens_per_second: o.output_tokens_per_second,
        queue_wait_ms: o.queue_wait_ms,
        provider: o.provider.clone(),
        simulated: o.simulated,
        attempts: j.attempts,
        cost_usd: o.cost_usd,
        error: if j.status == JobStatus::Failed {
            j.error.as_ref().map(job_error)
        } else {
            None
        },
    }
}
