//! The `llm-jobs` command line: server commands (`serve`, `gateway`, `worker`, `migrate`) and
//! client commands that talk to a running server over gRPC (`submit`, `watch`, `status`,
//! `result`, `cancel`, `batch …`), operator commands (`admin …`) and API keys (`keys …`, on the
//! database).

pub mod admin;
pub mod batch;
pub mod client;
pub mod keys;
pub mod tools;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app;

/// Background LLM generation jobs with live token streaming over gRPC.
#[derive(Parser, Debug)]
#[command(name = "llm-jobs", version, about, args_override_self = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway (gRPC API) and a worker in one process.
    Serve(app::Config),
    /// Run only the gateway.
    Gateway(app::Config),
    /// Run only a worker.
    Worker(app::Config),
    /// Create the database if needed and apply pending migrations.
    Migrate(crate::config::Database),
    /// API keys on the database: create (printed once), list, revoke.
    Keys(keys::KeysArgs),
    /// Delete jobs that ended long ago, with their results and history, in batches.
    Cleanup(CleanupArgs),
    /// Copy an embedded (SQLite) store into an empty Postgres database: jobs, results,
    /// history, batches, API keys and the audit log (moving to Redis + Postgres).
    CopyStore(CopyStoreArgs),
    /// Submit a job (and with --stream, print its tokens as they arrive).
    Submit(client::SubmitArgs),
    /// Follow a job's events, printing its text as it arrives.
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

/// `cleanup` arguments.
#[derive(clap::Args, Debug)]
pub struct CleanupArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub database: crate::config::Database,
    /// Age of the jobs to delete, e.g. `30d`, `12h`, `90m` (by when they ended); more than
    /// zero.
    #[arg(long = "older-than", value_parser = parse_age)]
    pub older_than: std::time::Duration,
    /// Jobs deleted per statement.
    #[arg(long, default_value_t = 1000)]
    pub batch: i64,
}

/// `30d`, `12h`, `90m`, `45s` as a duration; zero is refused, since an age of zero would
/// delete every job that has ended (refused at parse time, as other zeros that cannot be
/// meant are: exit 2, naming the flag).
fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("expected a number and a unit (d, h, m, s), got {s:?}"))?;
    let unit_secs: u64 = match unit {
        "d" => 86_400,
        "h" => 3600,
        "m" => 60,
        "s" | "" => 1,
        other => return Err(format!("unknown unit {other:?}: use d, h, m or s")),
    };
    if n == 0 {
        return Err(format!(
            "{s:?} would delete every job that has ended: give an age above zero, e.g. 30d"
        ));
    }
    // Ages beyond a hundred thousand years are typos (and would overflow the date arithmetic).
    n.checked_mul(unit_secs)
        .filter(|secs| *secs <= 100_000 * 365 * 86_400)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long ago (at most 100000 years)"))
}

/// Prints `message` (of protobuf type `full_name`) as canonical protobuf JSON, using the
/// descriptors compiled into the binary.
pub(crate) fn print_json<M: prost::Message>(full_name: &str, message: &M) -> anyhow::Result<()> {
    let pool = prost_reflect::DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET)?;
    let descriptor = pool
        .get_message_by_name(full_name)
        .with_context(|| format!("no descriptor for {full_name}"))?;
    let dynamic =
        prost_reflect::DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())?;
    let options = prost_reflect::SerializeOptions::new().skip_default_fields(false);
    let mut out = serde_json::Serializer::pretty(Vec::new());
    dynamic.serialize_with_options(&mut out, &options)?;
    println!("{}", String::from_utf8_lossy(&out.into_inner()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn ages_parse() {
        assert_eq!(
            super::parse_age("30d"),
            Ok(std::time::Duration::from_secs(30 * 86_400))
        );
        assert_eq!(
            super::parse_age("90m"),
            Ok(std::time::Duration::from_secs(5400))
        );
        assert!(super::parse_age("3 weeks").is_err());
        // Zero in any unit would delete every ended job.
        for zero in ["0", "0s", "0m", "0h", "0d", "000d"] {
            assert!(super::parse_age(zero).is_err(), "{zero}");
        }
        assert_eq!(
            super::parse_age("1s"),
            Ok(std::time::Duration::from_secs(1))
        );
        // Overflowing ages are refused, not wrapped into a recent date.
        assert!(super::parse_age("213503982334602d").is_err());
        assert!(super::parse_age("99999999999999999999s").is_err());
    }

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
