//! Queue administration behind `QueueAdminService`, in Horizon's vocabulary: queue statistics,
//! pause and resume, purge, failed jobs, retry and forget; [`report`] builds the read-only
//! views (workload, workers, performance, health, dashboard).

pub mod report;

use std::sync::Arc;

use chrono::Utc;
use tracing::{info, instrument};

use crate::{
    events::{EventKind, EventLog, Fence, event, event::Cancelled, queued},
    job::{Job, JobError, JobId, Priority, queue_name},
    queue::Queue,
    reconciler::EPOCH,
    store::{FailedFilter, Store},
};

/// Why a retry or forget left a named job alone when it does not exist, or (for a tenant's
/// admin) belongs to another tenant: the two read the same, so that nothing tells them apart.
pub const NO_SUCH_JOB: &str = "no such job";

/// Most jobs one retry or forget by filter touches.
pub const MAX_PAGE: i64 = crate::paging::MAX_PAGE_SIZE;

/// Most job ids one retry or forget may name: each id is work (a retry is a few round trips
/// per job), and an unbounded list kept one call busy for minutes. Larger sets go in several
/// calls.
pub const MAX_IDS: usize = 1000;

/// Why an admin call failed, by what the caller does next. The API maps each to its gRPC
/// code (`crate::error`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is unusable: fix it (`field` names it) and call again.
    #[error("invalid argument: {field}: {reason}")]
    InvalidArgument {
        /// Path of the field, e.g. `job_ids`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// What the call names does not exist; calling again will not help.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `queue "x"`.
        what: String,
    },
    /// The store failed: retry later (unless its data is unreadable).
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// The queue failed: retry later.
    #[error(transparent)]
    Queue(#[from] crate::queue::Error),
    /// The event log failed: retry later.
    #[error(transparent)]
    Events(#[from] crate::events::Error),
}

impl Error {
    /// An `InvalidArgument` of `field`.
    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<crate::paging::Error> for Error {
    fn from(err: crate::paging::Error) -> Error {
        Error::invalid(err.field, err.description)
    }
}

/// One queue's statistics (see `QueueStats` in `admin.proto` for the windows).
#[derive(Clone, Debug, PartialEq)]
pub struct QueueStats {
    /// Queue name.
    pub name: String,
    /// Its job type.
    pub job_type: String,
    /// Its priority.
    pub priority: Priority,
    /// Counts from Redis.
    pub counts: crate::queue::Counts,
    /// Figures from Postgres.
    pub figures: crate::store::QueueFigures,
    /// How long its oldest pending job had waited when the counts were read (ms; 0 when
    /// none waits).
    pub oldest_wait_ms: u64,
}

/// A failed job with its attempts' errors.
#[derive(Clone, Debug)]
pub struct FailedJob {
    /// The job (status FAILED).
    pub job: Job,
    /// Every failed attempt, oldest first.
    pub attempt_errors: Vec<(u32, JobError)>,
    /// Output tokens of its result, as `GetJob` reports them.
    pub output_tokens: u64,
}

/// Queue administration over the shared backends.
#[derive(Clone)]
pub struct Admin {
    /// Durable store.
    pub store: Arc<dyn Store>,
    /// Job queue.
    pub queue: Arc<dyn Queue>,
    /// Event log.
    pub events: Arc<dyn EventLog>,
    /// Configured job types.
    pub job_types: Vec<String>,
    /// A worker that has not reported for this long is gone (one lease period).
    pub worker_window: std::time::Duration,
    /// Where purged (cancelled) jobs are counted.
    pub metrics: crate::metrics::Metrics,
}

/// What [`Admin::retry`] did: the ids queued again, and the ids skipped with why.
pub type Retried = (Vec<JobId>, Vec<(JobId, String)>);

impl Admin {
    /// Every queue: configured job types times priorities.
    pub fn queues(&self) -> Vec<(String, String, Priority)> {
        self.job_types
            .iter()
            .flat_map(|t| {
                Priority::CLAIM_ORDER
                    .into_iter()
                    .map(move |p| (queue_name(t, p), t.clone(), p))
            })
            .collect()
    }

    /// Errors: `InvalidArgument` for an empty name, `NotFound` for an unknown queue.
    fn check_queue(&self, name: &str) -> Result<(), Error> {
        if name.is_empty() {
            return Err(Error::invalid("queue", "must not be empty"));
        }
        if self.queues().iter().any(|(q, _, _)| q == name) {
            Ok(())
        } else if name.len() > 200 {
            // No queue name is this long; echoing it would only bloat the error.
            Err(Error::invalid(
                "queue",
                "longer than any queue name (200 bytes)",
            ))
        } else {
            Err(Error::NotFound {
                what: format!("queue {name:?}"),
            })
        }
    }

    /// Statistics of every queue.
    pub async fn stats(&self) -> Result<Vec<QueueStats>, Error> {
        let queues = self.queues();
        let names: Vec<String> = queues.iter().map(|(q, _, _)| q.clone()).collect();
        let counts = self.queue.counts(&names).await?;
        let figures = self.store.queue_figures().await?;
        let now = Utc::now();
        Ok(queues
            .into_iter()
            .zip(counts)
            .map(|((name, job_type, priority), counts)| QueueStats {
                figures: figures
                    .iter()
                    .find(|f| f.queue == name)
                    .cloned()
                    .unwrap_or_default(),
                oldest_wait_ms: counts.oldest_enqueued.map_or(0, |t| waited_ms(now, t)),
                name,
                job_type,
                priority,
                counts,
            })
            .collect())
    }

    /// Pauses (`Some(true)`), resumes (`Some(false)`) or toggles (`None`) a queue; returns
    /// whether it is paused now.
    #[instrument(skip(self))]
    pub async fn set_paused(&self, queue: &str, paused: Option<bool>) -> Result<bool, Error> {
        self.check_queue(queue)?;
        let paused = match paused {
            Some(p) => p,
            None => {
                let now = self.queue.counts(&[queue.to_owned()]).await?;
                !now.first().is_some_and(|c| c.paused)
            }
        };
        self.queue.set_paused(queue, paused).await?;
        info!(queue, paused, "queue paused state changed");
        Ok(paused)
    }

    /// Cancels every pending job of `queue`; returns how many.
    #[instrument(skip(self))]
    pub async fn purge(&self, queue: &str) -> Result<u64, Error> {
        self.check_queue(queue)?;
        let ids = self.queue.drain(queue).await?;
        let mut purged = 0;
        for id in ids {
            if self.store.cancel_queued(id).await?.is_some() {
                let ev = event(EventKind::Cancelled(Cancelled {
                    reason: format!("queue {queue} purged by an operator"),
                }));
                if let Some(seq) = self.events.append(id, &ev, Fence::None).await? {
                    self.metrics.published(1);
                    self.store.set_last_sequence(id, seq).await?;
                }
                self.metrics.ended(queue, crate::metrics::Ended::Cancelled);
                purged += 1;
            }
        }
        info!(queue, purged, "queue purged");
        Ok(purged)
    }

    /// A page of failed jobs, newest first, and the token of the next page (empty at the end).
    /// Errors: `InvalidArgument` for a bad page size or token.
    pub async fn failed(
        &self,
        filter: &FailedFilter,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<FailedJob>, String), Error> {
        let (limit, before) = crate::paging::page(page_size, page_token)?;
        let jobs = self.store.failed_jobs(filter, before, limit).await?;
        let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
        let next = crate::paging::next_token(&ids, limit);
        let jobs =
            crate::jobs::with_figures(self.store.as_ref(), self.events.as_ref(), jobs).await?;
        let mut out = Vec::with_capacity(jobs.len());
        for (job, output_tokens) in jobs {
            let attempt_errors = self.store.attempt_failures(job.id).await?;
            out.push(FailedJob {
                job,
                attempt_errors,
                output_tokens,
            });
        }
        Ok((out, next))
    }

    /// The ids named, or every failed job matching `filter` when none are: `(selected,
    /// unknown)`. With `filter.tenant` set (a tenant's admin), named ids of jobs of another
    /// tenant, or of no job, are left out of `selected` and returned in `unknown`, so that
    /// another tenant's job answers as one that does not exist (one store read per id).
    /// Errors: `InvalidArgument` for more than [`MAX_IDS`] ids.
    pub async fn select(
        &self,
        ids: &[JobId],
        filter: &FailedFilter,
    ) -> Result<(Vec<JobId>, Vec<JobId>), Error> {
        if ids.len() > MAX_IDS {
            return Err(Error::invalid(
                "job_ids",
                format!(
                    "at most {MAX_IDS} job ids per call ({} given); split them into several calls",
                    ids.len()
                ),
            ));
        }
        if ids.is_empty() {
            let jobs = self.store.failed_jobs(filter, None, MAX_PAGE).await?;
            return Ok((jobs.into_iter().map(|j| j.id).collect(), Vec::new()));
        }
        let Some(tenant) = &filter.tenant else {
            return Ok((ids.to_vec(), Vec::new()));
        };
        let (mut own, mut unknown) = (Vec::new(), Vec::new());
        for &id in ids {
            match self.store.get_job(id).await? {
                Some(job) if &job.tenant == tenant => own.push(id),
                _ => unknown.push(id),
            }
        }
        Ok((own, unknown))
    }

    /// Runs failed jobs again, one new attempt each; returns the ids queued again and those
    /// skipped with why (unknown, not failed, or failed with its prompt discarded).
    #[instrument(skip_all, fields(jobs = ids.len()))]
    pub async fn retry(&self, ids: &[JobId]) -> Result<Retried, Error> {
        let mut retried = Vec::new();
        let mut skipped = Vec::new();
        for &id in ids {
            let Some(job) = self.store.requeue_failed(id).await? else {
                let reason = match self.store.get_job(id).await? {
                    None => NO_SUCH_JOB.to_owned(),
                    Some(job) if job.status != crate::job::JobStatus::Failed => {
                        format!("job is {}, not failed", job.status.as_str())
                    }
                    Some(_) => "its prompt was discarded when it ended (--prompt-storage none): \
                                nothing to run again"
                        .to_owned(),
                };
                skipped.push((id, reason));
                continue;
            };
            // A new log after the old one's terminal event: watchers that saw the failure
            // resume right after it.
            let base = if job.last_sequence > 0 {
                job.last_sequence
            } else {
                EPOCH
            };
            self.events
                .restart(id, base, job.attempts + 1, true)
                .await?;
            let queued = queued(&job.queue, job.priority, &job.job_type, &job.tenant);
            self.events.append(id, &queued, Fence::None).await?;
            self.queue.enqueue(id, &job.queue, Utc::now()).await?;
            retried.push(id);
        }
        info!(
            retried = retried.len(),
            skipped = skipped.len(),
            "failed jobs retried"
        );
        Ok((retried, skipped))
    }

    /// Removes failed jobs from the failed list; returns how many, and those left alone with
    /// why (unknown, not failed, or forgotten already).
    #[instrument(skip_all, fields(jobs = ids.len()))]
    pub async fn forget(&self, ids: &[JobId]) -> Result<(u64, Vec<(JobId, String)>), Error> {
        let forgotten = self.store.forget_failed(ids).await?;
        let mut skipped = Vec::new();
        for &id in ids.iter().filter(|id| !forgotten.contains(id)) {
            let reason = match self.store.get_job(id).await? {
                None => NO_SUCH_JOB.to_owned(),
                Some(job) if job.status != crate::job::JobStatus::Failed => {
                    format!("job is {}, not failed", job.status.as_str())
                }
                Some(_) => "already forgotten".to_owned(),
            };
            skipped.push((id, reason));
        }
        Ok((forgotten.len() as u64, skipped))
    }
}

/// Milliseconds from `since` to `now` (0 when `since` is later).
fn waited_ms(now: chrono::DateTime<Utc>, since: chrono::DateTime<Utc>) -> u64 {
    u64::try_from((now - since).num_milliseconds()).unwrap_or(0)
}
