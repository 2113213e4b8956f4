//! The `llm-jobs` binary: parse the command line, start telemetry, dispatch, map failure to an
//! exit code (1 for errors, 2 for bad usage via clap).

use clap::Parser;
use llm_jobs::{
    app,
    cli::{Cli, Command, client, style},
    shutdown, telemetry,
};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    quiet_on_closed_stdout();
    // The upstream HTTP client uses rustls; it needs one process-wide crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _telemetry = match telemetry::init(&telemetry::Config::from_env(cli.log_format)) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match run(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            anstream::eprintln!(
                "{}: {}",
                style::paint(style::ERROR, "error"),
                client::error_chain(&e)
            );
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
    let serve = |cfg: app::Config| async move {
        app::run(cfg, app::Listeners::default(), shutdown::on_signal()).await?;
        Ok(())
    };
    match command {
        Command::Serve(a) => serve(a.into()).await,
        Command::Gateway(a) => serve(a.into()).await,
        Command::Worker(a) => serve(a.into()).await,
        Command::Migrate(cfg) => {
            let applied = app::migrate(&cfg).await?;
            println!("applied {} migration(s)", applied.len());
            Ok(())
        }
        Command::Cleanup(a) => llm_jobs::cli::cleanup::run(a).await,
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
