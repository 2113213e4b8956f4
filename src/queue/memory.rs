//! [`Queue`] in process, for a single `serve` process without Redis: the same data as the
//! Redis layout ([`crate::backend`]) behind one mutex, so each operation is atomic as the Lua
//! scripts are, and a broadcast channel for wake-ups and cancels.
//!
//! Semantics follow `src/queue/*.lua` step for step: sorted sets ordered by (score, id), the
//! way Redis orders equal scores (a UUID's byte order is its text order); claims promote due
//! retries and reclaim expired leases themselves (at most 100 of each per claim), so there is
//! no timer. Nothing survives the process.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, mpsc};

use super::{Beat, Claim, Counts, Error, Held, Queue, Removal, Settle, Signal, WorkerInfo};
use crate::{events::memory::CancelFlags, job::JobId};

/// How long a cancel request stays visible to a worker that claims the job later (as in Redis).
const CANCEL_FLAG_TTL: Duration = Duration::from_secs(24 * 3600);
/// Due retries and expired leases moved per claim, as `claim.lua` does.
const MOVES_PER_CLAIM: usize = 100;
/// Signals buffered per worker before a slow one gets a single wake-up instead.
const SIGNAL_BUFFER: usize = 1024;

/// A sorted set of job ids: Redis's zset for the few commands the queue uses.
#[derive(Debug, Default)]
struct ZSet {
    ordered: BTreeSet<(i64, JobId)>,
    scores: HashMap<JobId, i64>,
}

impl ZSet {
    /// `ZADD` (`nx`: only when absent). Returns true when added.
    fn add(&mut self, id: JobId, score: i64, nx: bool) -> bool {
        match self.scores.insert(id, score) {
            Some(old) if nx => {
                self.scores.insert(id, old);
                false
            }
            Some(old) => {
                self.ordered.remove(&(old, id));
                self.ordered.insert((score, id));
                false
            }
            None => {
                self.ordered.insert((score, id));
                true
            }
        }
    }

    /// `ZREM`. Returns true when it was there.
    fn remove(&mut self, id: JobId) -> bool {
        match self.scores.remove(&id) {
            Some(score) => self.ordered.remove(&(score, id)),
            None => false,
        }
    }

    /// `ZPOPMIN`.
    fn pop_min(&mut self) -> Option<JobId> {
        let (_, id) = self.ordered.pop_first()?;
        self.scores.remove(&id);
        Some(id)
    }

    /// The lowest score.
    fn first_score(&self) -> Option<i64> {
        self.ordered.first().map(|(score, _)| *score)
    }

    /// Ids with a score of at most `max`, lowest first, at most `limit` of them.
    fn up_to(&self, max: i64, limit: usize) -> Vec<JobId> {
        self.ordered
            .iter()
            .take_while(|(score, _)| *score <= max)
            .take(limit)
            .map(|(_, id)| *id)
            .collect()
    }

    fn contains(&self, id: JobId) -> bool {
        self.scores.contains_key(&id)
    }

    fn len(&self) -> usize {
        self.scores.len()
    }

    fn ids(&self) -> impl Iterator<Item = JobId> + '_ {
        self.ordered.iter().map(|(_, id)| *id)
    }
}

/// Everything the Redis queue keeps, under the names of its keys.
#[derive(Debug, Default)]
struct State {
    /// `{P}:q:<queue>`: waiting ids, score = enqueue time (ms).
    queues: HashMap<String, ZSet>,
    /// `{P}:leases`: claimed ids, score = lease deadline (ms).
    leases: ZSet,
    /// `{P}:delayed`: ids waiting to retry, score = retry time (ms).
    delayed: ZSet,
    /// `{P}:job-queue`.
    job_queue: HashMap<JobId, String>,
    /// `{P}:owner`.
    owner: HashMap<JobId, String>,
    /// `{P}:deliveries`.
    deliveries: HashMap<JobId, u64>,
    /// `{P}:paused`.
    paused: HashSet<String>,
    /// `P:cancel:<id>`: reason and when the flag expires.
    cancel: HashMap<JobId, (String, DateTime<Utc>)>,
    /// `{P}:workers`.
    workers: HashMap<String, WorkerInfo>,
}

impl State {
    fn queue(&mut self, name: &str) -> &mut ZSet {
        self.queues.entry(name.to_owned()).or_default()
    }

    /// `claim.lua` at `now` (ms).
    fn claim(&mut self, queues: &[String], owner: &str, lease_ms: i64, now: i64) -> Option<Claim> {
        for id in self.delayed.up_to(now, MOVES_PER_CLAIM) {
            self.delayed.remove(id);
            if let Some(q) = self.job_queue.get(&id).cloned() {
                self.queue(&q).add(id, now, true);
            }
        }
        for id in self.leases.up_to(now, MOVES_PER_CLAIM) {
            self.leases.remove(id);
            self.owner.remove(&id);
            if let Some(q) = self.job_queue.get(&id).cloned() {
                // A reclaimed job has waited already: front of its queue.
                let queue = self.queue(&q);
                let score = match queue.first_score() {
                    Some(first) if first <= now => first - 1,
                    _ => now,
                };
                queue.add(id, score, true);
            }
        }
        for name in queues {
            if self.paused.contains(name) {
                continue;
            }
            let Some(id) = self.queues.get_mut(name).and_then(ZSet::pop_min) else {
                continue;
            };
            self.leases.add(id, now.saturating_add(lease_ms), false);
            self.owner.insert(id, owner.to_owned());
            let deliveries = self.deliveries.entry(id).or_default();
            *deliveries += 1;
            return Some(Claim {
                job_id: id,
                queue: name.clone(),
                deliveries: *deliveries,
            });
        }
        None
    }

