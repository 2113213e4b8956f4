//! Domain types of a job: status, priority, queue names, parameters, results and input limits.
//!
//! Nothing here knows about tonic, diesel or Redis; `api/` maps these to the wire and `store/`
//! to rows.

mod limits;
mod outcome;
mod request;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use limits::Limits;
pub use outcome::{Outcome, StreamingStats, StructuredOutput, Usage};
pub use request::{ChatMessage, GenerationParams, PromptStorage, ResponseFormat};

/// A job's id: a UUID v7, so ids sort by creation time.
pub type JobId = Uuid;

/// Scheduling priority inside a job type; claims take urgent before high before normal before low.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Queue `openai-{job_type}-urgent`.
    Urgent,
    /// Queue `openai-{job_type}-high`.
    High,
    /// Queue `openai-{job_type}` (the default).
    #[default]
    Normal,
    /// Queue `openai-{job_type}-low`.
    Low,
}

impl Priority {
    /// All priorities in claim order.
    pub const CLAIM_ORDER: [Priority; 4] = [
        Priority::Urgent,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    /// Stored spelling: `urgent`, `high`, `normal`, `low`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// Parses the stored spelling; `None` for anything else.
    pub fn parse(s: &str) -> Option<Priority> {
        Self::CLAIM_ORDER.into_iter().find(|p| p.as_str() == s)
    }
}

/// The Redis queue of a job type and priority, named as Horizon named them:
/// `openai-{job_type}-urgent`, `openai-{job_type}-high`, `openai-{job_type}` (normal),
/// `openai-{job_type}-low`.
pub fn queue_name(job_type: &str, priority: Priority) -> String {
    match priority {
        Priority::Normal => format!("openai-{job_type}"),
        other => format!("openai-{job_type}-{}", other.as_str()),
    }
}

/// Lifecycle of a job: `Queued -> Running -> Completed | Failed | Cancelled`; a retried attempt
/// goes from `Running` back to `Queued`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Waiting in its queue (first time or before a retry); the default.
    #[default]
    Queued,
    /// A worker holds it and is generating.
    Running,
    /// Terminal: generation finished.
    Completed,
    /// Terminal: generation failed for good.
    Failed,
    /// Terminal: cancelled by a client.
    Cancelled,
}

impl JobStatus {
    /// Stored spelling: `queued`, `running`, `completed`, `failed`, `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Parses the stored spelling; `None` for anything else.
    pub fn parse(s: &str) -> Option<JobStatus> {
        [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// True for `Completed`, `Failed` and `Cancelled`: nothing changes a job after that.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// How token deltas reach watchers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StreamingMode {
    /// One event per upstream chunk.
    #[default]
    Realtime,
    /// Deltas coalesced by time and size (see `worker::Config`).
    Buffered,
}

impl StreamingMode {
    /// Stored spelling: `realtime`, `buffered`.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamingMode::Realtime => "realtime",
            StreamingMode::Buffered => "buffered",
        }
    }

    /// Parses the stored spelling; unknown values fall back to `Realtime`.
    pub fn parse(s: &str) -> StreamingMode {
        if s == "buffered" {
            StreamingMode::Buffered
        } else {
            StreamingMode::Realtime
        }
    }
}

/// A validated job, ready to be stored and enqueued.
#[derive(Clone, Debug)]
pub struct NewJob {
    /// UUID v7.
    pub id: JobId,
    /// One of the configured job types.
    pub job_type: String,
    /// Scheduling priority.
    pub priority: Priority,
    /// `queue_name(job_type, priority)`.
    pub queue: String,
    /// The conversation sent upstream (system prompt first, when given).
    pub messages: Vec<ChatMessage>,
    /// Model parameters; `model` is already resolved to the server default when it was empty.
    pub params: GenerationParams,
    /// Delivery mode of token deltas.
    pub streaming_mode: StreamingMode,
    /// Caller data.
    pub metadata: BTreeMap<String, String>,
    /// Client-chosen deduplication key.
    pub idempotency_key: Option<String>,
    /// Attempts allowed before the job fails for good.
    pub max_attempts: u32,
    /// Limit of one attempt; `None`: the worker's default.
    pub timeout: Option<std::time::Duration>,
    /// Labels for listing.
    pub tags: Vec<String>,
    /// Tenant of the key that submitted it ([`crate::auth::DEFAULT_TENANT`] without auth).
    pub tenant: String,
    /// Whether the store replaces `messages` with an empty conversation once the job has
    /// ended (`--prompt-storage none`).
    pub discard_prompt: bool,
    /// The W3C trace context of the submitting call's span: its `traceparent`, then a newline
    /// and its `tracestate` when it has one; `None` when the call was not traced.
    pub trace_context: Option<String>,
}

