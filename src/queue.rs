//! The job queue: priority queues per job type, claims with leases, delayed retries, and the
//! signals (wake-up, cancel) that reach workers.
//!
//! [`Queue`] is the narrow interface; [`redis`] implements it with Lua scripts so every claim,
//! settle and removal is atomic; [`memory`] follows the same scripts in process, for one
//! `serve` without Redis. Delivery is at-least-once: a claim holds a lease that the worker's
//! heartbeat extends; an expired lease puts the job back at the front of its queue.

pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::job::JobId;

/// A queue failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis cannot be reached or refused the command.
    #[error("queue backend unavailable: {0}")]
    Unavailable(String),
    /// Queue data does not decode.
    #[error("corrupt queue data: {0}")]
    Corrupt(String),
}

/// Most jobs one [`Queue::claim`] takes (bounds the script's work and its reply).
pub const MAX_CLAIM: usize = 64;

/// When a lease of `lease` taken now ends (ms since the epoch).
fn lease_deadline(lease: Duration) -> i64 {
    Utc::now().timestamp_millis() + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2)
}

/// A job taken from a queue by a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The job.
    pub job_id: JobId,
    /// The queue it came from.
    pub queue: String,
    /// How many times the job has been delivered (1 on the first claim).
    pub deliveries: u64,
}

/// Where [`Queue::remove`] found the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// It was waiting (in its queue or the delayed set) and is gone now.
    Removed,
    /// A worker holds it: the cancel flag ([`crate::events::EventLog::request_cancel`]) stops it.
    Leased,
    /// The queue does not know it.
    Absent,
}

/// What the queue holds for one queue name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Jobs waiting in the queue.
    pub pending: u64,
    /// When the oldest pending job entered the queue, if any.
    pub oldest_enqueued: Option<DateTime<Utc>>,
    /// Jobs of this queue waiting to retry.
    pub delayed: u64,
    /// Jobs of this queue claimed by a worker.
    pub running: u64,
    /// Whether claims skip the queue.
    pub paused: bool,
}

/// What a live worker process reports about itself (registry entry, refreshed by its
/// heartbeat).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorkerInfo {
    /// `{host}-{pid}-{random}`.
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// When the process started.
    pub started_at: DateTime<Utc>,
    /// llm-jobs version.
    pub version: String,
    /// Job types it serves.
    pub job_types: Vec<String>,
    /// Slots in use.
    pub busy_slots: u32,
    /// Slots in all.
    pub total_slots: u32,
    /// Jobs it runs now.
    pub job_ids: Vec<String>,
    /// Resident memory (MiB), when known.
    pub resident_memory_mib: Option<f64>,
    /// CPU use since its previous heartbeat (percent of one core), when known.
    pub cpu_percent: Option<f64>,
    /// When it last reported.
    pub heartbeat_at: DateTime<Utc>,
}

/// The end of a claim, handed to [`Queue::claim`] so that it costs no round trip of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settle {
    /// The job.
    pub job_id: JobId,
    /// The owner token of its claim; a claim that is no longer this owner's is left alone.
    pub owner: String,
    /// `None`: done for good; else the job waits in the delayed set until then (a retry).
    pub retry_at: Option<DateTime<Utc>>,
}

/// A claim a worker holds, as its heartbeat reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The job.
    pub job_id: JobId,
    /// The owner token of the claim.
    pub owner: String,
    /// The job's queue (where [`Queue::restore`] records it again).
    pub queue: String,
}

/// What a heartbeat found of the claims it was given that it could not extend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Beat {
    /// Claims another owner holds, or that the queue took back (an expired lease put the job
    /// back in its queue, a retry waits in the delayed set): their attempts must stop.
    pub lost: Vec<JobId>,
    /// Claims of jobs the queue no longer knows at all (no owner, in no queue): settled for
    /// good, or lost with the queue's data (Redis restarted without persistence, FLUSHALL).
    /// A worker whose attempt still runs takes such a claim back with [`Queue::restore`].
    pub vanished: Vec<JobId>,
}

/// Most claims ended by one [`Queue::claim`] call (each adds three script arguments).
pub const MAX_SETTLE: usize = 256;

/// A message for the workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Work may be waiting: try to claim.
    Wake,
    /// A client asked to cancel this job.
    Cancel(JobId),
}

/// Free worker slots of this process, to which the gateway hands a job it has just stored
/// (in-process dispatch: the job starts without a wake-up through the queue backend and
/// without a claim of its own). Implemented by the worker; the gateway sees only this.
pub trait LocalSlots: Send + Sync + 'static {
    /// Reserves a free slot for a job of `queue`; `None` when every slot is busy, the queue
    /// is not served here or is capped, or the worker is draining. Dropping the reservation
    /// frees the slot.
    fn reserve(&self, queue: &str) -> Option<Box<dyn ReservedSlot>>;
}

/// A worker slot reserved by [`LocalSlots::reserve`].
pub trait ReservedSlot: Send {
    /// The owner token the job's claim must carry.
    fn owner(&self) -> &str;
    /// The lease the claim must have.
    fn lease(&self) -> Duration;
    /// Runs the attempt of `claim` (made for [`ReservedSlot::owner`]) in the slot.
    fn start(self: Box<Self>, claim: Claim);
}

