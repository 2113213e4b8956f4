//! `llm-jobs admin …`: operator commands over `QueueAdminService`, printed as tables
//! (`admin/tables.rs`) or protobuf JSON; [`run`] dispatches each to a function of its own.
//! Retry and forget by filter, and purge, ask first (`admin/consent.rs`, [`super::confirm`]).

mod consent;
mod filters;
mod tables;

pub use filters::{AuditFilter, FailedFilter};

pub use tables::{
    print_audit, print_failed, print_health, print_performance, print_state, print_stats,
    print_workers, print_workload,
};

use super::{
    client::{Channel, Connection, status_error},
    confirm::Consent,
};
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
    /// Cancel every pending job of a queue, after a confirmation (`--yes` to skip it,
    /// `--dry-run` to only count them).
    Purge {
        /// Queue name.
        queue: String,
        #[command(flatten)]
        #[allow(missing_docs)]
        consent: Consent,
    },
    /// List failed jobs, newest first.
    Failed {
        #[command(flatten)]
        #[allow(missing_docs)]
        filter: FailedFilter,
        /// Continue after a previous page (the token it printed).
        #[arg(long = "page-token", default_value = "")]
        page_token: String,
        /// Page size (max 1000).
        #[arg(long, default_value_t = 50)]
        limit: i32,
    },
    /// Run failed jobs again. Without ids: every failed job matching the filter (the newest
    /// 1000), after a confirmation (`--yes` to skip it, `--dry-run` to only count them).
    Retry {
        /// Job ids.
        #[arg(conflicts_with_all = ["queue", "job_type", "error_code", "dry_run"])]
        job_ids: Vec<String>,
        #[command(flatten)]
        #[allow(missing_docs)]
        filter: FailedFilter,
        #[command(flatten)]
        #[allow(missing_docs)]
        consent: Consent,
    },
    /// Remove failed jobs from the failed list (rows are kept). Without ids: every failed job
    /// matching the filter (the newest 1000), after a confirmation (`--yes` to skip it,
    /// `--dry-run` to only count them).
    Forget {
        /// Job ids.
        #[arg(conflicts_with_all = ["queue", "job_type", "error_code", "dry_run"])]
        job_ids: Vec<String>,
        #[command(flatten)]
        #[allow(missing_docs)]
        filter: FailedFilter,
        #[command(flatten)]
        #[allow(missing_docs)]
        consent: Consent,
    },
    /// Per queue: pending jobs, worker slots serving it, expected wait.
    Workload,
    /// Live worker processes.
    Workers,
    /// Throughput, runtime and time-to-first-token percentiles per queue and model.
    Performance,
    /// Dependencies, workers, backlog, upstream error rate, overall status.
    Health,
    /// The audit log, newest first: who called what, on which target, with what outcome
    /// (ListAuditEvents). An operator sees every tenant's events, a tenant admin its own.
    Audit {
        #[command(flatten)]
        #[allow(missing_docs)]
        filter: AuditFilter,
        /// Continue after a previous page (the token it printed).
        #[arg(long = "page-token", default_value = "")]
        page_token: String,
        /// Page size (max 1000).
        #[arg(long, default_value_t = 50)]
        limit: i32,
    },
}

/// Most failed jobs one retry or forget by filter touches (`RetryJobs` and
/// `ForgetFailedJobs` take the newest this many), and so the page a dry run counts.
const BY_FILTER: i32 = 1000;

/// A QueueAdminService client.
pub async fn connect(c: &Connection) -> anyhow::Result<QueueAdminServiceClient<Channel>> {
    Ok(QueueAdminServiceClient::new(c.channel().await?))
}

/// A QueueAdminService client on the CLI's channel.
type Client = QueueAdminServiceClient<Channel>;

/// Runs an `admin` command.
pub async fn run(a: AdminArgs) -> anyhow::Result<()> {
    let mut client = connect(&a.connection).await?;
    let (c, json) = (&mut client, a.json);
    match a.command {
        AdminCommand::Stats => stats(c, json).await,
        AdminCommand::Pause { queue } => {
            let r = c.pause_queue(v1::PauseQueueRequest { queue }).await;
            show(
                json,
                "QueueState",
                &r.map_err(status_error)?.into_inner(),
                print_state,
            )
        }
        AdminCommand::Resume { queue } => {
            let r = c.resume_queue(v1::ResumeQueueRequest { queue }).await;
            show(
                json,
                "QueueState",
                &r.map_err(status_error)?.into_inner(),
                print_state,
            )
        }
        AdminCommand::Toggle { queue } => {
            let r = c.toggle_queue(v1::ToggleQueueRequest { queue }).await;
            show(
                json,
                "QueueState",
                &r.map_err(status_error)?.into_inner(),
                print_state,
            )
        }
        AdminCommand::Purge { queue, consent } => purge(c, queue, &consent, json).await,
        AdminCommand::Failed {
            filter,
            limit,
            page_token,
        } => {
            let r = c.list_failed_jobs(filter.request(limit, page_token)).await;
            let r = r.map_err(status_error)?.into_inner();
            show(json, "ListFailedJobsResponse", &r, print_failed)
        }
        AdminCommand::Retry {
            job_ids,
            filter,
            consent,
        } => retry(c, job_ids, filter, &consent, json).await,
        AdminCommand::Forget {
            job_ids,
            filter,
            consent,
        } => forget(c, job_ids, filter, &consent, json).await,
        AdminCommand::Workload => workload(c, json).await,
        AdminCommand::Workers => workers(c, json).await,
        AdminCommand::Performance => performance(c, json).await,
        AdminCommand::Audit {
            filter,
            page_token,
            limit,
        } => {
            let r = c.list_audit_events(filter.request(limit, page_token)).await;
            let r = r.map_err(status_error)?.into_inner();
            show(json, "ListAuditEventsResponse", &r, print_audit)
        }
        AdminCommand::Health => health(c, json).await,
    }
}

