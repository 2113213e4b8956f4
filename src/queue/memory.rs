//! [`Queue`] in process, for a single `serve` process without Redis: the same data as the
//! Redis layout ([`crate::redis`]) behind one mutex, so each operation is atomic as the Lua
//! scripts are, and a broadcast channel for wake-ups and cancels.
//!
//! Semantics follow `src/queue/*.lua` step for step: sorted sets ordered by (score, id), the
//! way Redis orders equal scores (a UUID's byte order is its text order); claims promote due
//! retries and reclaim expired leases themselves (at most 100 of each per claim), so there is
//! no timer. Nothing survives the process.

use std::{
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, mpsc};

mod state;
mod zset;

use super::{
    Beat, Claim, Counts, Error, Held, Queue, Removal, Settle, Signal, Signals, WorkerInfo,
    WorkerRegistry,
};
use crate::{events::memory::CancelFlags, job::JobId};
use state::State;

/// How long a cancel request stays visible to a worker that claims the job later (as in Redis).
const CANCEL_FLAG_TTL: Duration = Duration::from_secs(24 * 3600);
/// Signals buffered per worker before a slow one gets a single wake-up instead.
const SIGNAL_BUFFER: usize = 1024;

/// The in-process queue. Cheap to share behind an `Arc`; every clone of the `Arc` sees the
/// same queues.
pub struct MemoryQueue {
    state: Mutex<State>,
    signals: broadcast::Sender<Signal>,
}

impl Default for MemoryQueue {
    fn default() -> Self {
        MemoryQueue::new()
    }
}

impl MemoryQueue {
    /// An empty queue.
    pub fn new() -> MemoryQueue {
        MemoryQueue {
            state: Mutex::new(State::default()),
            signals: broadcast::channel(SIGNAL_BUFFER).0,
        }
    }

