//! How `admin` and `monitor` print QueueAdminService answers for people: tables whose
//! columns fit their cells, health with its status in colour.

use crate::proto::v1;

/// Prints the failed jobs table (and, on stderr, the next page's token).
pub fn print_failed(r: &v1::ListFailedJobsResponse) {
    let rows = r.failed_jobs.iter().map(|f| {
        let job = f.job.clone().unwrap_or_default();
        let error = f
            .attempt_errors
            .last()
            .and_then(|a| a.error.clone())
            .unwrap_or_default();
        format!(
            "{}\t{}\t{}\t{}\t{} {}",
            job.id,
            job.queue,
            job.attempts,
            f.failed_time
                .as_ref()
                .and_then(crate::api::convert::datetime)
                .map_or("-".to_owned(), |t| t
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            crate::cli::style::paint(crate::cli::style::ERROR, &error.code),
            error.message
        )
    });
    let header = "JOB\tQUEUE\tATTEMPTS\tFAILED\tLAST ERROR".to_owned();
    anstream::print!(
        "{}",
        crate::cli::style::table(std::iter::once(header).chain(rows))
    );
    if !r.next_page_token.is_empty() {
        eprintln!("more: --page-token {}", r.next_page_token);
    }
}

/// Prints a page of audit events, newest first, and the token of the next page. Texts that
/// came from callers (targets, details) are printed with control characters escaped.
pub fn print_audit(r: &v1::ListAuditEventsResponse) {
    let rows = r.audit_events.iter().map(|e| {
        let outcome = match e.outcome.as_str() {
            "ok" => e.outcome.clone(),
            _ => crate::cli::style::paint(crate::cli::style::ERROR, &e.outcome),
        };
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            e.time
                .as_ref()
                .and_then(crate::api::convert::datetime)
                .map_or("-".to_owned(), |t| t
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            crate::cli::client::inert(&e.actor),
            crate::cli::client::inert(&e.tenant),
            crate::cli::client::inert(&e.action),
            crate::cli::client::inert(&e.target),
            outcome,
            crate::cli::client::inert(&e.detail),
        )
    });
    let header = "TIME\tACTOR\tTENANT\tACTION\tTARGET\tOUTCOME\tDETAIL".to_owned();
    anstream::print!(
        "{}",
        crate::cli::style::table(std::iter::once(header).chain(rows))
    );
    if !r.next_page_token.is_empty() {
        eprintln!("more: --page-token {}", r.next_page_token);
    }
}

/// Prints the queue table.
pub fn print_stats(queues: &[v1::QueueStats]) {
    println!(
        "{:<36} {:>8} {:>8} {:>8} {:>7} {:>10} {:>12} {:>12} {:>12} {:>8}",
        "QUEUE",
        "PENDING",
        "DELAYED",
        "RUNNING",
        "PAUSED",
        "JOBS/MIN",
        "AVG WAIT ms",
        "OLDEST ms",
        "RUNTIME ms",
        "FAILED/h"
    );
    for q in queues {
        println!(
            "{:<36} {:>8} {:>8} {:>8} {:>7} {:>10.1} {:>12.0} {:>12} {:>12.0} {:>8}",
            q.name,
            q.pending,
            q.delayed,
            q.running,
            if q.paused { "yes" } else { "no" },
            q.throughput_per_minute,
            q.average_wait_ms,
            q.oldest_wait_ms,
            q.average_runtime_ms,
            q.failed_last_hour
        );
    }
}

/// Prints the workload table.
pub fn print_workload(queues: &[v1::QueueWorkload]) {
    println!(
        "{:<36} {:>8} {:>8} {:>16}",
        "QUEUE", "PENDING", "SLOTS", "EXPECTED WAIT ms"
    );
    for q in queues {
        println!(
            "{:<36} {:>8} {:>8} {:>16.0}",
            q.queue, q.pending, q.worker_slots, q.expected_wait_ms
        );
    }
}

/// Prints the workers table.
pub fn print_workers(workers: &[v1::Worker]) {
    println!(
        "{:<32} {:>8} {:>9} {:>10} {:>8} {:>8}  VERSION",
        "WORKER", "PID", "SLOTS", "HEARTBEAT", "RSS MiB", "CPU %"
    );
    for w in workers {
        println!(
            "{:<32} {:>8} {:>4}/{:<4} {:>8}ms {:>8} {:>8}  {}",
            w.id,
            w.pid,
            w.busy_slots,
            w.total_slots,
            w.heartbeat_age_ms,
            w.resident_memory_mib
                .map_or("-".into(), |m| format!("{m:.1}")),
            w.cpu_percent.map_or("-".into(), |c| format!("{c:.1}")),
            w.version
        );
    }
}

/// Prints the performance tables, one per window.
pub fn print_performance(p: &v1::GetPerformanceMetricsResponse) {
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
    for w in &p.windows {
        println!("== last {} ==", w.window);
        println!(
            "{:<36} {:>6} {:>6} {:>9} {:>8} {:>20} {:>20} {:>8}",
            "QUEUE / MODEL",
            "DONE",
            "FAILED",
            "JOBS/MIN",
            "FAIL %",
            "RUNTIME p50/95/99",
            "TTFT p50/95/99",
            "TOK/s"
        );
        for m in w.by_queue.iter().chain(&w.by_model) {
            println!(
                "{:<36} {:>6} {:>6} {:>9.1} {:>8.1} {:>20} {:>20} {:>8.1}",
                m.key,
                m.completed,
                m.failed,
                m.throughput_per_minute,
                m.failure_rate * 100.0,
                format!(
                    "{}/{}/{}",
                    ms(m.runtime_p50_ms),
                    ms(m.runtime_p95_ms),
                    ms(m.runtime_p99_ms)
                ),
                format!(
                    "{}/{}/{}",
                    ms(m.time_to_first_token_p50_ms),
                    ms(m.time_to_first_token_p95_ms),
                    ms(m.time_to_first_token_p99_ms)
                ),
                m.output_tokens_per_second
            );
        }
    }
}

/// Prints system health.
pub fn print_health(h: &v1::SystemHealth) {
    let ms = |v: Option<f64>| v.map_or("unreachable".to_owned(), |v| format!("{v:.1} ms"));
    let status = match h.status.as_str() {
        "ok" => anstyle::AnsiColor::Green.on_default(),
        "degraded" => anstyle::AnsiColor::Yellow.on_default(),
        _ => crate::cli::style::ERROR,
    };
    anstream::println!(
        "status:              {}",
        crate::cli::style::paint(status, &h.status)
    );
    for r in &h.reasons {
        println!("  - {r}");
    }
    println!("queue latency:       {}", ms(h.redis_latency_ms));
    println!("store latency:       {}", ms(h.postgres_latency_ms));
    println!("workers:             {}", h.workers);
    println!("backlog:             {}", h.backlog);
    println!("oldest wait:         {} ms", h.oldest_wait_ms);
    println!(
        "upstream error rate: {:.1} %",
        h.upstream_error_rate * 100.0
    );
}

/// Prints a queue's state.
pub fn print_state(s: &v1::QueueState) {
    println!(
        "{}: {}",
        s.queue,
        if s.paused { "paused" } else { "running" }
    );
}