impl NewJob {
    /// Whether this request asks for the same job as `earlier`, the job stored under the same
    /// idempotency key: same job type, priority, parameters, mode, metadata, attempts,
    /// timeout, tags and conversation. The conversation is not compared when `earlier` has
    /// ended and its prompt was discarded (`--prompt-storage none`).
    pub fn same_request_as(&self, earlier: &Job) -> bool {
        let prompt_discarded = earlier.status.is_terminal() && earlier.messages.is_empty();
        self.job_type == earlier.job_type
            && self.priority == earlier.priority
            && self.params == earlier.params
            && self.streaming_mode == earlier.streaming_mode
            && self.metadata == earlier.metadata
            && self.max_attempts == earlier.max_attempts
            && self.timeout == earlier.timeout
            && self.tags == earlier.tags
            && (prompt_discarded || self.messages == earlier.messages)
    }
}

/// Why a job or an attempt failed: a stable code and a human-readable message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobError {
    /// e.g. `upstream_server_error`, `upstream_stream_truncated`, `timeout`.
    pub code: String,
    /// Detail for humans; never contains secrets.
    pub message: String,
}

/// A job as stored.
#[derive(Clone, Debug)]
pub struct Job {
    /// UUID v7.
    pub id: JobId,
    /// Current status.
    pub status: JobStatus,
    /// Configured job type.
    pub job_type: String,
    /// Scheduling priority.
    pub priority: Priority,
    /// Queue name.
    pub queue: String,
    /// Conversation sent upstream.
    pub messages: Vec<ChatMessage>,
    /// Model parameters.
    pub params: GenerationParams,
    /// Delivery mode of token deltas.
    pub streaming_mode: StreamingMode,
    /// Caller data.
    pub metadata: BTreeMap<String, String>,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Limit of one attempt; `None`: the worker's default.
    pub timeout: Option<std::time::Duration>,
    /// Labels for listing.
    pub tags: Vec<String>,
    /// The batch it was submitted in, if any.
    pub batch_id: Option<Uuid>,
    /// Last error, for failed jobs.
    pub error: Option<JobError>,
    /// Sequence of the terminal event, once it is known (0 before).
    pub last_sequence: u64,
    /// Submission time.
    pub created_at: DateTime<Utc>,
    /// When it (last) entered its queue.
    pub enqueued_at: DateTime<Utc>,
    /// Start of the current or last attempt.
    pub started_at: Option<DateTime<Utc>>,
    /// When it became terminal.
    pub finished_at: Option<DateTime<Utc>>,
    /// Tenant of the key that submitted it; only that tenant (and admins) may see it.
    pub tenant: String,
    /// The W3C trace context of the submitting call (see [`NewJob::trace_context`]).
    pub trace_context: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_follow_horizon() {
        assert_eq!(
            queue_name("general", Priority::Urgent),
            "openai-general-urgent"
        );
        assert_eq!(queue_name("general", Priority::High), "openai-general-high");
        assert_eq!(queue_name("general", Priority::Normal), "openai-general");
        assert_eq!(
            queue_name("code_review", Priority::Low),
            "openai-code_review-low"
        );
    }

    #[test]
    fn spellings_round_trip() {
        for p in Priority::CLAIM_ORDER {
            assert_eq!(Priority::parse(p.as_str()), Some(p));
        }
        for s in ["queued", "running", "completed", "failed", "cancelled"] {
            assert_eq!(JobStatus::parse(s).map(JobStatus::as_str), Some(s));
        }
        assert_eq!(JobStatus::parse("retrying"), None);
    }
}
