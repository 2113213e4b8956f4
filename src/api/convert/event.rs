//! Job events ([`crate::events::Event`]) to wire events (`llmjobs.v1.JobEvent`) and back.

use super::{
    datetime, job_error, priority,
    progress::{
        from_milestone, from_progress_update, from_stage_changed, from_status, milestone,
        progress_update, stage_changed,
    },
    status, timestamp, usage,
};
use crate::{
    events::{
        Event, EventKind,
        event::{
            AttemptFailed, Cancelled, Completed, Failed, Heartbeat, Queued, Snapshot, Started,
            TokenDelta,
        },
    },
    job::{JobError, JobId, JobStatus, Priority, Usage},
    proto::v1::{self, job_event::Kind},
};

/// Wire event; `whole` keeps its sequence and job id, otherwise both are left unset (the
/// stored form).
pub fn event(e: &Event, whole: bool) -> v1::JobEvent {
    v1::JobEvent {
        sequence: if whole { e.sequence } else { 0 },
        time: Some(timestamp(e.time)),
        job_id: if whole {
            e.job_id.to_string()
        } else {
            String::new()
        },
        kind: Some(event_kind(&e.kind)),
    }
}

/// Wire event kind.
pub fn event_kind(k: &EventKind) -> Kind {
    match k {
        EventKind::Queued(q) => Kind::Queued(v1::JobQueued {
            queue: q.queue.clone(),
            priority: priority(q.priority).into(),
            job_type: q.job_type.clone(),
            tenant: q.tenant.clone(),
        }),
        EventKind::Started(s) => Kind::Started(v1::JobStarted {
            attempt: s.attempt,
            worker_id: s.worker_id.clone(),
            model: s.model.clone(),
        }),
        EventKind::TokenDelta(d) => Kind::TokenDelta(v1::TokenDelta {
            text: d.text.clone(),
            output_tokens: d.output_tokens,
            reasoning_text: d.reasoning_text.clone(),
        }),
        EventKind::AttemptFailed(a) => Kind::AttemptFailed(v1::AttemptFailed {
            attempt: a.attempt,
            error: a.error.as_ref().map(job_error),
            will_retry: a.will_retry,
            retry_time: a.retry_time.map(timestamp),
        }),
        EventKind::Completed(c) => Kind::Completed(v1::JobCompleted {
            finish_reason: c.finish_reason.clone(),
            usage: c.usage.as_ref().map(usage),
        }),
        EventKind::Failed(f) => Kind::Failed(v1::JobFailed {
            error: f.error.as_ref().map(job_error),
            attempts: f.attempts,
        }),
        EventKind::Cancelled(c) => Kind::Cancelled(v1::JobCancelled {
            reason: c.reason.clone(),
        }),
        EventKind::Snapshot(s) => Kind::Snapshot(v1::JobSnapshot {
            status: status(s.status).into(),
            content: s.content.clone(),
            reasoning_content: s.reasoning_content.clone(),
        }),
        EventKind::Heartbeat(h) => Kind::Heartbeat(v1::JobHeartbeat {
            status: h.status.map_or(v1::JobStatus::Unspecified, status).into(),
        }),
        EventKind::StageChanged(c) => Kind::StageChanged(stage_changed(c)),
        EventKind::Milestone(m) => Kind::Milestone(milestone(m)),
        EventKind::Progress(p) => Kind::Progress(progress_update(p)),
    }
}

/// Domain event of a wire one, its strings moved, not copied. A time that is unset or out of
/// range reads as the Unix epoch, a job id that does not parse (unset in stored form) as nil.
/// Errors: a message when it has no kind this version knows.
pub fn from_event(e: v1::JobEvent) -> Result<Event, String> {
    let kind = e.kind.ok_or("an event of unknown kind")?;
    Ok(Event {
        sequence: e.sequence,
        time: e.time.as_ref().and_then(datetime).unwrap_or_default(),
        job_id: if e.job_id.is_empty() {
            JobId::nil()
        } else {
            e.job_id.parse().unwrap_or_default()
        },
        kind: from_event_kind(kind)?,
    })
}

/// Domain event kind of a wire one. Errors: a milestone of unknown kind.
fn from_event_kind(kind: Kind) -> Result<EventKind, String> {
    Ok(match kind {
        Kind::Queued(q) => EventKind::Queued(Queued {
            queue: q.queue,
            priority: from_priority(q.priority),
            job_type: q.job_type,
            tenant: q.tenant,
        }),
        Kind::Started(s) => EventKind::Started(Started {
            attempt: s.attempt,
            worker_id: s.worker_id,
            model: s.model,
        }),
        Kind::TokenDelta(d) => EventKind::TokenDelta(TokenDelta {
            text: d.text,
            output_tokens: d.output_tokens,
            reasoning_text: d.reasoning_text,
        }),
        Kind::AttemptFailed(a) => EventKind::AttemptFailed(AttemptFailed {
            attempt: a.attempt,
            error: a.error.map(from_job_error),
            will_retry: a.will_retry,
            retry_time: a.retry_time.as_ref().and_then(datetime),
        }),
        Kind::Completed(c) => EventKind::Completed(Completed {
            finish_reason: c.finish_reason,
            usage: c.usage.as_ref().map(from_usage),
        }),
        Kind::Failed(f) => EventKind::Failed(Failed {
            error: f.error.map(from_job_error),
            attempts: f.attempts,
        }),
        Kind::Cancelled(c) => EventKind::Cancelled(Cancelled { reason: c.reason }),
        Kind::Snapshot(s) => EventKind::Snapshot(Snapshot {
            status: from_status(s.status).unwrap_or(JobStatus::Queued),
            content: s.content,
            reasoning_content: s.reasoning_content,
        }),
        Kind::Heartbeat(h) => EventKind::Heartbeat(Heartbeat {
            status: from_status(h.status),
        }),
        Kind::StageChanged(c) => EventKind::StageChanged(from_stage_changed(&c)),
        Kind::Milestone(m) => {
            EventKind::Milestone(from_milestone(m).ok_or("a milestone of unknown kind")?)
        }
        Kind::Progress(p) => EventKind::Progress(from_progress_update(&p)),
    })
}

/// Domain priority of a wire value (unknown or unset: normal, as submits default it).
pub fn from_priority(value: i32) -> Priority {
    match v1::Priority::try_from(value).unwrap_or(v1::Priority::Unspecified) {
        v1::Priority::Urgent => Priority::Urgent,
        v1::Priority::High => Priority::High,
        v1::Priority::Low => Priority::Low,
        _ => Priority::Normal,
    }
}

/// Domain error of a wire one.
pub fn from_job_error(e: v1::JobError) -> JobError {
    JobError {
        code: e.code,
        message: e.message,
    }
}

/// Domain usage of wire usage.
pub fn from_usage(u: &v1::Usage) -> Usage {
    Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        total_tokens: u.total_tokens,
        estimated: u.estimated,
        cached_input_tokens: u.cached_input_tokens,
        reasoning_tokens: u.reasoning_tokens,
    }
}
