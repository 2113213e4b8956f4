//! A job's events as plain Rust, and the [`Codec`] port that gives them their one encoding.
//!
//! The stored and streamed form of an event is its protobuf encoding (`llmjobs.v1.JobEvent`):
//! Redis lists, pub/sub messages, stored archives and the bytes sent to watchers. Only
//! `crate::api` knows that encoding; it implements [`Codec`], which the app hands to the event
//! logs when it builds them.

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::{
    job::{JobError, JobId, JobStatus, Priority, Usage},
    progress::{
        JobProgress, Milestone, ProgressEvent, ProgressRecord, ProgressUpdate, StageChanged,
    },
};

/// One event of a job's log.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Per job: starts at 1 and rises by 1 with no gaps (0 until the log assigns it).
    pub sequence: u64,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// The job (nil until the log sets it).
    pub job_id: JobId,
    /// What happened.
    pub kind: EventKind,
}

/// What an event says, one variant per arm of `JobEvent.kind`.
#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// The job entered its queue.
    Queued(Queued),
    /// A worker started an attempt.
    Started(Started),
    /// Generated text, in order.
    TokenDelta(TokenDelta),
    /// An attempt failed; the job retries or fails.
    AttemptFailed(AttemptFailed),
    /// Terminal: the job completed.
    Completed(Completed),
    /// Terminal: the job failed for good.
    Failed(Failed),
    /// Terminal: the job was cancelled.
    Cancelled(Cancelled),
    /// The full state as stored, sent instead of a replay that is gone (not part of a log).
    Snapshot(Snapshot),
    /// Sent to a watcher when nothing else was for a while (not part of a log).
    Heartbeat(Heartbeat),
    /// The attempt moved to another stage.
    StageChanged(StageChanged),
    /// The attempt crossed a milestone.
    Milestone(Milestone),
    /// A progress update of the attempt.
    Progress(ProgressUpdate),
}

/// The job entered its queue.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Queued {
    /// Queue name.
    pub queue: String,
    /// Priority in its job type.
    pub priority: Priority,
    /// Job type.
    pub job_type: String,
    /// The tenant the job belongs to (lets a gateway check access from the log alone).
    pub tenant: String,
}

/// A worker started an attempt.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Started {
    /// The attempt (from 1).
    pub attempt: u32,
    /// The worker.
    pub worker_id: String,
    /// The model asked for.
    pub model: String,
}

/// Generated text, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenDelta {
    /// Content text to append.
    pub text: String,
    /// Output tokens generated so far in this attempt, this delta included.
    pub output_tokens: u64,
    /// Reasoning text to append.
    pub reasoning_text: String,
}

/// An attempt failed; the job retries or fails.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttemptFailed {
    /// The attempt (from 1).
    pub attempt: u32,
    /// Why.
    pub error: Option<JobError>,
    /// Another attempt follows.
    pub will_retry: bool,
    /// When the next attempt may start, if one follows.
    pub retry_time: Option<DateTime<Utc>>,
}

/// Terminal: the job completed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Completed {
    /// The upstream's finish reason.
    pub finish_reason: String,
    /// Token usage.
    pub usage: Option<Usage>,
}

/// Terminal: the job failed for good.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Failed {
    /// Why.
    pub error: Option<JobError>,
    /// Attempts made.
    pub attempts: u32,
}

/// Terminal: the job was cancelled.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cancelled {
    /// The client's reason (may be empty).
    pub reason: String,
}

/// The full state as stored, replacing any text collected so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// The job's status.
    pub status: JobStatus,
    /// Content so far.
    pub content: String,
    /// Reasoning so far.
    pub reasoning_content: String,
}

/// Keeps a quiet stream open.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Heartbeat {
    /// The job's status, when known.
    pub status: Option<JobStatus>,
}

impl Event {
    /// A new event of `kind` stamped now (sequence and job id are set by the log).
    pub fn new(kind: EventKind) -> Event {
        Event {
            sequence: 0,
            time: Utc::now(),
            job_id: JobId::nil(),
            kind,
        }
    }

    /// True for completed, failed and cancelled events.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.kind,
            EventKind::Completed(_) | EventKind::Failed(_) | EventKind::Cancelled(_)
        )
    }
}

/// Stored bytes that do not decode (the message says why).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// The one encoding of events and progress snapshots: protobuf (`llmjobs.v1.JobEvent`,
/// `llmjobs.v1.JobProgress`), implemented in `crate::api`. Event logs store and publish these
/// bytes, and watchers are sent them as they are.
pub trait Codec: Send + Sync + 'static {
    /// `event` whole (sequence and job id included), as a watcher's stream carries it (the
    /// API's codec frames it for the wire; the core passes these bytes on untouched).
    fn encode(&self, event: &Event) -> Bytes;

    /// `event` without its sequence and job id (the log's index and key carry them), appended
    /// to `out`; with `delimited`, preceded by its length as a varint (protobuf's
    /// length-delimited form, as archives and pub/sub messages hold events).
    fn encode_stored(&self, event: &Event, delimited: bool, out: &mut Vec<u8>);

    /// The event in `bytes` (a stored event has sequence 0 and a nil job id).
    /// Errors: the bytes are no `JobEvent`, or one whose kind is unknown.
    fn decode(&self, bytes: &[u8]) -> Result<Event, DecodeError>;

    /// The length-delimited event at the start of `buf`, which is advanced past it.
    /// Errors: as [`Codec::decode`].
    fn decode_delimited(&self, buf: &mut &[u8]) -> Result<Event, DecodeError>;

    /// A progress snapshot's stored bytes.
    fn encode_progress(&self, progress: &JobProgress) -> Vec<u8>;

    /// A stored progress snapshot. Errors: the bytes are no `JobProgress`.
    fn decode_progress(&self, bytes: &[u8]) -> Result<JobProgress, DecodeError>;

    /// A progress history entry's stored bytes (`llmjobs.v1.ProgressEvent`).
    fn encode_progress_event(&self, event: &ProgressEvent) -> Vec<u8>;

    /// A stored progress history entry. Errors: the bytes are no `ProgressEvent`, or one of
    /// unknown kind.
    fn decode_progress_event(&self, bytes: &[u8]) -> Result<ProgressEvent, DecodeError>;

    /// `events` with their stored bytes, as the store takes them.
    fn progress_records(&self, events: Vec<ProgressEvent>) -> Vec<ProgressRecord> {
        events
            .into_iter()
            .map(|event| ProgressRecord {
                encoded: self.encode_progress_event(&event),
                event,
            })
            .collect()
    }
}
