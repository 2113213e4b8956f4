//! Operator reports, read-only views that exist only to be shown: workload, workers,
//! performance, system health and the dashboard that holds them all. The API encodes them
//! (`api::admin::reports`).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{Admin, Error, QueueStats, waited_ms};
use crate::{
    queue::WorkerInfo,
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

/// A live worker: what it last reported, and how long ago.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveWorker {
    /// Its registry entry.
    pub info: WorkerInfo,
    /// Time since its last report (ms).
    pub heartbeat_age_ms: u64,
}

/// One queue's workload: what waits, who serves it, how long it would take.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Queue name.
    pub queue: String,
    /// Jobs waiting (pending and delayed).
    pub pending: u64,
    /// Slots of the live workers serving its job type.
    pub worker_slots: u32,
    /// Time to work off what waits at the queue's average runtime (ms; 0 when nothing waits).
    pub expected_wait_ms: f64,
}

/// One queue's or model's performance over a window, with its rates.
#[derive(Clone, Debug, PartialEq)]
pub struct Rates {
    /// The store's figures.
    pub figures: Performance,
    /// Jobs completed per minute over the window.
    pub throughput_per_minute: f64,
    /// Failed jobs out of the ended ones (0 when none ended).
    pub failure_rate: f64,
}

/// Performance over one of [`WINDOWS`], by queue and by model.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    /// The window's name, e.g. `5m`.
    pub name: &'static str,
    /// Per queue.
    pub by_queue: Vec<Rates>,
    /// Per model.
    pub by_model: Vec<Rates>,
}

/// The system's overall state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthStatus {
    /// Everything answers and nothing looks wrong.
    Ok,
    /// Everything answers, but jobs wait or fail (see the reasons).
    Degraded,
    /// A dependency does not answer.
    Down,
}

impl HealthStatus {
    /// Its name in reports: `ok`, `degraded` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Ok => "ok",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Down => "down",
        }
    }
}

/// Dependencies, workers, backlog and error rate, with an overall status and its reasons.
#[derive(Clone, Debug, PartialEq)]
pub struct Health {
    /// The overall status.
    pub status: HealthStatus,
    /// Why it is not [`HealthStatus::Ok`].
    pub reasons: Vec<String>,
    /// Round trip of a queue ping (ms), when it answered.
    pub redis_latency_ms: Option<f64>,
    /// Round trip of a store ping (ms), when it answered.
    pub postgres_latency_ms: Option<f64>,
    /// Live workers (0 when the queue cannot say).
    pub workers: u32,
    /// Jobs waiting in every queue (pending and delayed).
    pub backlog: u64,
    /// How long the oldest pending job has waited (ms).
    pub oldest_wait_ms: u64,
    /// Share of upstream attempts that failed over the last 5 minutes.
    pub upstream_error_rate: f64,
}

/// Every report on one page.
#[derive(Clone, Debug, PartialEq)]
pub struct Dashboard {
    /// When it was made.
    pub time: DateTime<Utc>,
    /// Every queue's statistics.
    pub queues: Vec<QueueStats>,
    /// Every queue's workload.
    pub workload: Vec<Workload>,
    /// The live workers.
    pub workers: Vec<LiveWorker>,
    /// Performance over every window.
    pub performance: Vec<Window>,
    /// System health.
    pub health: Health,
}

impl Admin {
    /// Live workers: those that reported within one lease period.
    pub async fn workers(&self) -> Result<Vec<LiveWorker>, Error> {
        let now = Utc::now();
        Ok(self
            .queue
            .workers(self.worker_window)
            .await?
            .into_iter()
            .map(|info| LiveWorker {
                heartbeat_age_ms: waited_ms(now, info.heartbeat_at),
                info,
            })
            .collect())
    }

    /// Per queue: what waits, who serves it, how long it would take.
    pub async fn workload(&self) -> Result<Vec<Workload>, Error> {
        let stats = self.stats().await?;
        let workers = self.workers().await?;
        Ok(stats
            .into_iter()
            .map(|s| {
                let slots: u32 = workers
                    .iter()
                    .filter(|w| w.info.job_types.contains(&s.job_type))
                    .map(|w| w.info.total_slots)
                    .sum();
                let pending = s.counts.pending + s.counts.delayed;
                let expected_wait_ms = if pending == 0 {
                    0.0
                } else {
                    pending as f64 * s.figures.average_runtime_ms / f64::from(slots.max(1))
                };
                Workload {
                    queue: s.name,
                    pending,
                    worker_slots: slots,
                    expected_wait_ms,
                }
            })
            .collect())
    }

