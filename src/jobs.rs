//! The application service of jobs, called by the API of a gateway process: submit, get,
//! result, cancel ([`Jobs`]); [`batch`] holds those of batches.
//!
//! Ordering rules: a job row exists in Postgres before its id is in Redis; the `queued` event
//! is the first in its log; a Redis failure after the insert removes the row again, so a
//! client that saw UNAVAILABLE left no half-written job behind.

pub mod batch;
mod detach;
mod figures;
mod progress;

pub use detach::detached;
pub use figures::with_figures;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{info, instrument, warn};

use crate::{
    events::{CancelRequest, EventKind, EventLog, Fence, event, event::Cancelled, queued},
    job::{Job, JobId, NewJob},
    progress::{ProgressEvent, ProgressEventKind},
    queue::{LocalSlots, Queue, Removal, ReservedSlot},
    store::{Store, StoredResult},
};

/// Reason of a cancel when the client gave none.
pub const DEFAULT_CANCEL_REASON: &str = "cancelled by a client";
/// How long `CancelJob` waits for the worker of a running job to confirm the cancel.
const CANCEL_CONFIRM: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a gateway call failed, by what the caller does next. The API maps each to its gRPC
/// code (`crate::error`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is unusable: fix it (`field` names it) and call again.
    #[error("invalid argument: {field}: {reason}")]
    InvalidArgument {
        /// Path of the field, e.g. `page_token`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The job or batch does not exist; calling again will not help.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `job 0190…`.
        what: String,
    },
    /// The job is not in a state the call can act on (no result before it ended): call
    /// again once it is.
    #[error("{reason}")]
    FailedPrecondition {
        /// Why, for the client.
        reason: String,
    },
    /// An idempotency key reused for a different request: send the same request, or use a
    /// new key.
    #[error("{reason}")]
    AlreadyExists {
        /// Why, for the client.
        reason: String,
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
    /// A `NotFound` of `what`.
    fn not_found(what: String) -> Error {
        Error::NotFound { what }
    }
}

impl From<crate::paging::Error> for Error {
    fn from(err: crate::paging::Error) -> Error {
        Error::InvalidArgument {
            field: err.field.to_owned(),
            reason: err.description,
        }
    }
}

/// Shared handles of the gateway.
#[derive(Clone)]
pub struct Jobs {
    /// Durable store.
    pub store: Arc<dyn Store>,
    /// Job queue.
    pub queue: Arc<dyn Queue>,
    /// Event log.
    pub events: Arc<dyn EventLog>,
    /// The free worker slots of this process, when it runs a worker: a job submitted while
    /// one is free (and its queue is empty) starts there at once.
    pub local: Option<Arc<dyn LocalSlots>>,
    /// Where submitted and cancelled jobs and served streams are counted.
    pub metrics: crate::metrics::Metrics,
}

impl Jobs {
    /// Stores and enqueues a validated job; with a known idempotency key, returns the earlier
    /// job unchanged when the request is the same (a retry). `followed`: the caller streams
    /// the job from its start (see [`EventLog::open`]). Errors: `AlreadyExists` when the
    /// key was used for a different request within its 24 h window; `Store`/`Queue`/`Events`
    /// (UNAVAILABLE). It runs to its end even when the call is dropped (a deadline, a cut
    /// connection): a stored job is queued at once, or removed, not left to the reconciler.
    #[instrument(skip_all, fields(job_id = %job.id, job_type = %job.job_type))]
    pub async fn submit(&self, job: NewJob, followed: bool) -> Result<Job, Error> {
        let this = self.clone();
        detach::detached(async move { this.submit_now(job, followed).await }).await
    }

