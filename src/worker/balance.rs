//! Which queues a worker claims from, in which order: priorities are strict inside a job type;
//! across job types the strategy decides, and a per-queue cap keeps one queue from taking
//! every slot. Paused queues are skipped by the claim itself.
//!
//! - `simple`: equal turns. The type after the last one served goes first, so types with
//!   work alternate and an empty type gives no extra turn to its neighbour.
//! - `auto`: types with more waiting work, and older work, go first: each type's weight is
//!   the sum over its queues of pending × (1 + oldest wait in seconds), read from Redis at
//!   most every 100 ms and after every claim. A type left behind gains weight as its oldest job ages, so none
//!   starves.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use chrono::Utc;
use tokio::time::Instant;

use crate::{
    job::{Priority, queue_name},
    queue::Queue,
};

/// How job types share a worker's slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    /// Equal turns among job types that have work.
    #[default]
    Simple,
    /// Turns weighted by backlog and oldest wait.
    Auto,
}

/// How long `auto` weights are reused (they are also dropped after every claim).
const WEIGHTS_TTL: Duration = Duration::from_millis(100);

/// Computes claim orders.
pub struct Balancer {
    strategy: Strategy,
    job_types: Vec<String>,
    /// Most jobs of one queue this worker runs at once (`None`: no cap).
    queue_cap: Option<usize>,
    weights: Mutex<Option<(Instant, Vec<String>)>>,
}

impl Balancer {
    /// A balancer over `job_types`.
    pub fn new(strategy: Strategy, job_types: Vec<String>, queue_cap: Option<usize>) -> Balancer {
        Balancer {
            strategy,
            job_types,
            queue_cap: queue_cap.filter(|c| *c > 0),
            weights: Mutex::new(None),
        }
    }

    /// Forgets the `auto` weights (a claim changed them).
    pub fn claimed(&self) {
        *self
            .weights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// The index of the job type that owns `queue`.
    pub fn type_of(&self, queue: &str) -> Option<usize> {
        self.job_types.iter().position(|t| {
            Priority::CLAIM_ORDER
                .iter()
                .any(|p| queue_name(t, *p) == queue)
        })
    }

    /// Queues to try, in order, for `turn` (the index of the type to start with under
    /// `simple`), leaving out queues at their cap given `running` jobs per queue.
    pub async fn order(
        &self,
        queue: &dyn Queue,
        turn: usize,
        running: &HashMap<String, usize>,
    ) -> Vec<String> {
        let types = match self.strategy {
            Strategy::Simple => self.rotation(turn),
            Strategy::Auto => self
                .by_weight(queue)
                .await
                .unwrap_or_else(|| self.rotation(turn)),
        };
        types
            .iter()
            .flat_map(|t| {
                Priority::CLAIM_ORDER
                    .into_iter()
                    .map(move |p| queue_name(t, p))
            })
            .filter(|q| {
                self.queue_cap
                    .is_none_or(|cap| running.get(q).copied().unwrap_or(0) < cap)
            })
            .collect()
    }

    fn rotation(&self, turn: usize) -> Vec<String> {
        let n = self.job_types.len().max(1);
        (0..self.job_types.len())
            .map(|i| self.job_types[(turn + i) % n].clone())
            .collect()
    }

    async fn by_weight(&self, queue: &dyn Queue) -> Option<Vec<String>> {
        {
            let cached = self
                .weights
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((at, order)) = cached.as_ref()
                && at.elapsed() < WEIGHTS_TTL
            {
                return Some(order.clone());
            }
        }
        let names: Vec<String> = self
            .job_types
            .iter()
            .flat_map(|t| {
                Priority::CLAIM_ORDER
                    .into_iter()
                    .map(move |p| queue_name(t, p))
            })
            .collect();
        let counts = queue.counts(&names).await.ok()?;
        let now = Utc::now();
        let mut weighted: Vec<(f64, usize)> = self
            .job_types
            .iter()
            .enumerate()
            .map(|(i, _)| {
                let weight = counts[i * 4..i * 4 + 4]
                    .iter()
                    .map(|c| {
                        let wait = c
                            .oldest_enqueued
                            .map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
                        c.pending as f64 * (1.0 + wait)
                    })
                    .sum::<f64>();
                (weight, i)
            })
            .collect();
        // Heaviest first; ties keep the configured order.
        weighted.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let order: Vec<String> = weighted
            .into_iter()
            .map(|(_, i)| self.job_types[i].clone())
            .collect();
        *self
            .weights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((Instant::now(), order.clone()));
        Some(order)
    }
}