    /// Performance per queue and model over every window of [`WINDOWS`].
    pub async fn performance(&self) -> Result<Vec<Window>, Error> {
        let mut windows = Vec::new();
        for (name, window) in WINDOWS {
            let minutes = window.as_secs_f64() / 60.0;
            let rated = |rows: Vec<Performance>| -> Vec<Rates> {
                rows.into_iter().map(|p| rates(p, minutes)).collect()
            };
            windows.push(Window {
                name,
                by_queue: rated(self.store.performance(window, GroupBy::Queue).await?),
                by_model: rated(self.store.performance(window, GroupBy::Model).await?),
            });
        }
        Ok(windows)
    }

    /// Dependencies, workers, backlog, error rate, and an overall status with reasons. Never
    /// fails: what cannot be measured makes the status "down" or "degraded".
    pub async fn health(&self) -> Health {
        let mut reasons = Vec::new();
        let (redis_latency_ms, postgres_latency_ms) = self.latencies(&mut reasons).await;
        let down = !reasons.is_empty();
        let workers = self
            .queue
            .workers(self.worker_window)
            .await
            .map(|w| w.len())
            .unwrap_or(0);
        let (backlog, oldest_wait_ms) = self.backlog().await;
        let upstream_error_rate = self
            .store
            .upstream_error_rate(ERROR_RATE_WINDOW)
            .await
            .unwrap_or(0.0);
        if !down {
            reasons = degraded(workers, backlog, oldest_wait_ms, upstream_error_rate);
        }
        let status = if down {
            HealthStatus::Down
        } else if reasons.is_empty() {
            HealthStatus::Ok
        } else {
            HealthStatus::Degraded
        };
        Health {
            status,
            reasons,
            redis_latency_ms,
            postgres_latency_ms,
            workers: u32::try_from(workers).unwrap_or(u32::MAX),
            backlog,
            oldest_wait_ms,
            upstream_error_rate,
        }
    }

    /// Ping round trips (ms) of the queue and the store; one that fails is `None` and adds
    /// its reason to `reasons`.
    async fn latencies(&self, reasons: &mut Vec<String>) -> (Option<f64>, Option<f64>) {
        let timed = |start: Instant| start.elapsed().as_secs_f64() * 1000.0;
        let start = Instant::now();
        let redis = match self.queue.ping().await {
            Ok(()) => Some(timed(start)),
            Err(e) => {
                reasons.push(format!("queue (Redis) unreachable: {e}"));
                None
            }
        };
        let start = Instant::now();
        let postgres = match self.store.ping().await {
            Ok(()) => Some(timed(start)),
            Err(e) => {
                reasons.push(format!("store unreachable: {e}"));
                None
            }
        };
        (redis, postgres)
    }

    /// Jobs waiting in every queue and the longest wait among them (ms); zeros when the queue
    /// cannot say.
    async fn backlog(&self) -> (u64, u64) {
        let (mut backlog, mut oldest_wait_ms) = (0, 0);
        let names: Vec<String> = self.queues().into_iter().map(|q| q.0).collect();
        if let Ok(counts) = self.queue.counts(&names).await {
            let now = Utc::now();
            for c in counts {
                backlog += c.pending + c.delayed;
                if let Some(t) = c.oldest_enqueued {
                    oldest_wait_ms = oldest_wait_ms.max(waited_ms(now, t));
                }
            }
        }
        (backlog, oldest_wait_ms)
    }

    /// Everything on one page.
    pub async fn dashboard(&self) -> Result<Dashboard, Error> {
        Ok(Dashboard {
            time: Utc::now(),
            queues: self.stats().await?,
            workload: self.workload().await?,
            workers: self.workers().await?,
            performance: self.performance().await?,
            health: self.health().await,
        })
    }
}

/// Why a system whose dependencies answer is degraded (none: it is not).
fn degraded(workers: usize, backlog: u64, oldest_wait_ms: u64, error_rate: f64) -> Vec<String> {
    let mut reasons = Vec::new();
    if workers == 0 && backlog > 0 {
        reasons.push(format!("{backlog} job(s) waiting and no live worker"));
    }
    if oldest_wait_ms > SLOW_WAIT.as_millis() as u64 {
        reasons.push(format!(
            "the oldest job has waited {} s",
            oldest_wait_ms / 1000
        ));
    }
    if error_rate > HIGH_ERROR_RATE {
        reasons.push(format!(
            "{:.0}% of upstream attempts failed in the last 5 minutes",
            error_rate * 100.0
        ));
    }
    reasons
}

/// `p` with its rates over a window of `minutes`.
fn rates(p: Performance, minutes: f64) -> Rates {
    let ended = p.completed + p.failed;
    Rates {
        throughput_per_minute: p.completed as f64 / minutes,
        failure_rate: if ended == 0 {
            0.0
        } else {
            p.failed as f64 / ended as f64
        },
        figures: p,
    }
}
