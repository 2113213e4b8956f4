//! The admin reports on the wire: [`crate::admin`]'s statistics and [`crate::admin::report`]'s
//! views, encoded as their `admin.proto` messages.

use crate::{
    admin::{
        QueueStats,
        report::{Dashboard, Health, LiveWorker, Rates, Window, Workload},
    },
    api::convert,
    proto::v1,
};

/// A queue's statistics.
pub(super) fn stats(s: QueueStats) -> v1::QueueStats {
    v1::QueueStats {
        priority: convert::priority(s.priority).into(),
        pending: s.counts.pending,
        delayed: s.counts.delayed,
        running: s.counts.running,
        paused: s.counts.paused,
        throughput_per_minute: s.figures.completed_last_5_minutes as f64 / 5.0,
        average_wait_ms: s.figures.average_wait_ms,
        oldest_wait_ms: s.oldest_wait_ms,
        average_runtime_ms: s.figures.average_runtime_ms,
        failed_last_hour: s.figures.failed_last_hour,
        name: s.name,
        job_type: s.job_type,
    }
}

/// A live worker.
pub(super) fn worker(w: LiveWorker) -> v1::Worker {
    let info = w.info;
    v1::Worker {
        heartbeat_age_ms: w.heartbeat_age_ms,
        start_time: Some(convert::timestamp(info.started_at)),
        id: info.id,
        host: info.host,
        pid: info.pid,
        version: info.version,
        job_types: info.job_types,
        busy_slots: info.busy_slots,
        total_slots: info.total_slots,
        job_ids: info.job_ids,
        resident_memory_mib: info.resident_memory_mib,
        cpu_percent: info.cpu_percent,
    }
}

/// A queue's workload.
pub(super) fn workload(w: Workload) -> v1::QueueWorkload {
    v1::QueueWorkload {
        queue: w.queue,
        pending: w.pending,
        worker_slots: w.worker_slots,
        expected_wait_ms: w.expected_wait_ms,
    }
}

/// Performance over every window.
pub(super) fn performance(windows: Vec<Window>) -> v1::GetPerformanceMetricsResponse {
    let encode = |rows: Vec<Rates>| rows.into_iter().map(metrics).collect();
    v1::GetPerformanceMetricsResponse {
        windows: windows
            .into_iter()
            .map(|w| v1::PerformanceWindow {
                window: w.name.to_owned(),
                by_queue: encode(w.by_queue),
                by_model: encode(w.by_model),
            })
            .collect(),
    }
}

/// One queue's or model's performance.
fn metrics(r: Rates) -> v1::PerformanceMetrics {
    let p = r.figures;
    v1::PerformanceMetrics {
        throughput_per_minute: r.throughput_per_minute,
        failure_rate: r.failure_rate,
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

/// System health.
pub(super) fn health(h: Health) -> v1::SystemHealth {
    v1::SystemHealth {
        status: h.status.as_str().to_owned(),
        reasons: h.reasons,
        redis_latency_ms: h.redis_latency_ms,
        postgres_latency_ms: h.postgres_latency_ms,
        workers: h.workers,
        backlog: h.backlog,
        oldest_wait_ms: h.oldest_wait_ms,
        upstream_error_rate: h.upstream_error_rate,
    }
}

/// Every report on one page.
pub(super) fn dashboard(d: Dashboard) -> v1::Dashboard {
    v1::Dashboard {
        time: Some(convert::timestamp(d.time)),
        queues: d.queues.into_iter().map(stats).collect(),
        workload: d.workload.into_iter().map(workload).collect(),
        workers: d.workers.into_iter().map(worker).collect(),
        performance: Some(performance(d.performance)),
        health: Some(health(d.health)),
    }
}
