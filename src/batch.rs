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
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn member(status: JobStatus, tokens: Option<(u64, u64)>, cost: Option<f64>) -> Member {
        Member {
            id: uuid::Uuid::now_v7(),
            status,
            last_sequence: 0,
            finished_at: status.is_terminal().then(Utc::now),
            tokens,
            cost_usd: cost,
        }
    }

    #[test]
    fn counts_add_up_and_only_results_count_towards_tokens_and_cost() {
        let now = Utc::now();
        let members = [
            member(JobStatus::Queued, None, None),
            member(JobStatus::Running, None, None),
            member(JobStatus::Completed, Some((10, 5)), Some(0.25)),
            member(JobStatus::Failed, Some((3, 0)), None),
            member(JobStatus::Cancelled, None, None),
        ];
        let p = Progress::of(now, &members, now);
        assert_eq!(
            p.counts,
            Counts {
                queued: 1,
                running: 1,
                completed: 1,
                failed: 1,
                cancelled: 1
            }
        );
        assert_eq!(p.counts.total(), 5);
        assert_eq!((p.input_tokens, p.output_tokens), (13, 5));
        assert_eq!(p.cost_usd, Some(0.25));
        assert_eq!(p.ended_at, None);
    }

    #[test]
    fn cost_is_unset_while_no_result_has_a_price() {
        let now = Utc::now();
        let p = Progress::of(
            now,
            &[member(JobStatus::Completed, Some((1, 1)), None)],
            now,
        );
        assert_eq!(p.cost_usd, None);
    }

    #[test]
    fn the_estimate_extrapolates_the_rate_so_far_and_disappears_at_the_ends() {
        let created = Utc::now() - TimeDelta::seconds(10);
        let now = created + TimeDelta::seconds(10);
        let mut members = vec![
            member(JobStatus::Completed, None, None),
            member(JobStatus::Queued, None, None),
            member(JobStatus::Queued, None, None),
            member(JobStatus::Running, None, None),
        ];
        // One of four ended in 10 s: three more take 30 s.
        let p = Progress::of(created, &members, now);
        assert_eq!(p.estimated_completion, Some(now + TimeDelta::seconds(30)));

        for m in &mut members {
            m.status = JobStatus::Queued;
        }
        assert_eq!(
            Progress::of(created, &members, now).estimated_completion,
            None
        );

        for m in &mut members {
            m.status = JobStatus::Completed;
            m.finished_at = Some(now);
        }
        let done = Progress::of(created, &members, now);
        assert_eq!(done.estimated_completion, None);
        assert_eq!(done.ended_at, Some(now));
    }
}