/// The registry of live workers, for the admin API (kept beside the queue it serves).
#[async_trait]
pub trait WorkerRegistry: Send + Sync + 'static {
    /// Records (or refreshes) a worker's registry entry.
    async fn register_worker(&self, info: &WorkerInfo) -> Result<(), Error>;

    /// Removes a worker's registry entry (clean shutdown).
    async fn deregister_worker(&self, id: &str) -> Result<(), Error>;

    /// Workers that reported within `window`; older entries are removed.
    async fn workers(&self, window: Duration) -> Result<Vec<WorkerInfo>, Error>;
}

/// What reaches a worker process besides its claims: wake-ups and cancel requests.
#[async_trait]
pub trait Signals: Send + Sync + 'static {
    /// Signals for this worker process, for as long as the receiver lives. The sender side
    /// reconnects by itself; after a reconnect it sends a [`Signal::Wake`].
    async fn signals(&self) -> Result<mpsc::Receiver<Signal>, Error>;

    /// The reason given when a cancel was requested for the job (the flag that
    /// [`crate::events::EventLog::request_cancel`] sets); `None` when none was.
    async fn cancel_requested(&self, job_id: JobId) -> Result<Option<String>, Error>;
}

/// Queue operations: enqueue, claim, lease, settle, and the queue's figures and pauses. A
/// queue backend is also its workers' registry and their signals ([`WorkerRegistry`],
/// [`Signals`]).
#[async_trait]
pub trait Queue: WorkerRegistry + Signals + Send + Sync + 'static {
    /// Puts a job at the back of `queue` (no-op when it is already there) and wakes workers.
    async fn enqueue(&self, job_id: JobId, queue: &str, at: DateTime<Utc>) -> Result<(), Error>;

    /// Enqueues a job as [`Queue::enqueue`] does, except that when `queue` is empty and not
    /// paused the job is claimed for `owner` with a lease of `lease` at once (the claim is
    /// returned) and no worker is woken: one round trip instead of enqueue, wake-up and
    /// claim. `None` when it was enqueued (then the workers are woken as usual).
    async fn enqueue_claimed(
        &self,
        job_id: JobId,
        queue: &str,
        at: DateTime<Utc>,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Claim>, Error>;

    /// Claims up to `max` jobs (at least one is asked for; at most [`MAX_CLAIM`]) for `owner`
    /// (a token unique to this call; every job of the call carries it, and each job's lease
    /// is fenced on it separately), with a lease of `lease`: first from the first non-paused,
    /// non-empty queue in `queues`, then from the next, in that order. Also moves due retries
    /// back to their queues and reclaims expired leases. Returns the claims in claim order
    /// (empty when every queue is empty or paused).
    ///
    /// Before anything else it ends the claims in `ended` (at most [`MAX_SETTLE`]) as
    /// [`Queue::settle`] would, in the same round trip: a worker slot that frees ends its
    /// job's claim with the claim that refills it. A claim that is no longer its owner's is
    /// left alone, as `settle` leaves it.
    async fn claim(
        &self,
        queues: &[String],
        owner: &str,
        lease: Duration,
        max: usize,
        ended: &[Settle],
    ) -> Result<Vec<Claim>, Error>;

    /// Extends the leases of `claims` (job id, owner token of its claim) to `lease` from now;
    /// reports those it could not extend ([`Beat`]).
    async fn heartbeat(&self, claims: &[(JobId, String)], lease: Duration) -> Result<Beat, Error>;

    /// Claims again, for their owners and with a lease of `lease`, the jobs of `claims` that
    /// the queue does not know at all (see [`Beat::vanished`]); a job it knows again (put back
    /// in a queue, claimed by another worker) is left alone. Returns the jobs restored.
    async fn restore(&self, claims: &[Held], lease: Duration) -> Result<Vec<JobId>, Error>;

    /// Ends `owner`'s claim: done for good (`retry_at` `None`) or waiting in the delayed set
    /// until `retry_at`. Returns false when the claim was no longer `owner`'s.
    async fn settle(
        &self,
        job_id: JobId,
        owner: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<bool, Error>;

    /// Takes a waiting job out of the queue.
    async fn remove(&self, job_id: JobId) -> Result<Removal, Error>;

    /// Counts for each of `queues`, in the same order.
    async fn counts(&self, queues: &[String]) -> Result<Vec<Counts>, Error>;

    /// Pauses (`true`) or resumes (`false`) a queue.
    async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), Error>;

    /// Takes every pending job out of `queue` and returns their ids (delayed and claimed jobs
    /// stay).
    async fn drain(&self, queue: &str) -> Result<Vec<JobId>, Error>;

    /// For each job, whether the queue knows it (waiting, delayed or claimed).
    async fn known(&self, jobs: &[JobId]) -> Result<Vec<bool>, Error>;

    /// For each job, whether a worker holds a lease on it.
    async fn leased(&self, jobs: &[JobId]) -> Result<Vec<bool>, Error>;

    /// Round trip to the backend (health checks).
    async fn ping(&self) -> Result<(), Error>;
}
