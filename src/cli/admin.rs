//! `llm-jobs admin …`: operator commands over `QueueAdminService`, printed as tables
//! (`admin/tables.rs`) or protobuf JSON; retry and forget by filter ask first ([`super::confirm`]).

mod tables;

pub use tables::{
    print_audit, print_failed, print_health, print_performance, print_state, print_stats,
    print_workers, print_workload,
};

use super::{
    client::{Channel, Connection, status_error},
    confirm::{Answer, Consent},
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

/// Which audit events: every filter given must match (none: all the caller may see).
#[derive(clap::Args, Clone, Debug)]
pub struct AuditFilter {
    /// Only this tenant's events.
    #[arg(long)]
    tenant: Option<String>,
    /// Only this caller's: an API key's prefix, `anonymous`, `local` (`llm-jobs keys`) or
    /// `auth-off`.
    #[arg(long)]
    actor: Option<String>,
    /// Only this action: an RPC name (`CancelJob`, `PauseQueue` ...), `authenticate`,
    /// `authorize`, `keys.create`, `keys.revoke`.
    #[arg(long)]
    action: Option<String>,
    /// Only `ok`, `denied` or `error` events.
    #[arg(long)]
    outcome: Option<String>,
    /// Only events of the last AGE: a number with a unit, s, m, h or d (`90m`, `7d`).
    #[arg(long, value_parser = super::cleanup::parse_age)]
    since: Option<std::time::Duration>,
}

impl AuditFilter {
    /// The request for a page of `page_size` events this filter matches.
    fn request(self, page_size: i32, page_token: String) -> v1::ListAuditEventsRequest {
        let since = self.since.map(|age| {
            let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
            crate::api::convert::timestamp(
                chrono::Utc::now()
                    .checked_sub_signed(age)
                    .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC),
            )
        });
        v1::ListAuditEventsRequest {
            page_size,
            page_token,
            tenant: self.tenant.unwrap_or_default(),
            actor: self.actor.unwrap_or_default(),
            action: self.action.unwrap_or_default(),
            outcome: self.outcome.unwrap_or_default(),
            since,
        }
    }
}

/// Which failed jobs: every filter given must match (none: all of them).
#[derive(clap::Args, Clone, Debug)]
pub struct FailedFilter {
    /// Only this queue.
    #[arg(long)]
    queue: Option<String>,
    /// Only this job type.
    #[arg(long = "job-type")]
    job_type: Option<String>,
    /// Only this error code.
    #[arg(long = "error-code")]
    error_code: Option<String>,
}

impl FailedFilter {
    /// The request listing the first `page_size` failed jobs this filter matches.
    fn request(self, page_size: i32, page_token: String) -> v1::ListFailedJobsRequest {
        v1::ListFailedJobsRequest {
            queue: self.queue.unwrap_or_default(),
            job_type: self.job_type.unwrap_or_default(),
            error_code: self.error_code.unwrap_or_default(),
            page_size,
            page_token,
        }
    }
}

