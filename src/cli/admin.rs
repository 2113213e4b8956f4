//! `llm-jobs admin …`: operator commands over `QueueAdminService`, printed as tables.

use super::client::{Channel, Connection, status_error};
use crate::proto::v1::{self, queue_admin_service_client::QueueAdminServiceClient};

/// `admin` arguments.
#[derive(clap::Args, Clone, Debug)]
pub struct AdminArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: Connection,
    /// Print the response as protobuf JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// Operator commands.
#[derive(clap::Subcommand, Clone, Debug)]
pub enum AdminCommand {
    /// Per-queue pending, delayed, running, paused, throughput, wait, runtime, failures.
    Stats,
    /// Pause a queue: its jobs stay pending.
    Pause {
        /// Queue name, e.g. openai-general-high.
        queue: String,
    },
    /// Resume a paused queue.
    Resume {
        /// Queue name.
        queue: String,
    },
    /// Pause a running queue or resume a paused one.
    Toggle {
        /// Queue name.
        queue: String,
    },
    /// Cancel every pending job of a queue.
    Purge {
        /// Queue name.
        queue: String,
    },
    /// List failed jobs, newest first.
    Failed {
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Only this job type.
        #[arg(long = "job-type")]
        job_type: Option<String>,
        /// Only this error code.
        #[arg(long = "error-code")]
        error_code: Option<String>,
        /// Continue after a previous page (the token it printed).
        #[arg(long = "page-token", default_value = "")]
        page_token: String,
        /// Page size (max 1000).
        #[arg(long, default_value_t = 50)]
        limit: i32,
    },
    /// Run failed jobs again (all failed jobs when no id is given).
    Retry {
        /// Job ids.
        job_ids: Vec<String>,
    },
    /// Remove failed jobs from the failed list (all when no id is given).
    Forget {
        /// Job ids.
        job_ids: Vec<String>,
    },
    /// Per queue: pending jobs, worker slots serving it, expected wait.
    Workload,
    /// Live worker processes.
    Workers,
    /// Throughput, runtime and time-to-first-token percentiles per queue and model.
    Performance,
    /// Dependencies, workers, backlog, upstream error rate, overall status.
    Health,
}

/// A QueueAdminService client.
pub async fn connect(c: &Connection) -> anyhow::Result<QueueAdminServiceClient<Channel>> {
    Ok(QueueAdminServiceClient::new(c.channel().await?))
}

/// Runs an `admin` command.
pub async fn run(a: AdminArgs) -> anyhow::Result<()> {
    let mut client = connect(&a.connection).await?;
    let json = a.json;
    macro_rules! show {
        ($name:literal, $msg:expr, $table:expr) => {{
            let msg = $msg;
            if json {
                super::print_json(concat!("llmjobs.v1.", $name), &msg)?;
            } else {
                $table(&msg);
            }
        }};
    }
    match a.command {
        AdminCommand::Stats => show!(
            "GetQueueStatsResponse",
            client
                .get_queue_stats(v1::GetQueueStatsRequest {})
                .await
                .map_err(status_error)?
                .into_inner(),
            |r: &v1::GetQueueStatsResponse| print_stats(&r.queues)
        ),
        AdminCommand::Pause { queue } => show!(
            "QueueState",
            client
                .pause_queue(v1::PauseQueueRequest { queue })
                .await
                .map_err(status_error)?
                .into_inner(),
            print_state
        ),
        AdminCommand::Resume { queue } => show!(
            "QueueState",
            client
                .resume_queue(v1::ResumeQueueRequest { queue })
                .await
                .map_err(status_error)?
                .into_inner(),
            print_state
        ),
        AdminCommand::Toggle { queue } => show!(
            "QueueState",
            client
                .toggle_queue(v1::ToggleQueueRequest { queue })
                .await
                .map_err(status_error)?
                .into_inner(),
            print_state
        ),
        AdminCommand::Purge { queue } => show!(
            "PurgeQueueResponse",
            client
                .purge_queue(v1::PurgeQueueRequest {
                    queue: queue.clone()
                })
                .await
                .map_err(status_error)?
                .into_inner(),
            |r: &v1::PurgeQueueResponse| println!("{queue}: {} pending job(s) cancelled", r.purged)
        ),
        AdminCommand::Failed {
            queue,
            job_type,
            error_code,
            limit,
            page_token,
        } => show!(
            "ListFailedJobsResponse",
            client
                .list_failed_jobs(v1::ListFailedJobsRequest {
                    queue: queue.unwrap_or_default(),
                    job_type: job_type.unwrap_or_default(),
                    error_code: error_code.unwrap_or_default(),
                    page_size: limit,
                    page_token,
                })
                .await
                .map_err(status_error)?
                .into_inner(),
            print_failed
        ),
        AdminCommand::Retry { job_ids } => show!(
            "RetryJobsResponse",
            client
                .retry_jobs(v1::RetryJobsRequest {
                    job_ids,
                    filter: None
                })
                .await
                .map_err(status_error)?
                .into_inner(),
            |r: &v1::RetryJobsResponse| {
                println!("{} job(s) queued again", r.retried_job_ids.len());
                for id in &r.retried_job_ids {
                    println!("{id}");
                }
                for s in &r.skipped {
                    println!("skipped {}: {}", s.job_id, s.reason);
                }
            }
        ),
        AdminCommand::Forget { job_ids } => show!(
            "ForgetFailedJobsResponse",
            client
                .forget_failed_jobs(v1::ForgetFailedJobsRequest {
                    job_ids,
                    filter: None
                })
                .await
                .map_err(status_error)?
                .into_inner(),
            |r: &v1::ForgetFailedJobsResponse| println!("{} failed job(s) forgotten", r.forgotten)
        ),
        AdminCommand::Workload => show!(
            "GetWorkloadResponse",
            client
                .get_workload(v1::GetWorkloadRequest {})
                .await
                .map_err(status_error)?
                .into_inner(),
            |r: &v1::GetWorkloadResponse| print_workload(&r.queues)
        ),
        AdminCommand::Workers => show!(
            "ListWorkersResponse",
            client
                .list_workers(v1::ListWorkersRequest {})
                .await
                .map_err(status_error)?
                .into_inner(),
            |r: &v1::ListWorkersResponse| print_workers(&r.workers)
        ),
        AdminCommand::Performance => show!(
            "GetPerformanceMetricsResponse",
            client
                .get_performance_metrics(v1::GetPerformanceMetricsRequest {})
                .await
                .map_err(status_error)?
                .into_inner(),
            print_performance
        ),
        AdminCommand::Health => {
            let h = client
                .get_system_health(v1::GetSystemHealthRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            show!("SystemHealth", h.clone(), print_health);
            if h.status == "down" {
                anyhow::bail!("the system is down");
            }
        }
    }
    Ok(())
}

fn print_failed(r: &v1::ListFailedJobsResponse) {
    println!(
        "{:<36} {:<28} {:>8}  LAST ERROR",
        "JOB", "QUEUE", "ATTEMPTS"
    );
    for f in &r.failed_jobs {
        let job = f.job.clone().unwrap_or_default();
        let error = f
            .attempt_errors
            .last()
            .and_then(|a| a.error.clone())
            .unwrap_or_default();
        println!(
            "{:<36} {:<28} {:>8}  {} {}",
            job.id, job.queue, job.attempts, error.code, error.message
        );
    }
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
    println!("status:              {}", h.status);
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

fn print_state(s: &v1::QueueState) {
    println!(
        "{}: {}",
        s.queue,
        if s.paused { "paused" } else { "running" }
    );
}