    /// [`Jobs::submit`] in the caller's task.
    async fn submit_now(&self, job: NewJob, followed: bool) -> Result<Job, Error> {
        let inserted = self.store.insert_job(&job).await?;
        if !inserted.created {
            if !job.same_request_as(&inserted.job) {
                return Err(Error::AlreadyExists {
                    reason: format!(
                        "idempotency_key {:?} was used for a different request (job {}) within \
                         the last 24 h; send the same request to get that job, or use a new key",
                        job.idempotency_key.as_deref().unwrap_or_default(),
                        inserted.job.id
                    ),
                });
            }
            return Ok(inserted.job);
        }
        // Tests hold a stored job here, for jobs of the model the point is armed with
        // (`return(<model>)`), so that its call can be dropped between the two writes.
        #[cfg(feature = "failpoints")]
        if (|| {
            fail::fail_point!("submit-stored", |model: Option<String>| {
                model.as_deref() == Some(job.params.model.as_str())
            });
            false
        })() {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        let slot = self.local.as_ref().and_then(|l| l.reserve(&job.queue));
        if let Err(e) = self.publish(&job, Utc::now(), slot, followed).await {
            if let Err(undo) = self.store.discard_job(job.id).await {
                warn!(error = %undo, "cannot discard the job after a Redis failure");
            }
            return Err(e);
        }
        self.metrics.submitted(&job.queue, 1);
        info!(queue = %job.queue, "job submitted");
        Ok(inserted.job)
    }

    /// Makes a stored QUEUED job visible to workers and watchers: appends its `queued` event
    /// (the first of its log), then puts it in its queue at `at` (jobs enqueued at the same
    /// `at` are claimed in id order, that is in the order they were created). With a free
    /// `slot` of this process's worker, the job starts there at once when its queue is empty
    /// (else the slot goes back and the job waits its turn). `followed`: see
    /// [`EventLog::open`]. Errors: `Events`/`Queue` (UNAVAILABLE).
    pub(crate) async fn publish(
        &self,
        job: &NewJob,
        at: DateTime<Utc>,
        slot: Option<Box<dyn ReservedSlot>>,
        followed: bool,
    ) -> Result<(), Error> {
        let queued = queued(&job.queue, job.priority, &job.job_type, &job.tenant);
        if self.events.open(job.id, &queued, followed).await?.is_some() {
            self.metrics.published(1);
        }
        let Some(slot) = slot else {
            self.queue.enqueue(job.id, &job.queue, at).await?;
            return Ok(());
        };
        let claim = self
            .queue
            .enqueue_claimed(job.id, &job.queue, at, slot.owner(), slot.lease())
            .await?;
        if let Some(claim) = claim {
            slot.start(claim);
        }
        Ok(())
    }

    /// The job and its live output token count. Errors: `NotFound`, `Store`.
    pub async fn get(&self, id: JobId) -> Result<(Job, u64), Error> {
        let job = self
            .store
            .get_job(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("job {id}")))?;
        let mut figured = self.with_figures(vec![job]).await?;
        figured
            .pop()
            .ok_or_else(|| Error::not_found(format!("job {id}")))
    }

    /// Each job with the figures every RPC that returns a job reports: see [`with_figures`].
    /// Errors: `Store`.
    pub async fn with_figures(&self, jobs: Vec<Job>) -> Result<Vec<(Job, u64)>, Error> {
        Ok(with_figures(self.store.as_ref(), self.events.as_ref(), jobs).await?)
    }

    /// A page of jobs matching `filter`, newest first, and the next page's token.
    /// Errors: `InvalidArgument` (page size or token), `Store`.
    pub async fn list(
        &self,
        filter: &crate::store::JobFilter,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<Job>, String), Error> {
        let (limit, before) = crate::paging::page(page_size, page_token)?;
        let jobs = self.store.list_jobs(filter, before, limit).await?;
        let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
        let next = crate::paging::next_token(&ids, limit);
        Ok((jobs, next))
    }

