//! What waits in each queue, as observable gauges: `llmjobs.queue.depth` (waiting jobs),
//! `llmjobs.queue.delayed` (waiting to retry), `llmjobs.queue.reserved` (claimed by a
//! worker), `llmjobs.queue.paused` (1 when claims skip it) and `llmjobs.queue.oldest_wait`
//! (s, how long its oldest waiting job has waited), labelled by `queue`.
//!
//! The figures come from one [`Queue::counts`] call for every configured queue (one script
//! in Redis), made by [`Gauges::refresh`] when `/metrics` is scraped (at most once a second,
//! given [`READ_TIMEOUT`]) or every export interval when OTLP export is on. Collection itself
//! reads the last snapshot and never waits on Redis. Every process reports the same figures:
//! aggregate them with `max by (queue)`.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use opentelemetry::{KeyValue, metrics::Meter};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    job::{Priority, queue_name},
    queue::{Counts, Queue},
};

/// Least time between two reads of the queue.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Longest a read may take; past it the gauges report nothing until the next read.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The queue gauges of one process.
pub struct Gauges {
    queue: Arc<dyn Queue>,
    names: Vec<String>,
    latest: Mutex<Latest>,
    /// One read at a time; the others wait for it and use its figures.
    reading: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Latest {
    at: Option<Instant>,
    /// Per queue (in [`Gauges::names`] order): its label and counts.
    counts: Vec<([KeyValue; 1], Counts)>,
}

impl Gauges {
    /// Registers the gauges of the queues of `job_types` on `meter`, read from `queue`.
    pub fn register(meter: &Meter, queue: Arc<dyn Queue>, job_types: &[String]) -> Arc<Gauges> {
        let names = job_types
            .iter()
            .flat_map(|t| Priority::CLAIM_ORDER.map(|p| queue_name(t, p)))
            .collect();
        let gauges = Arc::new(Gauges {
            queue,
            names,
            latest: Mutex::default(),
            reading: tokio::sync::Mutex::new(()),
        });
        let figure = |name: &'static str, help: &'static str, of: fn(&Counts) -> i64| {
            let g = gauges.clone();
            meter
                .i64_observable_gauge(name)
                .with_unit("{job}")
                .with_description(help)
                .with_callback(move |o| {
                    for (label, counts) in &g.latest().counts {
                        o.observe(of(counts), label);
                    }
                })
                .build();
        };
        figure("llmjobs.queue.depth", "Jobs waiting in the queue", |c| {
            count(c.pending)
        });
        figure(
            "llmjobs.queue.delayed",
            "Jobs of the queue waiting to retry",
            |c| count(c.delayed),
        );
        figure(
            "llmjobs.queue.reserved",
            "Jobs of the queue claimed by a worker",
            |c| count(c.running),
        );
        figure(
            "llmjobs.queue.paused",
            "1 while claims skip the queue",
            |c| i64::from(c.paused),
        );
        let g = gauges.clone();
        meter
            .f64_observable_gauge("llmjobs.queue.oldest_wait")
            .with_unit("s")
            .with_description("How long the oldest waiting job of the queue has waited")
            .with_callback(move |o| {
                let now = Utc::now();
                for (label, counts) in &g.latest().counts {
                    o.observe(waited(counts.oldest_enqueued, now), label);
                }
            })
            .build();
        gauges
    }

    fn latest(&self) -> std::sync::MutexGuard<'_, Latest> {
        self.latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads the queues unless they were read within [`MIN_REFRESH`]. A read that fails or
    /// takes longer than [`READ_TIMEOUT`] leaves the gauges empty until the next one.
    pub async fn refresh(&self) {
        let _reading = self.reading.lock().await;
        if self
            .latest()
            .at
            .is_some_and(|at| at.elapsed() < MIN_REFRESH)
        {
            return;
        }
        let read = tokio::time::timeout(READ_TIMEOUT, self.queue.counts(&self.names)).await;
        let counts = match read {
            Ok(Ok(counts)) => self
                .names
                .iter()
                .zip(counts)
                .map(|(name, c)| ([KeyValue::new("queue", name.clone())], c))
                .collect(),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "queue gauges: cannot read the queues");
                Vec::new()
            }
            Err(_) => {
                tracing::debug!("queue gauges: the queues did not answer in time");
                Vec::new()
            }
        };
        *self.latest() = Latest {
            at: Some(Instant::now()),
            counts,
        };
    }

    /// Refreshes every `every` until `shutdown` (for OTLP export, whose reader collects on a
    /// thread of its own).
    pub async fn run(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(every.max(MIN_REFRESH));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.refresh().await,
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// `n` as a gauge value.
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Seconds since `oldest` (0 with no job waiting, or one dated in the future).
fn waited(oldest: Option<DateTime<Utc>>, now: DateTime<Utc>) -> f64 {
    oldest.map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_wait_is_zero_without_a_waiting_job() {
        let now = Utc::now();
        assert_eq!(waited(None, now), 0.0);
        assert_eq!(waited(Some(now + chrono::Duration::seconds(5)), now), 0.0);
        assert_eq!(
            waited(Some(now - chrono::Duration::milliseconds(1500)), now),
            1.5
        );
    }
}
