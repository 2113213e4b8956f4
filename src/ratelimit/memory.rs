//! The limits' counters in process, for a single `serve` process without Redis: the same
//! rules as `window.lua`, `reserve.lua` and `budget.lua`, behind one mutex so each step is
//! atomic as a script is. Counters expire after two windows, as their Redis keys do; expired
//! ones are dropped when read and by a sweep at most every minute.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard, PoisonError},
};

use super::fits;
use crate::job::JobId;

/// Least time between two sweeps (ms).
const SWEEP_EVERY_MS: i64 = 60_000;

/// Counters, penalty flags and reservation sets, by the names their Redis keys have.
#[derive(Debug, Default)]
pub struct Counters {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Value and expiry (ms) of each counter.
    counters: HashMap<String, (u64, i64)>,
    /// Flags (the upstream penalty) and their expiry (ms).
    flags: HashMap<String, i64>,
    /// Reserved job ids per key, with their reservation time (ms).
    sets: HashMap<String, HashMap<JobId, i64>>,
    next_sweep: i64,
}

impl Inner {
    fn get(&self, key: &str, now: i64) -> u64 {
        self.counters
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map_or(0, |(n, _)| *n)
    }

    /// `INCRBY` + `PEXPIRE`.
    fn add(&mut self, key: &str, amount: u64, expires: i64, now: i64) -> u64 {
        let n = self.get(key, now) + amount;
        self.counters.insert(key.to_owned(), (n, expires));
        n
    }

    fn sweep(&mut self, now: i64) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP_EVERY_MS;
        self.counters.retain(|_, (_, expires)| *expires > now);
        self.flags.retain(|_, expires| *expires > now);
    }
}

/// A two-window take: the window's counters and where `now` is in it.
pub(super) struct Window<'a> {
    /// The previous window's counter.
    pub prev: &'a str,
    /// The current window's counter.
    pub cur: &'a str,
    /// Ms elapsed in the current window.
    pub elapsed: u64,
    /// Window length (ms).
    pub length: u64,
    /// Now (ms since the epoch).
    pub now: i64,
}

impl Window<'_> {
    fn expires(&self) -> i64 {
        self.now
            .saturating_add(i64::try_from(self.length.saturating_mul(2)).unwrap_or(i64::MAX))
    }
}

impl Counters {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `window.lua`: takes `amount` when it fits under `limit`. Returns whether it did and
    /// the previous and current counts.
    pub(super) fn take(&self, w: &Window<'_>, limit: u64, amount: u64) -> (bool, u64, u64) {
        let mut inner = self.inner();
        inner.sweep(w.now);
        let (prev, cur) = (inner.get(w.prev, w.now), inner.get(w.cur, w.now));
        if !fits(limit, amount, prev, cur, w.elapsed, w.length) {
            return (false, prev, cur);
        }
        let cur = inner.add(w.cur, amount, w.expires(), w.now);
        (true, prev, cur)
    }

    /// `budget.lua`: one request from `requests` and `tokens` from `tokens` (limits 0:
    /// none), both or neither. Returns whether taken and the four counts (requests previous
    /// and current, tokens previous and current).
    pub(super) fn take_both(
        &self,
        requests: (&Window<'_>, u64),
        tokens: (&Window<'_>, u64, u64),
    ) -> (bool, [u64; 4]) {
        let (rw, rl) = requests;
        let (tw, tl, amount) = tokens;
        let mut inner = self.inner();
        inner.sweep(rw.now);
        let mut counts = [
            inner.get(rw.prev, rw.now),
            inner.get(rw.cur, rw.now),
            inner.get(tw.prev, tw.now),
            inner.get(tw.cur, tw.now),
        ];
        let fits_r = rl == 0 || fits(rl, 1, counts[0], counts[1], rw.elapsed, rw.length);
        let fits_t = tl == 0 || fits(tl, amount, counts[2], counts[3], tw.elapsed, tw.length);
        if !(fits_r && fits_t) {
            return (false, counts);
        }
        counts[1] = inner.add(rw.cur, 1, rw.expires(), rw.now);
        counts[3] = inner.add(tw.cur, amount, tw.expires(), tw.now);
        (true, counts)
    }

    /// Sets `key` until `until` (ms).
    pub(super) fn flag(&self, key: &str, until: i64) {
        self.inner().flags.insert(key.to_owned(), until);
    }

    /// Whether `key` is set at `now` (ms).
    pub(super) fn flagged(&self, key: &str, now: i64) -> bool {
        self.inner().flags.get(key).is_some_and(|t| *t > now)
    }

    /// `reserve.lua`: holds `ids` at `key` when they fit under `limit`.
    pub(super) fn reserve(&self, key: &str, limit: u32, now: i64, ids: &[JobId]) -> bool {
        let mut inner = self.inner();
        let held = inner.sets.entry(key.to_owned()).or_default();
        if held.len() + ids.len() > limit as usize {
            return false;
        }
        held.extend(ids.iter().map(|id| (*id, now)));
        true
    }

    /// Ids held at `key` since before `older` (ms).
    pub(super) fn held_before(&self, key: &str, older: i64) -> Vec<JobId> {
        self.inner().sets.get(key).map_or_else(Vec::new, |held| {
            held.iter()
                .filter(|(_, at)| **at <= older)
                .map(|(id, _)| *id)
                .collect()
        })
    }

    /// Lets go of `ids` at `key`.
    pub(super) fn release(&self, key: &str, ids: &[JobId]) {
        let mut inner = self.inner();
        if let Some(held) = inner.sets.get_mut(key) {
            for id in ids {
                held.remove(id);
            }
            if held.is_empty() {
                inner.sets.remove(key);
            }
        }
    }
}