    /// The result of a finished job and the errors of its failed attempts (oldest first).
    /// Errors: `NotFound`, `FailedPrecondition` while unfinished.
    pub async fn result(
        &self,
        id: JobId,
    ) -> Result<(StoredResult, Vec<(u32, crate::job::JobError)>), Error> {
        let stored = self
            .store
            .get_result(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("job {id}")))?;
        if !stored.job.status.is_terminal() {
            return Err(Error::FailedPrecondition {
                reason: format!(
                    "job {id} is {}; its result exists once it is completed, failed or cancelled",
                    stored.job.status.as_str()
                ),
            });
        }
        let failures = self.store.attempt_failures(id).await?;
        Ok((stored, failures))
    }

    /// Cancels a job and returns it as it then is: CANCELLED only once it ended cancelled;
    /// COMPLETED or FAILED (unchanged) when it ended otherwise, before the cancel reached its
    /// log, or when its attempt had already claimed its end; else RUNNING (or QUEUED, waiting
    /// to retry) when its worker has not ended it within 2 s.
    ///
    /// A waiting job is taken out of its queue and cancelled here. For a running one, the
    /// job's cancel flag is set in one step with its event log (see
    /// [`EventLog::request_cancel`]), the worker is signalled, and the call waits (up to 2 s)
    /// for the terminal event. A flag set before an attempt claimed the end always wins: that
    /// claim (the attempt's last flush, or the append before a final failure) reads the flag
    /// in the same step, and an attempt that starts later stops at its start. So a RUNNING
    /// answer to a cancel whose flag was set first ends CANCELLED, unless Redis loses the
    /// flag first. Errors: `NotFound`, `Store`, `Queue`, `Events`.
    #[instrument(skip_all, fields(job_id = %id))]
    pub async fn cancel(&self, id: JobId, reason: &str) -> Result<Job, Error> {
        let job = self
            .store
            .get_job(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("job {id}")))?;
        self.cancel_read(job, reason).await
    }

    /// [`Jobs::cancel`] of `job`, just read from the store by the caller (who checked it
    /// may): the cancel's flag reaches Redis without a second store read first, which under
    /// load is what a cancel racing the job's end waits for. Errors: as `cancel`.
    #[instrument(skip_all, fields(job_id = %job.id))]
    pub async fn cancel_read(&self, job: Job, reason: &str) -> Result<Job, Error> {
        let id = job.id;
        if job.status.is_terminal() {
            return Ok(job);
        }
        let reason = if reason.is_empty() {
            DEFAULT_CANCEL_REASON
        } else {
            reason
        };
        // Watch before asking, so the worker's terminal event cannot be missed.
        let mut live = self.events.subscribe(id).await?;
        // Flag first: a worker that claims the job from now on stops it at once.
        let request = self.events.request_cancel(id, reason).await?;
        if let CancelRequest::Ended(terminal) = &request {
            // Ended before the cancel: the store has it (workers store an end before they
            // log it).
            info!(sequence = terminal.sequence, "cancel came after the end");
            return Ok(self.store.get_job(id).await?.unwrap_or(job));
        }
        match self.queue.remove(id).await? {
            Removal::Leased => {
                let confirmed = tokio::time::timeout(CANCEL_CONFIRM, async {
                    while let Some(item) = live.recv().await {
                        if matches!(item, crate::events::Live::Event(ref e) if crate::events::is_terminal(e.event())) {
                            return;
                        }
                    }
                })
                .await;
                if confirmed.is_err() {
                    info!(
                        ending = request == CancelRequest::Ending,
                        "cancel requested; the worker has not ended the job yet"
                    );
                }
                Ok(self.store.get_job(id).await?.unwrap_or(job))
            }
            Removal::Removed | Removal::Absent => match self.store.cancel_queued(id).await? {
                Some(cancelled) => {
                    self.log_cancelled_in_queue(&job, reason).await?;
                    Ok(cancelled)
                }
                // It started running meanwhile; the flag reaches its worker.
                None => Ok(self.store.get_job(id).await?.unwrap_or(job)),
            },
        }
    }

    /// Ends the log of `job`, cancelled (with `reason`) while it waited in its queue: its
    /// last stage change and its terminal event, stored with its history, since no worker
    /// ends this job. Errors: `Events`, `Store`.
    async fn log_cancelled_in_queue(&self, job: &Job, reason: &str) -> Result<(), Error> {
        let id = job.id;
        let now = Utc::now();
        let change = crate::progress::cancelled_in_queue(job.attempts + 1, job.enqueued_at, now);
        let record = ProgressEvent {
            time: Some(now),
            kind: ProgressEventKind::StageChanged(change.clone()),
        };
        // History is reporting: a failure loses it, not the cancel.
        let records = self.events.codec().progress_records(vec![record]);
        if let Err(e) = self.store.append_progress(id, &records).await {
            warn!(error = %e, "cannot store the cancelled stage");
        }
        // The stage event and the terminal one go out in one append, which returns the
        // whole log: no worker ends this job, so it is stored here.
        let events = [
            event(EventKind::StageChanged(change)),
            event(EventKind::Cancelled(Cancelled {
                reason: reason.to_owned(),
            })),
        ];
        let closed = self
            .events
            .close(id, &events, Fence::None, None, None)
            .await?;
        if closed.sequence.is_some() {
            self.metrics.published(events.len());
        }
        match crate::events::archive::of_events(self.events.codec(), &closed.log) {
            Some(log) => self.store.store_event_logs(&[(id, log)]).await?,
            None => {
                if let Some(seq) = closed.sequence {
                    self.store.set_last_sequence(id, seq).await?;
                }
            }
        }
        self.metrics
            .ended(&job.queue, crate::metrics::Ended::Cancelled);
        info!("queued job cancelled");
        Ok(())
    }
}
