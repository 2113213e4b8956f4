//! The `llm-jobs` command line: server commands (`serve`, `gateway`, `worker`, `migrate`) and
//! client commands that talk to a running server over gRPC (`submit`, `watch`, `status`,
//! `result`, `cancel`) and operator commands (`admin …`).

pub mod admin;
pub mod client;
pub mod tools;

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
    Migrate(crate::config::Postgres),
    /// Submit a job (and with --stream, print its tokens as they arrive).
    Submit(client::SubmitArgs),
    /// Follow a job's events, printing its text as it arrives.
    Watch(client::WatchArgs),
    /// Print a job's status.
    Status(client::JobArgs),
    /// Print a finished job's result.
    Result(client::JobArgs),
    /// Cancel a job.
    Cancel(client::JobArgs),
    /// List the newest jobs (filters: --status, --job-type, --tag).
    Jobs(client::ListArgs),
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
