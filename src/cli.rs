//! The `llm-jobs` command line: server commands (`serve`, `gateway`, `worker`, `migrate`) and
//! client commands that talk to a running server over gRPC (`submit`, `watch`, `status`,
//! `result`, `cancel`, `batch …`), operator commands (`admin …`) and API keys (`keys …`, on the
//! database).

pub mod admin;
pub mod batch;
pub mod cleanup;
pub mod client;
pub mod confirm;
pub mod keys;
pub mod style;
pub mod tools;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app;

/// Background LLM generation jobs with live token streaming over gRPC.
#[derive(Parser, Debug)]
#[command(name = "llm-jobs", version, about, args_override_self = true)]
pub struct Cli {
    /// How log lines are written to stderr: `text`, or `json` (one object per line, with
    /// `trace_id` and `span_id` inside a request or an attempt).
    #[arg(
        long,
        global = true,
        env = "LLMJOBS_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub log_format: crate::telemetry::LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway (gRPC API) and a worker in one process.
    Serve(ServeArgs),
    /// Run only the gateway (needs REDIS_URL).
    Gateway(GatewayArgs),
    /// Run only a worker (needs REDIS_URL).
    Worker(WorkerArgs),
    /// Create the database if needed and apply pending migrations.
    Migrate(crate::config::Database),
    /// API keys on the database: create (printed once), list, revoke.
    Keys(keys::KeysArgs),
    /// Delete jobs that ended long ago, with their results and history, in batches.
    Cleanup(cleanup::CleanupArgs),
    /// Copy an embedded (SQLite) store into an empty Postgres database: jobs, results,
    /// history, batches, API keys and the audit log (moving to Redis + Postgres).
    CopyStore(CopyStoreArgs),
    /// Submit a job (and with --stream, print its tokens as they arrive).
    Submit(client::SubmitArgs),
    /// Follow a job's events, printing its text as it arrives (exit code 1 when the job
    /// failed or was cancelled, as for `result`).
    Watch(client::WatchArgs),
    /// Print a job's status.
    Status(client::JobArgs),
    /// Print a finished job's result (exit code 1 when it failed or was cancelled).
    Result(client::JobArgs),
    /// Print a job's progress: stage, tokens against the estimate, speed, ETA (--history:
    /// its stored stage changes and milestones).
    Progress(client::ProgressArgs),
    /// Cancel a job.
    Cancel(client::CancelArgs),
    /// List the newest jobs (filters: --status, --job-type, --tag).
    Jobs(client::ListArgs),
    /// Batches of jobs: submit a JSONL file, watch with a progress bar, get, cancel.
    Batch(batch::BatchArgs),
    /// Operate the queues: stats, workload, workers, performance, health, pause, resume,
    /// toggle, purge, failed, retry, forget.
    Admin(admin::AdminArgs),
    /// A live terminal dashboard (queues, workload, workers, health).
    Monitor(tools::MonitorArgs),
    /// Run one scenario per default job type and stream each live.
    Demo(tools::DemoArgs),
    /// Submit and stream many jobs; report jobs/s, time to first token and inter-token
    /// latency percentiles, tokens/s and errors.
    LoadTest(tools::LoadTestArgs),
}

/// `serve` arguments: every setting of both sides.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: app::Common,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub gateway: app::GatewayConfig,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub worker: app::WorkerConfig,
}

/// `gateway` arguments: no worker settings.
#[derive(clap::Args, Clone, Debug)]
pub struct GatewayArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: app::Common,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub gateway: app::GatewayConfig,
}

/// `worker` arguments: no listener, client or submit settings.
#[derive(clap::Args, Clone, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: app::Common,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub worker: app::WorkerConfig,
}

impl From<ServeArgs> for app::Config {
    fn from(a: ServeArgs) -> app::Config {
        app::Config {
            common: a.common,
            gateway: Some(a.gateway),
            worker: Some(a.worker),
        }
    }
}

impl From<GatewayArgs> for app::Config {
    fn from(a: GatewayArgs) -> app::Config {
        app::Config {
            common: a.common,
            gateway: Some(a.gateway),
            worker: None,
        }
    }
}

impl From<WorkerArgs> for app::Config {
    fn from(a: WorkerArgs) -> app::Config {
        app::Config {
            common: a.common,
            gateway: None,
            worker: Some(a.worker),
        }
    }
}

/// `copy-store` arguments.
#[derive(clap::Args, Debug)]
pub struct CopyStoreArgs {
    /// The embedded store to copy from (no server may be using it).
    #[arg(
        long = "sqlite-path",
        env = "LLMJOBS_SQLITE_PATH",
        default_value = "llm-jobs.db"
    )]
    pub from: std::path::PathBuf,
    /// The Postgres database to copy into (`postgres://…`): created and migrated when
    /// needed, and it must hold no job, API key or audit event yet.
    #[arg(long = "to")]
    pub to: String,
}

/// The descriptors compiled into the binary, decoded once (`watch --json` prints one
/// message per event).
pub(crate) static DESCRIPTORS: std::sync::LazyLock<prost_reflect::DescriptorPool> =
    std::sync::LazyLock::new(|| {
        prost_reflect::DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set compiled into the binary decodes")
    });

/// `message` (of protobuf type `full_name`) as canonical protobuf JSON, every field present:
/// indented (`pretty`) or on one line (JSON lines).
pub(crate) fn to_json<M: prost::Message>(
    full_name: &str,
    message: &M,
    pretty: bool,
) -> anyhow::Result<String> {
    let descriptor = DESCRIPTORS
        .get_message_by_name(full_name)
        .with_context(|| format!("no descriptor for {full_name}"))?;
    let dynamic =
        prost_reflect::DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())?;
    let options = prost_reflect::SerializeOptions::new().skip_default_fields(false);
    let mut out = Vec::new();
    if pretty {
        dynamic.serialize_with_options(&mut serde_json::Serializer::pretty(&mut out), &options)?;
    } else {
        dynamic.serialize_with_options(&mut serde_json::Serializer::new(&mut out), &options)?;
    }
    Ok(String::from_utf8(out)?)
}

/// Prints `message` (of protobuf type `full_name`) as indented canonical protobuf JSON.
pub(crate) fn print_json<M: prost::Message>(full_name: &str, message: &M) -> anyhow::Result<()> {
    println!("{}", to_json(full_name, message, true)?);
    Ok(())
}

/// Prints `message` as canonical protobuf JSON on one line (one of a stream's JSON lines).
pub(crate) fn print_json_line<M: prost::Message>(
    full_name: &str,
    message: &M,
) -> anyhow::Result<()> {
    println!("{}", to_json(full_name, message, false)?);
    Ok(())
}

/// A list filter's value (`--job-type`, `--tag`, `--queue`, `--tenant` …): one that is empty or
/// only spaces would match nothing (or, sent as the empty string, everything), so it is refused
/// at parse time (exit 2, naming the flag); leaving the flag out means "any".
pub(crate) fn parse_filter(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("an empty filter is refused: leave the flag out to match any".to_owned());
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
