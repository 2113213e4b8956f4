//! Domain types of a batch (jobs submitted together) and its progress figures.
//!
//! A batch stores only what the client gave (name, metadata); its counts, tokens, cost and end
//! are computed from its jobs at read time by [`Progress::of`], so they cannot drift from the
//! jobs. Nothing here knows about tonic, diesel or Redis.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::job::{JobId, JobStatus};

/// A batch's id: a UUID v7.
pub type BatchId = uuid::Uuid;

/// A validated batch, before it is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct NewBatch {
    /// Fresh UUID v7.
    pub id: BatchId,
    /// Client-chosen name (may be empty).
    pub display_name: String,
    /// Client data kept with the batch.
    pub metadata: BTreeMap<String, String>,
    /// Client-chosen key that makes a repeated submit return the first batch.
    pub idempotency_key: Option<String>,
    /// Tenant of the key that submitted it (its jobs belong to the same tenant).
    pub tenant: String,
}

/// A stored batch, without its jobs.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Its id.
    pub id: BatchId,
    /// Client-chosen name (may be empty).
    pub display_name: String,
    /// Client data.
    pub metadata: BTreeMap<String, String>,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// Tenant of the key that submitted it.
    pub tenant: String,
}

/// One job of a batch, as progress figures and batch streams need it.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// The job.
    pub id: JobId,
    /// Its status.
    pub status: JobStatus,
    /// Sequence of its terminal event once known (0 before).
    pub last_sequence: u64,
    /// When it ended (terminal jobs).
    pub finished_at: Option<DateTime<Utc>>,
    /// Input and output tokens of its result, when it has one.
    pub tokens: Option<(u64, u64)>,
    /// Cost in USD of its result, when it has a known price.
    pub cost_usd: Option<f64>,
}

/// A batch and all its jobs, in request order, read at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The batch.
    pub batch: Batch,
    /// Its jobs in request order (ids are UUID v7 created in request order).
    pub members: Vec<Member>,
}

/// Jobs of a batch by status; the fields always add up to [`Counts::total`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Waiting in a queue.
    pub queued: u32,
    /// Being generated.
    pub running: u32,
    /// Completed.
    pub completed: u32,
    /// Failed for good.
    pub failed: u32,
    /// Cancelled.
    pub cancelled: u32,
}

impl Counts {
    /// Every job.
    pub fn total(&self) -> u32 {
        self.queued + self.running + self.terminal()
    }

    /// Jobs that ended (completed, failed or cancelled).
    pub fn terminal(&self) -> u32 {
        self.completed + self.failed + self.cancelled
    }

    fn add(&mut self, status: JobStatus) {
        let n = match status {
            JobStatus::Queued => &mut self.queued,
            JobStatus::Running => &mut self.running,
            JobStatus::Completed => &mut self.completed,
            JobStatus::Failed => &mut self.failed,
            JobStatus::Cancelled => &mut self.cancelled,
        };
        *n += 1;
    }
}

/// A batch's figures at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Jobs by status.
    pub counts: Counts,
    /// Input tokens of the jobs with a result.
    pub input_tokens: u64,
    /// Output tokens of the jobs with a result.
    pub output_tokens: u64,
    /// Summed cost (USD) of the results with a known price; `None` when none has one.
    pub cost_usd: Option<f64>,
    /// When the last job ended, once every job has.
    pub ended_at: Option<DateTime<Utc>>,
    /// Likely end: at the completion rate so far (time since creation per ended job), the
    /// remaining jobs end then. `None` before the first job ended and once all have.
    pub estimated_completion: Option<DateTime<Utc>>,
}

impl Progress {
    /// The figures of a batch created at `created_at` with these `members`, as of `now`.
    pub fn of(created_at: DateTime<Utc>, members: &[Member], now: DateTime<Utc>) -> Progress {
        let mut p = Progress::default();
        for m in members {
            p.counts.add(m.status);
            if let Some((input, output)) = m.tokens {
                p.input_tokens += input;
                p.output_tokens += output;
            }
            if let Some(cost) = m.cost_usd {
                p.cost_usd = Some(p.cost_usd.unwrap_or(0.0) + cost);
            }
        }
        let total = p.counts.total();
        let done = p.counts.terminal();
        if total > 0 && done == total {
            p.ended_at = members.iter().filter_map(|m| m.finished_at).max();
        } else if done > 0 {
            let elapsed = (now - created_at).max(chrono::TimeDelta::zero());
            let remaining = i32::try_from(total - done).unwrap_or(i32::MAX);
            let per_job = elapsed / i32::try_from(done).unwrap_or(i32::MAX);
            p.estimated_completion = per_job
                .checked_mul(remaining)
                .and_then(|left| now.checked_add_signed(left));
        }
        p
    }
}

#[cfg(test)]
mod tests;
