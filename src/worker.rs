//! The worker: claims jobs from the queues into a fixed number of slots, runs each attempt,
//! keeps leases alive, and reacts to cancel signals.
//!
//! Balancing ([`balance`]): job types take turns or are weighted by backlog; inside a job type
//! priority is strict (urgent, high, normal, low). Idle slots wait for a wake-up published on
//! enqueue, with a one-second fallback that also picks up due retries and expired leases.
//!
//! In-process dispatch: a job submitted to this process's gateway while a slot is free and
//! its queue empty goes straight to the slot ([`Worker::local_slots`]), claimed in the same
//! queue call that would have enqueued it; other processes see its lease as for any claim.

mod attempt;
mod background;
pub mod balance;
mod deltas;
mod estimates;
mod generate;
pub mod resources;
pub mod retry;
mod run;
mod sequences;
mod settings;
mod slots;
mod tracker;

pub use settings::Settings;
use slots::{AttemptGuard, Local, Reserved};

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::{
    events::EventLog,
    job::JobId,
    provider::Providers,
    queue::{LocalSlots, Queue, ReservedSlot},
    store::Store,
};

/// How long an attempt keeps reading after the `finish_reason` chunk (for the usage chunk);
/// then it completes even if the upstream neither sends `[DONE]` nor closes.
pub const FINISH_GRACE: Duration = Duration::from_secs(3);
/// Most (job type, model) pairs whose recent output sizes a worker remembers at once.
const ESTIMATE_PAIRS: usize = 1024;

/// Why a running attempt was told to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// A client cancelled the job.
    Cancelled,
    /// The lease was lost: another worker owns the job now; write nothing.
    LeaseLost,
    /// The process is shutting down: give the job back to its queue.
    Shutdown,
}

/// A running attempt, as the rest of the worker sees it.
struct Running {
    owner: String,
    queue: String,
    stop: CancellationToken,
    reason: std::sync::OnceLock<StopReason>,
    /// The attempt handed its claim to the next claim call to be ended (see
    /// [`Worker::settle`]): a claim the queue no longer knows was settled, not lost.
    settled: std::sync::atomic::AtomicBool,
}

impl Running {
    fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.stop.cancel();
    }
}

/// What a worker needs from the rest of the service.
#[derive(Clone)]
pub struct Deps {
    /// The queue to claim from.
    pub queue: Arc<dyn Queue>,
    /// Where events are published.
    pub events: Arc<dyn EventLog>,
    /// Where attempts and results are recorded.
    pub store: Arc<dyn Store>,
    /// The LLM providers.
    pub providers: Providers,
    /// Token prices, for result costs.
    pub pricing: Arc<crate::pricing::Pricing>,
    /// The fleet's shared upstream budget, taken before each upstream call.
    pub budget: crate::ratelimit::upstream::Budget,
    /// Where jobs, attempts and upstream calls are counted.
    pub metrics: crate::metrics::Metrics,
}

/// A worker process's job runner.
pub struct Worker {
    id: String,
    deps: Deps,
    cfg: Settings,
    /// How long a claim lasts without a heartbeat.
    lease: Duration,
    job_types: Vec<String>,
    balancer: balance::Balancer,
    running: Mutex<HashMap<JobId, Arc<Running>>>,
    wake: Notify,
    /// Cancelled when the drain period is over: store retries give up.
    hard_stop: CancellationToken,
    started_at: chrono::DateTime<chrono::Utc>,
    /// This process's latest resource figures (refreshed with the registry entry).
    resources: Mutex<Option<crate::progress::WorkerResources>>,
    /// Recent output sizes per (job type, model), for progress estimates.
    /// Bounded (model names come from clients): past [`ESTIMATE_PAIRS`] the least useful
    /// pairs go first.
    estimates: quick_cache::sync::Cache<(String, String), estimates::RecentOutputs>,
    /// Stores terminal sequences in batches.
    sequences: sequences::SequenceWriter,
    /// One permit per slot: held by a claim in flight or a running attempt.
    slots: Arc<Semaphore>,
    /// The attempts' tasks.
    tasks: tokio_util::task::TaskTracker,
    /// Set once the worker stops claiming: no more in-process dispatch either.
    draining: std::sync::atomic::AtomicBool,
    /// Claims whose attempt has ended, to be ended in the queue by the next claim (one round
    /// trip for both: see [`crate::queue::Queue::claim`]).
    ended: Mutex<Vec<crate::queue::Settle>>,
}

