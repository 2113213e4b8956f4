//! A sorted set of job ids ordered by (score, id), as Redis orders a zset.

use std::collections::{BTreeSet, HashMap};

use crate::job::JobId;

/// A sorted set of job ids: Redis's zset for the few commands the queue uses.
#[derive(Debug, Default)]
pub(super) struct ZSet {
    pub(super) ordered: BTreeSet<(i64, JobId)>,
    pub(super) scores: HashMap<JobId, i64>,
}

impl ZSet {
    /// `ZADD` (`nx`: only when absent). Returns true when added.
    pub(super) fn add(&mut self, id: JobId, score: i64, nx: bool) -> bool {
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
    pub(super) fn remove(&mut self, id: JobId) -> bool {
        match self.scores.remove(&id) {
            Some(score) => self.ordered.remove(&(score, id)),
            None => false,
        }
    }

    /// `ZPOPMIN`.
    pub(super) fn pop_min(&mut self) -> Option<JobId> {
        let (_, id) = self.ordered.pop_first()?;
        self.scores.remove(&id);
        Some(id)
    }

    /// The lowest score.
    pub(super) fn first_score(&self) -> Option<i64> {
        self.ordered.first().map(|(score, _)| *score)
    }

    /// Ids with a score of at most `max`, lowest first, at most `limit` of them.
    pub(super) fn up_to(&self, max: i64, limit: usize) -> Vec<JobId> {
        self.ordered
            .iter()
            .take_while(|(score, _)| *score <= max)
            .take(limit)
            .map(|(_, id)| *id)
            .collect()
    }

    pub(super) fn contains(&self, id: JobId) -> bool {
        self.scores.contains_key(&id)
    }

    pub(super) fn len(&self) -> usize {
        self.scores.len()
    }

    pub(super) fn ids(&self) -> impl Iterator<Item = JobId> + '_ {
        self.ordered.iter().map(|(_, id)| *id)
    }
}