    /// The state; a panic elsewhere while holding it leaves consistent data (every step
    /// finishes before the next one starts), so a poisoned lock is taken anyway.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One claim at `now` (the unit tests' clock).
    #[cfg(test)]
    fn claim_at(
        &self,
        queues: &[String],
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Option<Claim> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        self.state()
            .claim(queues, owner, lease_ms, now.timestamp_millis())
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn enqueue(&self, job_id: JobId, queue: &str, at: DateTime<Utc>) -> Result<(), Error> {
        {
            let mut state = self.state();
            state.job_queue.insert(job_id, queue.to_owned());
            state.queue(queue).add(job_id, at.timestamp_millis(), true);
        }
        // No receiver (no worker yet) is fine: a worker claims when it starts.
        let _ = self.signals.send(Signal::Wake);
        Ok(())
    }

    async fn enqueue_claimed(
        &self,
        job_id: JobId,
        queue: &str,
        at: DateTime<Utc>,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Claim>, Error> {
        let deadline = super::lease_deadline(lease);
        let claim =
            self.state()
                .enqueue_claimed(job_id, queue, at.timestamp_millis(), owner, deadline);
        if claim.is_none() {
            let _ = self.signals.send(Signal::Wake);
        }
        Ok(claim)
    }

    async fn claim(
        &self,
        queues: &[String],
        owner: &str,
        lease: Duration,
        max: usize,
        ended: &[Settle],
    ) -> Result<Vec<Claim>, Error> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        let now = Utc::now().timestamp_millis();
        let mut state = self.state();
        for s in ended.iter().take(crate::queue::MAX_SETTLE) {
            state.settle(s.job_id, &s.owner, s.retry_at.map(|t| t.timestamp_millis()));
        }
        let mut claims = Vec::new();
        while claims.len() < max.clamp(1, crate::queue::MAX_CLAIM) {
            match state.claim(queues, owner, lease_ms, now) {
                Some(c) => claims.push(c),
                None => break,
            }
        }
        Ok(claims)
    }

    async fn heartbeat(&self, claims: &[(JobId, String)], lease: Duration) -> Result<Beat, Error> {
        let deadline = super::lease_deadline(lease);
        Ok(self.state().heartbeat(claims, deadline))
    }

    async fn restore(&self, claims: &[Held], lease: Duration) -> Result<Vec<JobId>, Error> {
        let deadline = super::lease_deadline(lease);
        Ok(self.state().restore(claims, deadline))
    }

    async fn settle(
        &self,
        job_id: JobId,
        owner: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<bool, Error> {
        Ok(self
            .state()
            .settle(job_id, owner, retry_at.map(|t| t.timestamp_millis())))
    }

    async fn remove(&self, job_id: JobId) -> Result<Removal, Error> {
        Ok(self.state().remove(job_id))
    }

    async fn counts(&self, queues: &[String]) -> Result<Vec<Counts>, Error> {
        Ok(self.state().counts(queues))
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), Error> {
        let mut state = self.state();
        if paused {
            state.paused.insert(queue.to_owned());
        } else {
            state.paused.remove(queue);
        }
        Ok(())
    }

    async fn drain(&self, queue: &str) -> Result<Vec<JobId>, Error> {
        Ok(self.state().drain(queue))
    }

    async fn known(&self, jobs: &[JobId]) -> Result<Vec<bool>, Error> {
        let state = self.state();
        Ok(jobs
            .iter()
            .map(|id| state.job_queue.contains_key(id))
            .collect())
    }

    async fn leased(&self, jobs: &[JobId]) -> Result<Vec<bool>, Error> {
        let state = self.state();
        Ok(jobs.iter().map(|id| state.leases.contains(*id)).collect())
    }

    async fn ping(&self) -> Result<(), Error> {
        Ok(())
    }
}

#[async_trait]
impl WorkerRegistry for MemoryQueue {
    async fn register_worker(&self, info: &WorkerInfo) -> Result<(), Error> {
        self.state().workers.insert(info.id.clone(), info.clone());
        Ok(())
    }

    async fn deregister_worker(&self, id: &str) -> Result<(), Error> {
        self.state().workers.remove(id);
        Ok(())
    }

    async fn workers(&self, window: Duration) -> Result<Vec<WorkerInfo>, Error> {
        let oldest = Utc::now().timestamp_millis()
            - i64::try_from(window.as_millis()).unwrap_or(i64::MAX / 2);
        let mut state = self.state();
        state
            .workers
            .retain(|_, w| w.heartbeat_at.timestamp_millis() >= oldest);
        let mut workers: Vec<WorkerInfo> = state.workers.values().cloned().collect();
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(workers)
    }
}

#[async_trait]
impl Signals for MemoryQueue {
    async fn signals(&self) -> Result<mpsc::Receiver<Signal>, Error> {
        let (tx, rx) = mpsc::channel(SIGNAL_BUFFER);
        let mut signals = self.signals.subscribe();
        tokio::spawn(async move {
            loop {
                let signal = tokio::select! {
                    s = signals.recv() => s,
                    _ = tx.closed() => return,
                };
                let signal = match signal {
                    Ok(s) => s,
                    // Missed some: claiming finds the work; a missed cancel is caught by the
                    // worker's check of the cancel flag.
                    Err(broadcast::error::RecvError::Lagged(_)) => Signal::Wake,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(signal).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    async fn cancel_requested(&self, job_id: JobId) -> Result<Option<String>, Error> {
        let mut state = self.state();
        let now = Utc::now();
        state.cancel.retain(|_, (_, expires)| *expires > now);
        Ok(state.cancel.get(&job_id).map(|(reason, _)| reason.clone()))
    }
}

/// The in-process event log reads and sets the flags here (they stay with the queue, whose
/// signals reach the workers), as `append.lua` and `cancel.lua` do in Redis.
impl CancelFlags for MemoryQueue {
    fn is_set(&self, job_id: JobId) -> bool {
        self.state()
            .cancel
            .get(&job_id)
            .is_some_and(|(_, expires)| *expires > Utc::now())
    }

    fn set(&self, job_id: JobId, reason: &str) {
        let expires = Utc::now() + CANCEL_FLAG_TTL;
        // Flag first, then signal, as cancel.lua does.
        self.state()
            .cancel
            .insert(job_id, (reason.to_owned(), expires));
        let _ = self.signals.send(Signal::Cancel(job_id));
    }

    fn clear(&self, job_id: JobId) {
        self.state().cancel.remove(&job_id);
    }

    fn expire(&self, job_id: JobId, after: Duration) {
        if let Some((_, expires)) = self.state().cancel.get_mut(&job_id) {
            *expires = Utc::now() + after;
        }
    }
}

#[cfg(test)]
mod tests;
