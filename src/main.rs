//! The `llm-jobs` binary: parse the command line, start telemetry, dispatch, map failure to an
//! exit code (1 for errors, 2 for bad usage via clap).

use clap::Parser;
use llm_jobs::{
    app::{self, Roles},
    cli::{Cli, Command, client},
    shutdown, telemetry,
};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    quiet_on_closed_stdout();
    // The upstream HTTP client uses rustls; it needs one process-wide crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _telemetry = match telemetry::init() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match run(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", client::error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// `llm-jobs admin stats | head` closes stdout early; Rust's `println!` then panics with a
/// broken pipe (Rust ignores SIGPIPE). Exit quietly instead, as Unix tools do.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

async fn run(command: Command) -> anyhow::Result<()> {
    let serve = |cfg, roles| async move {
        app::run(cfg, roles, app::Listeners::default(), shutdown::on_signal()).await?;
        Ok(())
    };
    match command {
        Command::Serve(cfg) => {
            serve(
                cfg,
                Roles {
                    gateway: true,
                    worker: true,
                },
            )
            .await
        }
        Command::Gateway(cfg) => {
            serve(
                cfg,
                Roles {
                    gateway: true,
                    worker: false,
                },
            )
            .await
        }
        Command::Worker(cfg) => {
            serve(
                cfg,
                Roles {
                    gateway: false,
                    worker: true,
                },
            )
            .await
        }
        Command::Migrate(cfg) => {
            let applied = app::migrate(&cfg).await?;
            println!("applied {} migration(s)", applied.len());
            Ok(())
        }
        Command::Cleanup(a) => {
            let store = llm_jobs::store::open(&a.database).await?;
            let before = chrono::Utc::now() - chrono::Duration::from_std(a.older_than)?;
            let mut total = 0;
            loop {
                let n = store.delete_finished(before, a.batch.max(1)).await?;
                total += n;
                if n == 0 {
                    break;
                }
                eprintln!("deleted {total} job(s) so far");
            }
            println!(
                "deleted {total} job(s) that ended before {before} (with their results and history)"
            );
            Ok(())
        }
        Command::CopyStore(a) => {
            anyhow::ensure!(
                a.from.exists(),
                "no SQLite store at {} (--sqlite-path)",
                a.from.display()
            );
            let target = llm_jobs::config::Database {
                url: a.to.clone(),
                sqlite_path: Default::default(),
                pool_size: 1,
                no_migrate: false,
            };
            anyhow::ensure!(
                matches!(
                    target.location(),
                    Ok(llm_jobs::config::StoreLocation::Postgres(_))
                ),
                "--to must be a Postgres URL (postgres://…)"
            );
            let c = llm_jobs::store::sqlite::copy_to_postgres(&a.from, &a.to).await?;
            println!(
                "copied {} job(s) ({} result(s), {} attempt error(s), {} progress event(s), \
                 {} event log(s)), {} batch(es), {} API key(s), {} audit event(s) from {} to {}",
                c.jobs,
                c.results,
                c.attempt_failures,
                c.progress_events,
                c.event_logs,
                c.batches,
                c.api_keys,
                c.audit_events,
                a.from.display(),
                llm_jobs::store::describe(&target)
            );
            Ok(())
        }
        Command::Keys(a) => llm_jobs::cli::keys::run(a).await,
        Command::Submit(a) => client::submit(a).await,
        Command::Watch(a) => client::watch(a).await,
        Command::Status(a) => client::status(a).await,
        Command::Result(a) => client::result(a).await,
        Command::Progress(a) => client::progress(a).await,
        Command::Cancel(a) => client::cancel(a).await,
        Command::Jobs(a) => client::list(a).await,
        Command::Batch(a) => llm_jobs::cli::batch::run(a).await,
        Command::Admin(a) => llm_jobs::cli::admin::run(a).await,
        Command::Monitor(a) => llm_jobs::cli::tools::monitor(a).await,
        Command::Demo(a) => llm_jobs::cli::tools::demo(a).await,
        Command::LoadTest(a) => llm_jobs::cli::tools::load_test(a).await,
    }
}