    /// `enqueue_claim.lua`: claims `id` for `owner` until `deadline` (ms) when `queue` is
    /// empty and not paused; else enqueues it at `score` (and the caller wakes the workers).
    fn enqueue_claimed(
        &mut self,
        id: JobId,
        queue: &str,
        score: i64,
        owner: &str,
        deadline: i64,
    ) -> Option<Claim> {
        self.job_queue.insert(id, queue.to_owned());
        if self.paused.contains(queue) || self.queues.get(queue).is_some_and(|q| q.len() > 0) {
            self.queue(queue).add(id, score, true);
            return None;
        }
        self.leases.add(id, deadline, false);
        self.owner.insert(id, owner.to_owned());
        let deliveries = self.deliveries.entry(id).or_default();
        *deliveries += 1;
        Some(Claim {
            job_id: id,
            queue: queue.to_owned(),
            deliveries: *deliveries,
        })
    }

    /// `heartbeat.lua`: extends the leases still owned; returns the lost ones.
    fn heartbeat(&mut self, claims: &[(JobId, String)], deadline: i64) -> Beat {
        let mut beat = Beat::default();
        for (id, owner) in claims {
            match self.owner.get(id) {
                Some(o) if o == owner => {
                    self.leases.add(*id, deadline, false);
                }
                None if !self.job_queue.contains_key(id) => beat.vanished.push(*id),
                _ => beat.lost.push(*id),
            }
        }
        beat
    }

    /// `restore.lua`.
    fn restore(&mut self, claims: &[Held], deadline: i64) -> Vec<JobId> {
        let mut restored = Vec::new();
        for c in claims {
            if self.owner.contains_key(&c.job_id) || self.job_queue.contains_key(&c.job_id) {
                continue;
            }
            self.job_queue.insert(c.job_id, c.queue.clone());
            self.owner.insert(c.job_id, c.owner.clone());
            self.deliveries.entry(c.job_id).or_insert(1);
            self.leases.add(c.job_id, deadline, false);
            restored.push(c.job_id);
        }
        restored
    }

    /// `settle.lua`.
    fn settle(&mut self, id: JobId, owner: &str, retry_at: Option<i64>) -> bool {
        if self.owner.get(&id).map(String::as_str) != Some(owner) {
            return false;
        }
        self.leases.remove(id);
        self.owner.remove(&id);
        match retry_at {
            None => {
                self.deliveries.remove(&id);
                self.job_queue.remove(&id);
            }
            Some(at) => {
                self.delayed.add(id, at, false);
            }
        }
        true
    }

    /// `remove.lua`.
    fn remove(&mut self, id: JobId) -> Removal {
        if self.leases.contains(id) {
            return Removal::Leased;
        }
        let mut removed = self.delayed.remove(id);
        if let Some(q) = self.job_queue.remove(&id) {
            removed |= self.queue(&q).remove(id);
        }
        self.deliveries.remove(&id);
        if removed {
            Removal::Removed
        } else {
            Removal::Absent
        }
    }

    /// `stats.lua`.
    fn counts(&self, queues: &[String]) -> Vec<Counts> {
        let tally = |set: &ZSet, name: &str| {
            set.ids()
                .filter(|id| self.job_queue.get(id).is_some_and(|q| q == name))
                .count() as u64
        };
        queues
            .iter()
            .map(|name| {
                let queue = self.queues.get(name);
                Counts {
                    pending: queue.map_or(0, |q| q.len() as u64),
                    oldest_enqueued: queue
                        .and_then(ZSet::first_score)
                        .and_then(DateTime::from_timestamp_millis),
                    delayed: tally(&self.delayed, name),
                    running: tally(&self.leases, name),
                    paused: self.paused.contains(name),
                }
            })
            .collect()
    }

    /// `drain.lua`.
    fn drain(&mut self, name: &str) -> Vec<JobId> {
        let ids: Vec<JobId> = self
            .queues
            .remove(name)
            .map(|q| q.ids().collect())
            .unwrap_or_default();
        for id in &ids {
            self.job_queue.remove(id);
            self.deliveries.remove(id);
        }
        ids
    }
}

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

    async fn cancel_requested(&self, job_id: JobId) -> Result<Option<String>, Error> {
        let mut state = self.state();
        let now = Utc::now();
        state.cancel.retain(|_, (_, expires)| *expires > now);
        Ok(state.cancel.get(&job_id).map(|(reason, _)| reason.clone()))
    }

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
