//! The queue's data under the names of its Redis keys, and each Lua script's steps on it.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::zset::ZSet;
use crate::{
    job::JobId,
    queue::{Beat, Claim, Counts, Held, Removal, WorkerInfo},
};

/// Due retries and expired leases moved per claim, as `claim.lua` does.
const MOVES_PER_CLAIM: usize = 100;

/// Everything the Redis queue keeps, under the names of its keys.
#[derive(Debug, Default)]
pub(super) struct State {
    /// `{P}:q:<queue>`: waiting ids, score = enqueue time (ms).
    pub(super) queues: HashMap<String, ZSet>,
    /// `{P}:leases`: claimed ids, score = lease deadline (ms).
    pub(super) leases: ZSet,
    /// `{P}:delayed`: ids waiting to retry, score = retry time (ms).
    pub(super) delayed: ZSet,
    /// `{P}:job-queue`.
    pub(super) job_queue: HashMap<JobId, String>,
    /// `{P}:owner`.
    pub(super) owner: HashMap<JobId, String>,
    /// `{P}:deliveries`.
    pub(super) deliveries: HashMap<JobId, u64>,
    /// `{P}:paused`.
    pub(super) paused: HashSet<String>,
    /// `P:cancel:<id>`: reason and when the flag expires.
    pub(super) cancel: HashMap<JobId, (String, DateTime<Utc>)>,
    /// `{P}:workers`.
    pub(super) workers: HashMap<String, WorkerInfo>,
}

impl State {
    pub(super) fn queue(&mut self, name: &str) -> &mut ZSet {
        self.queues.entry(name.to_owned()).or_default()
    }

    /// `claim.lua` at `now` (ms).
    pub(super) fn claim(
        &mut self,
        queues: &[String],
        owner: &str,
        lease_ms: i64,
        now: i64,
    ) -> Option<Claim> {
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
    pub(super) fn enqueue_claimed(
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
    pub(super) fn heartbeat(&mut self, claims: &[(JobId, String)], deadline: i64) -> Beat {
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
    pub(super) fn restore(&mut self, claims: &[Held], deadline: i64) -> Vec<JobId> {
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
    pub(super) fn settle(&mut self, id: JobId, owner: &str, retry_at: Option<i64>) -> bool {
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
    pub(super) fn remove(&mut self, id: JobId) -> Removal {
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
    pub(super) fn counts(&self, queues: &[String]) -> Vec<Counts> {
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
    pub(super) fn drain(&mut self, name: &str) -> Vec<JobId> {
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