/// Most failed jobs one retry or forget by filter touches (`RetryJobs` and
/// `ForgetFailedJobs` take the newest this many), and so the page a dry run counts.
const BY_FILTER: i32 = 1000;

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
        AdminCommand::Purge { queue, consent } => {
            if !purge_consented(&mut client, &queue, &consent).await? {
                return Ok(());
            }
            show!(
                "PurgeQueueResponse",
                client
                    .purge_queue(v1::PurgeQueueRequest {
                        queue: queue.clone()
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner(),
                |r: &v1::PurgeQueueResponse| println!(
                    "{queue}: {} pending job(s) cancelled",
                    r.purged
                )
            )
        }
        AdminCommand::Failed {
            filter,
            limit,
            page_token,
        } => show!(
            "ListFailedJobsResponse",
            client
                .list_failed_jobs(filter.request(limit, page_token))
                .await
                .map_err(status_error)?
                .into_inner(),
            print_failed
        ),
        AdminCommand::Retry {
            job_ids,
            filter,
            consent,
        } => {
            let filter = filter.request(BY_FILTER, String::new());
            if job_ids.is_empty() {
                let act = Act {
                    verb: "retry",
                    done: "would be queued again",
                    nothing: "nothing retried",
                };
                if !consented(&mut client, &filter, &consent, &act, json).await? {
                    return Ok(());
                }
            }
            show!(
                "RetryJobsResponse",
                client
                    .retry_jobs(v1::RetryJobsRequest {
                        filter: job_ids.is_empty().then_some(filter),
                        job_ids,
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner(),
                |r: &v1::RetryJobsResponse| {
                    println!("{} job(s) queued again", r.retried_job_ids.len());
                    for id in &r.retried_job_ids {
                        println!("{id}");
                    }
                    print_skipped(&r.skipped);
                }
            )
        }
        AdminCommand::Forget {
            job_ids,
            filter,
            consent,
        } => {
            let filter = filter.request(BY_FILTER, String::new());
            if job_ids.is_empty() {
                let act = Act {
                    verb: "forget",
                    done: "would leave the failed list (rows kept)",
                    nothing: "nothing forgotten",
                };
                if !consented(&mut client, &filter, &consent, &act, json).await? {
                    return Ok(());
                }
            }
            show!(
                "ForgetFailedJobsResponse",
                client
                    .forget_failed_jobs(v1::ForgetFailedJobsRequest {
                        filter: job_ids.is_empty().then_some(filter),
                        job_ids,
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner(),
                |r: &v1::ForgetFailedJobsResponse| {
                    println!("{} failed job(s) forgotten", r.forgotten);
                    print_skipped(&r.skipped);
                }
            )
        }
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
        AdminCommand::Audit {
            filter,
            page_token,
            limit,
        } => show!(
            "ListAuditEventsResponse",
            client
                .list_audit_events(filter.request(limit, page_token))
                .await
                .map_err(status_error)?
                .into_inner(),
            print_audit
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

/// The ids a retry or forget left alone, one line each with the reason.
fn print_skipped(skipped: &[v1::SkippedJob]) {
    for s in skipped {
        println!("skipped {}: {}", s.job_id, s.reason);
    }
}

/// What a retry or forget by filter does, for its question and its dry run.
struct Act {
    /// `retry`, `forget`.
    verb: &'static str,
    /// What happens to the jobs, for the dry run: `would be queued again`.
    done: &'static str,
    /// What a refusal leaves: `nothing retried`.
    nothing: &'static str,
}

/// Whether a retry or forget of every failed job matching `filter` goes ahead: at once with
/// `--yes`; never with `--dry-run`, which prints how many jobs it would touch and when they
/// failed (listed with ListFailedJobs and the same filter and bound as the server's); else
/// after a question on the terminal.
///
/// Errors: no terminal and no `--yes`, a declined question, or the listing's status.
async fn consented(
    client: &mut QueueAdminServiceClient<Channel>,
    filter: &v1::ListFailedJobsRequest,
    consent: &Consent,
    act: &Act,
    json: bool,
) -> anyhow::Result<bool> {
    let answer = consent.answer(&format!(
        "{} every failed job matching the filter",
        act.verb
    ))?;
    if answer == Answer::Given {
        return Ok(true);
    }
    let listed = client
        .list_failed_jobs(filter.clone())
        .await
        .map_err(status_error)?
        .into_inner();
    let summary = failed_summary(&listed);
    match answer {
        Answer::DryRun if json => super::print_json("llmjobs.v1.ListFailedJobsResponse", &listed)?,
        Answer::DryRun => println!("{summary} {}; nothing changed (--dry-run)", act.done),
        // Nothing to ask about: the call goes ahead and says that it touched nothing.
        _ if listed.failed_jobs.is_empty() => return Ok(true),
        _ => {
            Consent::ask(
                &format!("{} {summary}?", capitalised(act.verb)),
                act.nothing,
            )?;
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether to purge `queue`: `--yes`, or a person at a terminal who agreed after seeing how
/// many pending jobs it would cancel; `--dry-run` prints that count and purges nothing.
/// Errors: no terminal and no `--yes` (see [`Consent::answer`]), a refused answer, the RPC's.
async fn purge_consented(
    client: &mut QueueAdminServiceClient<Channel>,
    queue: &str,
    consent: &Consent,
) -> anyhow::Result<bool> {
    let answer = consent.answer(&format!("purge {queue}"))?;
    if answer == Answer::Given {
        return Ok(true);
    }
    let stats = client
        .get_queue_stats(v1::GetQueueStatsRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    // An unknown queue: the purge itself answers NOT_FOUND.
    let Some(pending) = stats
        .queues
        .iter()
        .find(|q| q.name == queue)
        .map(|q| q.pending)
    else {
        return Ok(answer != Answer::DryRun);
    };
    match answer {
        Answer::DryRun => {
            println!(
                "{queue}: {pending} pending job(s) would be cancelled; nothing changed (--dry-run)"
            );
            Ok(false)
        }
        _ if pending == 0 => Ok(true),
        _ => {
            Consent::ask(
                &format!("Cancel the {pending} pending job(s) of {queue}?"),
                "nothing cancelled",
            )?;
            Ok(true)
        }
    }
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// `3 failed job(s) (failed between A and B)`, noting when more match than one call takes.
fn failed_summary(r: &v1::ListFailedJobsResponse) -> String {
    let times: Vec<_> = r
        .failed_jobs
        .iter()
        .filter_map(|f| f.failed_time.as_ref())
        .filter_map(crate::api::convert::datetime)
        .collect();
    let mut notes = Vec::new();
    if let (Some(o), Some(n)) = (times.iter().min(), times.iter().max()) {
        notes.push(format!(
            "failed between {} and {}",
            o.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            n.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    if !r.next_page_token.is_empty() {
        notes.push("the newest of more: run it again for the rest".to_owned());
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join("; "))
    };
    format!("{} failed job(s){notes}", r.failed_jobs.len())
}