impl Worker {
    /// A worker serving the queues of `job_types`, claiming for `lease` at a time. Starts a
    /// background writer task, so it must be called inside a Tokio runtime.
    pub fn new(deps: Deps, cfg: Settings, lease: Duration, job_types: Vec<String>) -> Arc<Worker> {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let short = uuid::Uuid::new_v4().simple().to_string();
        let cfg_concurrency = cfg.concurrency.max(1);
        Arc::new(Worker {
            id: format!("{host}-{}-{}", std::process::id(), &short[..8]),
            balancer: balance::Balancer::new(cfg.balance, job_types.clone(), cfg.queue_cap),
            cfg,
            lease,
            job_types,
            running: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            hard_stop: CancellationToken::new(),
            started_at: chrono::Utc::now(),
            resources: Mutex::new(None),
            estimates: quick_cache::sync::Cache::new(ESTIMATE_PAIRS),
            sequences: sequences::SequenceWriter::start(deps.store.clone()),
            slots: Arc::new(Semaphore::new(cfg_concurrency)),
            tasks: tokio_util::task::TaskTracker::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            ended: Mutex::new(Vec::new()),
            deps,
        })
    }

    /// This worker's free slots, for the gateway of the same process.
    pub fn local_slots(self: &Arc<Self>) -> Arc<dyn LocalSlots> {
        Arc::new(Local(self.clone()))
    }

    /// This process's latest resource figures, if sampled yet.
    fn latest_resources(&self) -> Option<crate::progress::WorkerResources> {
        self.resources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn info(
        &self,
        claims: &[(JobId, String)],
        rss: Option<f64>,
        cpu: Option<f64>,
    ) -> crate::queue::WorkerInfo {
        crate::queue::WorkerInfo {
            id: self.id.clone(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
            started_at: self.started_at,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            job_types: self.job_types.clone(),
            busy_slots: u32::try_from(claims.len()).unwrap_or(u32::MAX),
            total_slots: u32::try_from(self.cfg.concurrency.max(1)).unwrap_or(u32::MAX),
            job_ids: claims.iter().map(|(id, _)| id.to_string()).collect(),
            resident_memory_mib: rss,
            cpu_percent: cpu,
            heartbeat_at: chrono::Utc::now(),
        }
    }

    /// This worker's id: `{host}-{pid}-{random}`.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Arc<Running>>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves a free slot for a job of `queue` (see [`LocalSlots::reserve`]).
    fn reserve(self: &Arc<Self>, queue: &str) -> Option<Box<dyn ReservedSlot>> {
        if self.draining.load(std::sync::atomic::Ordering::SeqCst)
            || self.cfg.queue_cap.is_some()
            || self.balancer.type_of(queue).is_none()
        {
            return None;
        }
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        Some(Box::new(Reserved {
            worker: self.clone(),
            owner: format!("{}/{}", self.id, uuid::Uuid::new_v4().simple()),
            permit,
        }))
    }

    /// Runs `claim` in its own task, holding `permit` (its slot) until the attempt ends.
    fn spawn_attempt(
        self: &Arc<Self>,
        tasks: &tokio_util::task::TaskTracker,
        claim: crate::queue::Claim,
        owner: &str,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let running = Arc::new(Running {
            owner: owner.to_owned(),
            queue: claim.queue.clone(),
            stop: CancellationToken::new(),
            reason: std::sync::OnceLock::new(),
            settled: std::sync::atomic::AtomicBool::new(false),
        });
        self.running().insert(claim.job_id, running.clone());
        let me = self.clone();
        tasks.spawn(async move {
            let mut guard = AttemptGuard {
                worker: me.clone(),
                job_id: claim.job_id,
                running: running.clone(),
                permit: Some(permit),
                finished: false,
            };
            me.run_attempt(claim.job_id, running).await;
            guard.finished = true;
        });
    }
}
