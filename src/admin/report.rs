//! Operator reports, built directly as their wire messages (they exist only to be shown):
//! workload, workers, performance, system health and the dashboard that holds them all.

use std::time::{Duration, Instant};

use chrono::Utc;

use super::Admin;
use crate::{
    api::convert,
    error::Error,
    proto::v1,
    store::{GroupBy, Performance},
};

/// The performance windows, with their names.
pub const WINDOWS: [(&str, Duration); 4] = [
    ("1m", Duration::from_secs(60)),
    ("5m", Duration::from_secs(300)),
    ("1h", Duration::from_secs(3600)),
    ("24h", Duration::from_secs(86_400)),
];

/// A backlog this old makes the system "degraded".
const SLOW_WAIT: Duration = Duration::from_secs(300);
/// An upstream error rate above this makes the system "degraded".
const HIGH_ERROR_RATE: f64 = 0.5;
/// Window of the upstream error rate.
const ERROR_RATE_WINDOW: Duration = Duration::from_secs(300);

impl Admin {
    /// Live workers: those that reported within one lease period.
    pub async fn workers(&self) -> Result<Vec<v1::Worker>, Error> {
        let now = Utc::now();
        Ok(self
            .queue
            .workers(self.worker_window)
            .await?
            .into_iter()
            .map(|w| v1::Worker {
                heartbeat_age_ms: u64::try_from((now - w.heartbeat_at).num_milliseconds())
                    .unwrap_or(0),
                start_time: Some(convert::timestamp(w.started_at)),
                id: w.id,
                host: w.host,
                pid: w.pid,
                version: w.version,
                job_types: w.job_types,
                busy_slots: w.busy_slots,
                total_slots: w.total_slots,
                job_ids: w.job_ids,
                resident_memory_mib: w.resident_memory_mib,
                cpu_percent: w.cpu_percent,
            })
            .collect())
    }

    /// Per queue: what waits, who serves it, how long it would take.
    pub async fn workload(&self) -> Result<Vec<v1::QueueWorkload>, Error> {
        let stats = self.stats().await?;
        let workers = self.workers().await?;
        Ok(stats
            .into_iter()
            .map(|s| {
                let slots: u32 = workers
                    .iter()
                    .filter(|w| w.job_types.contains(&s.job_type))
                    .map(|w| w.total_slots)
                    .sum();
                let pending = s.counts.pending + s.counts.delayed;
                let expected_wait_ms = if pending == 0 {
                    0.0
                } else {
                    pending as f64 * s.figures.average_runtime_ms / f64::from(slots.max(1))
                };
                v1::QueueWorkload {
                    queue: s.name,
                    pending,
                    worker_slots: slots,
                    expected_wait_ms,
                }
            })
            .collect())
    }

    /// Performance per queue and model over every window.
    pub async fn performance(&self) -> Result<v1::GetPerformanceMetricsResponse, Error> {
        let mut windows = Vec::new();
        for (name, window) in WINDOWS {
            let minutes = window.as_secs_f64() / 60.0;
            let encode = |rows: Vec<Performance>| -> Vec<v1::PerformanceMetrics> {
                rows.into_iter().map(|p| metrics(p, minutes)).collect()
            };
            windows.push(v1::PerformanceWindow {
                window: name.to_owned(),
                by_queue: encode(self.store.performance(window, GroupBy::Queue).await?),
                by_model: encode(self.store.performance(window, GroupBy::Model).await?),
            });
        }
        Ok(v1::GetPerformanceMetricsResponse { windows })
    }

    /// Dependencies, workers, backlog, error rate, and an overall status with reasons. Never
    /// fails: what cannot be measured makes the status "down" or "degraded".
    pub async fn health(&self) -> v1::SystemHealth {
        let mut reasons = Vec::new();
        let timed = |start: Instant| start.elapsed().as_secs_f64() * 1000.0;
        let start = Instant::now();
        let redis_latency_ms = match self.queue.ping().await {
            Ok(()) => Some(timed(start)),
            Err(e) => {
                reasons.push(format!("queue (Redis) unreachable: {e}"));
                None
            }
        };
        let start = Instant::now();
        let postgres_latency_ms = match self.store.ping().await {
            Ok(()) => Some(timed(start)),
            Err(e) => {
                reasons.push(format!("store unreachable: {e}"));
                None
            }
        };
        let down = !reasons.is_empty();
        let workers = self
            .queue
            .workers(self.worker_window)
            .await
            .map(|w| w.len())
            .unwrap_or(0);
        let (mut backlog, mut oldest_wait_ms) = (0, 0);
        if let Ok(counts) = self
            .queue
            .counts(&self.queues().into_iter().map(|q| q.0).collect::<Vec<_>>())
            .await
        {
            let now = Utc::now();
            for c in counts {
                backlog += c.pending + c.delayed;
                if let Some(t) = c.oldest_enqueued {
                    oldest_wait_ms = oldest_wait_ms
                        .max(u64::try_from((now - t).num_milliseconds()).unwrap_or(0));
                }
            }
        }
        let upstream_error_rate = self
            .store
            .upstream_error_rate(ERROR_RATE_WINDOW)
            .await
            .unwrap_or(0.0);
        if !down {
            if workers == 0 && backlog > 0 {
                reasons.push(format!("{backlog} job(s) waiting and no live worker"));
            }
            if oldest_wait_ms > SLOW_WAIT.as_millis() as u64 {
                reasons.push(format!(
                    "the oldest job has waited {} s",
                    oldest_wait_ms / 1000
                ));
            }
            if upstream_error_rate > HIGH_ERROR_RATE {
                reasons.push(format!(
                    "{:.0}% of upstream attempts failed in the last 5 minutes",
                    upstream_error_rate * 100.0
                ));
            }
        }
        let status = if down {
            "down"
        } else if reasons.is_empty() {
            "ok"
        } else {
            "degraded"
        };
        v1::SystemHealth {
            status: status.to_owned(),
            reasons,
            redis_latency_ms,
            postgres_latency_ms,
            workers: u32::try_from(workers).unwrap_or(u32::MAX),
            backlog,
            oldest_wait_ms,
            upstream_error_rate,
        }
    }

    /// Everything on one page.
    pub async fn dashboard(&self) -> Result<v1::Dashboard, Error> {
        Ok(v1::Dashboard {
            time: Some(convert::timestamp(Utc::now())),
            queues: self
                .stats()
                .await?
                .into_iter()
                .map(super::encode_stats)
                .collect(),
            workload: self.workload().await?,
            workers: self.workers().await?,
            performance: Some(self.performance().await?),
            health: Some(self.health().await),
        })
    }
}

fn metrics(p: Performance, minutes: f64) -> v1::PerformanceMetrics {
    let ended = p.completed + p.failed;
    v1::PerformanceMetrics {
        throughput_per_minute: p.completed as f64 / minutes,
        failure_rate: if ended == 0 {
            0.0
        } else {
            p.failed as f64 / ended as f64
        },
        runtime_p50_ms: p.runtime_ms[0],
        runtime_p95_ms: p.runtime_ms[1],
        runtime_p99_ms: p.runtime_ms[2],
        time_to_first_token_p50_ms: p.time_to_first_token_ms[0],
        time_to_first_token_p95_ms: p.time_to_first_token_ms[1],
        time_to_first_token_p99_ms: p.time_to_first_token_ms[2],
        output_tokens_per_second: p.output_tokens_per_second,
        input_tokens: p.input_tokens,
        output_tokens: p.output_tokens,
        cost_usd: p.cost_usd,
        key: p.key,
        completed: p.completed,
        failed: p.failed,
    }
}