/// Prints `msg`, a `llmjobs.v1.{name}`, as protobuf JSON with `json`, else as `table` does.
fn show<M: prost::Message>(
    json: bool,
    name: &str,
    msg: &M,
    table: impl FnOnce(&M),
) -> anyhow::Result<()> {
    if json {
        super::print_json(&format!("llmjobs.v1.{name}"), msg)
    } else {
        table(msg);
        Ok(())
    }
}

/// `admin stats`.
async fn stats(c: &mut Client, json: bool) -> anyhow::Result<()> {
    let r = c.get_queue_stats(v1::GetQueueStatsRequest {}).await;
    let r = r.map_err(status_error)?.into_inner();
    show(json, "GetQueueStatsResponse", &r, |r| {
        print_stats(&r.queues)
    })
}

/// `admin workload`.
async fn workload(c: &mut Client, json: bool) -> anyhow::Result<()> {
    let r = c.get_workload(v1::GetWorkloadRequest {}).await;
    let r = r.map_err(status_error)?.into_inner();
    show(json, "GetWorkloadResponse", &r, |r| {
        print_workload(&r.queues)
    })
}

/// `admin workers`.
async fn workers(c: &mut Client, json: bool) -> anyhow::Result<()> {
    let r = c.list_workers(v1::ListWorkersRequest {}).await;
    let r = r.map_err(status_error)?.into_inner();
    show(json, "ListWorkersResponse", &r, |r| {
        print_workers(&r.workers)
    })
}

/// `admin performance`.
async fn performance(c: &mut Client, json: bool) -> anyhow::Result<()> {
    let r = c
        .get_performance_metrics(v1::GetPerformanceMetricsRequest {})
        .await;
    let r = r.map_err(status_error)?.into_inner();
    show(json, "GetPerformanceMetricsResponse", &r, print_performance)
}

/// `admin health`. Errors: the system is down (after printing why).
async fn health(c: &mut Client, json: bool) -> anyhow::Result<()> {
    let h = c.get_system_health(v1::GetSystemHealthRequest {}).await;
    let h = h.map_err(status_error)?.into_inner();
    show(json, "SystemHealth", &h, print_health)?;
    if h.status == "down" {
        anyhow::bail!("the system is down");
    }
    Ok(())
}

/// `admin purge`: cancels a queue's pending jobs once agreed to ([`consent::purge`]).
async fn purge(c: &mut Client, queue: String, consent: &Consent, json: bool) -> anyhow::Result<()> {
    if !consent::purge(c, &queue, consent).await? {
        return Ok(());
    }
    let r = c
        .purge_queue(v1::PurgeQueueRequest {
            queue: queue.clone(),
        })
        .await;
    let r = r.map_err(status_error)?.into_inner();
    show(json, "PurgeQueueResponse", &r, |r| {
        println!("{queue}: {} pending job(s) cancelled", r.purged)
    })
}

/// Whether a retry or forget goes ahead: at once for jobs named by id; by filter, once
/// [`consent::by_filter`] agrees.
async fn goes_ahead(
    c: &mut Client,
    job_ids: &[String],
    filter: &v1::ListFailedJobsRequest,
    consent: &Consent,
    act: &consent::Act,
    json: bool,
) -> anyhow::Result<bool> {
    Ok(!job_ids.is_empty() || consent::by_filter(c, filter, consent, act, json).await?)
}

/// `admin retry`: the jobs named, or (once agreed to) every failed job `filter` matches.
async fn retry(
    c: &mut Client,
    job_ids: Vec<String>,
    filter: FailedFilter,
    consent: &Consent,
    json: bool,
) -> anyhow::Result<()> {
    let filter = filter.request(BY_FILTER, String::new());
    let act = consent::Act {
        verb: "retry",
        done: "would be queued again",
        nothing: "nothing retried",
    };
    if !goes_ahead(c, &job_ids, &filter, consent, &act, json).await? {
        return Ok(());
    }
    let r = c
        .retry_jobs(v1::RetryJobsRequest {
            filter: job_ids.is_empty().then_some(filter),
            job_ids,
        })
        .await;
    let r = r.map_err(status_error)?.into_inner();
    show(json, "RetryJobsResponse", &r, |r| {
        println!("{} job(s) queued again", r.retried_job_ids.len());
        for id in &r.retried_job_ids {
            println!("{id}");
        }
        print_skipped(&r.skipped);
    })
}

/// `admin forget`: the jobs named, or (once agreed to) every failed job `filter` matches.
async fn forget(
    c: &mut Client,
    job_ids: Vec<String>,
    filter: FailedFilter,
    consent: &Consent,
    json: bool,
) -> anyhow::Result<()> {
    let filter = filter.request(BY_FILTER, String::new());
    let act = consent::Act {
        verb: "forget",
        done: "would leave the failed list (rows kept)",
        nothing: "nothing forgotten",
    };
    if !goes_ahead(c, &job_ids, &filter, consent, &act, json).await? {
        return Ok(());
    }
    let r = c
        .forget_failed_jobs(v1::ForgetFailedJobsRequest {
            filter: job_ids.is_empty().then_some(filter),
            job_ids,
        })
        .await;
    let r = r.map_err(status_error)?.into_inner();
    show(json, "ForgetFailedJobsResponse", &r, |r| {
        println!("{} failed job(s) forgotten", r.forgotten);
        print_skipped(&r.skipped);
    })
}

/// The ids a retry or forget left alone, one line each with the reason.
fn print_skipped(skipped: &[v1::SkippedJob]) {
    for s in skipped {
        println!("skipped {}: {}", s.job_id, s.reason);
    }
}
