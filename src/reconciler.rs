//! The reconciler: Postgres is the source of truth, so jobs that Postgres has as QUEUED or
//! RUNNING but Redis does not know (after FLUSHALL, a Redis restart without persistence, or a
//! submit whose enqueue failed after the row was written) are put back in their queues.
//!
//! A job whose event log was lost with Redis gets a new log whose sequences continue above
//! every sequence published before (the next multiple of [`EPOCH`] above the last one Postgres
//! knows), starting with a `queued` event; watchers see a jump in sequence, never a repeat.
//! Running as several instances at once is harmless: enqueueing and restarting a log are
//! idempotent.
//!
//! A RUNNING job is re-enqueued only once Redis has not known it for a whole lease: a worker
//! still running it claims it again at its next heartbeat (a third of a lease), and the
//! attempt goes on (see `Queue::restore`); only a job whose worker is gone as well is run
//! again, as an expired lease would have it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    events::{EventLog, Fence, queued},
    job::{Job, JobId, JobStatus},
    queue::Queue,
    store::Store,
};

/// Sequence distance between a lost log and its successor.
pub const EPOCH: u64 = 1_000_000;
/// Jobs changed more recently than this are left alone (a submit may be between its insert
/// and its enqueue).
const MIN_AGE: Duration = Duration::from_secs(5);
/// Jobs examined per pass.
const BATCH: i64 = 500;

/// What the reconciler needs, and the RUNNING jobs it found unknown to Redis.
#[derive(Clone)]
pub struct Reconciler {
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
    events: Arc<dyn EventLog>,
    /// How long a claim lasts: how long a RUNNING job unknown to Redis is left to its worker.
    lease: Duration,
    /// RUNNING jobs unknown to Redis at the last pass, with when a pass first found them so.
    missing: Arc<Mutex<HashMap<JobId, Instant>>>,
}

impl Reconciler {
    /// A reconciler of the jobs `store` has unfinished, putting back in `queue` (and
    /// restarting their logs in `events`) those Redis lost; `lease` is the workers' lease.
    pub fn new(
        store: Arc<dyn Store>,
        queue: Arc<dyn Queue>,
        events: Arc<dyn EventLog>,
        lease: Duration,
    ) -> Self {
        Reconciler {
            store,
            queue,
            events,
            lease,
            missing: Arc::default(),
        }
    }

    /// Runs a pass every `every` until `shutdown`.
    pub async fn run(self, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
            match self.pass().await {
                Ok(0) => {}
                Ok(n) => info!(jobs = n, "reconciler re-enqueued jobs unknown to the queue"),
                Err(e) => warn!(error = %e, "reconciler pass failed"),
            }
        }
    }

    /// One pass over every unfinished job changed more than a few seconds ago; returns how
    /// many jobs were re-enqueued.
    ///
    /// Errors: a message when the store or the queue cannot be read.
    pub async fn pass(&self) -> Result<usize, String> {
        self.pass_before(
            Utc::now() - chrono::Duration::from_std(MIN_AGE).unwrap_or_default(),
            false,
        )
        .await
    }

    /// Re-enqueues at once every job that was unfinished when this process `started`: with
    /// the in-process queue nothing survives a restart, so every such job is known only to
    /// the store (those RUNNING lost their worker with the process). Returns how many.
    ///
    /// Errors: a message when the store cannot be read.
    pub async fn recover(&self, started: DateTime<Utc>) -> Result<usize, String> {
        self.pass_before(started, true).await
    }

    /// Goes through the unfinished jobs last changed before `before`, a page at a time; at
    /// `startup` re-enqueueing is expected, so each job is logged at DEBUG, not WARN.
    async fn pass_before(&self, before: DateTime<Utc>, startup: bool) -> Result<usize, String> {
        let mut after = None;
        let mut requeued = 0;
        let mut missing = HashMap::new();
        loop {
            let jobs = self
                .store
                .unfinished(before, after, BATCH)
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = jobs.last() else { break };
            after = Some(last.id);
            requeued += self.reconcile(&jobs, startup, &mut missing).await?;
            if jobs.len() < BATCH as usize {
                break;
            }
        }
        // Jobs known again, finished or re-enqueued by now drop out.
        *self
            .missing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = missing;
        Ok(requeued)
    }

    /// Re-enqueues those of `jobs` the queue does not know (RUNNING ones only once they have
    /// been unknown for a lease; those not yet go into `missing`); returns how many.
    async fn reconcile(
        &self,
        jobs: &[Job],
        startup: bool,
        missing: &mut HashMap<JobId, Instant>,
    ) -> Result<usize, String> {
        let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
        let known = self.queue.known(&ids).await.map_err(|e| e.to_string())?;
        let leased = self.queue.leased(&ids).await.map_err(|e| e.to_string())?;
        let mut requeued = 0;
        for ((job, known), leased) in jobs.iter().zip(known).zip(leased) {
            if known {
                // An attempt whose worker died: Redis put the job back in its queue when the
                // lease expired; the store still says RUNNING until it says so too.
                if job.status == JobStatus::Running && !leased {
                    let _ = self.store.release_running(job.id, job.attempts).await;
                }
                continue;
            }
            if job.status == JobStatus::Running && !startup {
                let since = self
                    .missing
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(&job.id)
                    .copied()
                    .unwrap_or_else(Instant::now);
                if since.elapsed() < self.lease {
                    debug!(job_id = %job.id, "running job unknown to Redis; its worker may claim it again");
                    missing.insert(job.id, since);
                    continue;
                }
            }
            if let Err(e) = self.requeue(job, startup).await {
                warn!(job_id = %job.id, error = %e, "reconciler could not re-enqueue");
                continue;
            }
            requeued += 1;
        }
        Ok(requeued)
    }

    async fn requeue(&self, job: &Job, startup: bool) -> Result<(), String> {
        let base = (job.last_sequence / EPOCH + 1) * EPOCH;
        let restarted = self
            .events
            .restart(job.id, base, job.attempts + 1, false)
            .await
            .map_err(|e| e.to_string())?;
        if restarted {
            // A later loss must jump above this log too.
            self.store
                .set_last_sequence(job.id, base)
                .await
                .map_err(|e| e.to_string())?;
            let queued = queued(&job.queue, job.priority, &job.job_type, &job.tenant);
            self.events
                .append(job.id, &queued, Fence::None)
                .await
                .map_err(|e| e.to_string())?;
        }
        self.queue
            .enqueue(job.id, &job.queue, Utc::now())
            .await
            .map_err(|e| e.to_string())?;
        if startup {
            debug!(job_id = %job.id, status = job.status.as_str(), "re-enqueued at start-up");
        } else {
            warn!(job_id = %job.id, status = job.status.as_str(), log_restarted = restarted,
                "job was unknown to the queue; re-enqueued");
        }
        Ok(())
    }
}
