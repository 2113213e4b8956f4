//! Where the backends are: Redis ([`Redis`]: queue, leases, live event log; none: in process)
//! and the durable store ([`Database`]: Postgres or a SQLite file).
//!
//! Environment variables read here: `REDIS_URL`, `LLMJOBS_REDIS_PREFIX`,
//! `LLMJOBS_REDIS_POOL_SIZE`, `DATABASE_URL`, `LLMJOBS_SQLITE_PATH`,
//! `LLMJOBS_DATABASE_POOL_SIZE`, `LLMJOBS_NO_MIGRATE`.

use std::path::PathBuf;

/// Which database [`Database`] names (the store's own type, under the name callers know).
pub use crate::store::Location as StoreLocation;

/// Redis: queue, leases and the live event log (both sides).
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Redis")]
pub struct Redis {
    /// Redis URL (`redis://host:port/db`). Empty (the default): no Redis; queue, event log
    /// and rate limits run in this process (`serve` only).
    #[arg(
        id = "redis_url",
        long = "redis-url",
        env = "REDIS_URL",
        default_value = "",
        // Its password must not show in `--help`.
        hide_env_values = true
    )]
    pub url: String,
    /// Prefix of every key and channel, so several deployments (or tests) share one Redis.
    #[arg(
        id = "redis_prefix",
        long = "redis-prefix",
        env = "LLMJOBS_REDIS_PREFIX",
        default_value = "llmjobs"
    )]
    pub prefix: String,
    /// Pooled connections for commands (watchers share separate pub/sub connections).
    #[arg(
        id = "redis_pool_size",
        long = "redis-pool-size",
        env = "LLMJOBS_REDIS_POOL_SIZE",
        default_value_t = 32
    )]
    pub pool_size: usize,
}

impl Redis {
    /// True when no Redis is configured (an empty URL): the queue, the event log and the
    /// rate limits then run in process.
    pub fn in_process(&self) -> bool {
        self.url.trim().is_empty()
    }
}

impl From<&Redis> for crate::redis::Settings {
    fn from(cfg: &Redis) -> Self {
        crate::redis::Settings {
            url: cfg.url.clone(),
            prefix: cfg.prefix.clone(),
            pool_size: cfg.pool_size,
        }
    }
}

/// The durable store: Postgres, or a SQLite file when no Postgres URL is configured. The
/// location flags are global: `llm-jobs keys create --sqlite-path F …` works as well as
/// `llm-jobs keys --sqlite-path F create …`.
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Store")]
pub struct Database {
    /// Where the store is: `postgres://…` (or `postgresql://…`) for Postgres, whose database
    /// is created at start-up when it does not exist; `sqlite://PATH` (or `sqlite:PATH`) for a
    /// SQLite file. Empty (the default): a SQLite file at `--sqlite-path`.
    #[arg(
        id = "database_url",
        long = "database-url",
        env = "DATABASE_URL",
        default_value = "",
        global = true,
        // Its password must not show in `--help`.
        hide_env_values = true
    )]
    pub url: String,
    /// The SQLite file used when `DATABASE_URL` is empty (created when missing).
    #[arg(
        long = "sqlite-path",
        env = "LLMJOBS_SQLITE_PATH",
        default_value = "llm-jobs.db",
        global = true
    )]
    pub sqlite_path: PathBuf,
    /// Pooled connections (Postgres; SQLite uses one connection).
    #[arg(
        id = "database_pool_size",
        long = "database-pool-size",
        env = "LLMJOBS_DATABASE_POOL_SIZE",
        default_value_t = 16
    )]
    pub pool_size: usize,
    /// Do not apply pending migrations at start-up (run `llm-jobs migrate` instead).
    #[arg(
        long = "no-migrate",
        env = "LLMJOBS_NO_MIGRATE",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub no_migrate: bool,
}

impl Database {
    /// The database this configuration names ([`crate::store::Location::parse`]).
    ///
    /// Errors: a URL of another scheme (the message names `DATABASE_URL` and the schemes
    /// understood), or `sqlite://` without a path.
    pub fn location(&self) -> Result<StoreLocation, String> {
        StoreLocation::parse(&self.url, &self.sqlite_path)
    }

    /// For commands that work on an existing store (`cleanup`, `keys list`, `keys revoke`):
    /// a SQLite file that does not exist is an error, not a new empty store made where the
    /// command happened to run.
    ///
    /// Errors: the location is invalid ([`Database::location`]), or its SQLite file is missing
    /// (the message says where it looked and how to name another).
    pub fn require_existing(&self) -> Result<(), String> {
        match self.location()? {
            StoreLocation::Sqlite(path) if !path.exists() => Err(format!(
                "no store at {}: run this in the directory the server runs in, or name its \
                 database (--sqlite-path / LLMJOBS_SQLITE_PATH, --database-url / DATABASE_URL)",
                path.display()
            )),
            _ => Ok(()),
        }
    }
}

impl From<&Database> for crate::store::Settings {
    fn from(cfg: &Database) -> Self {
        crate::store::Settings {
            url: cfg.url.clone(),
            sqlite_path: cfg.sqlite_path.clone(),
            pool_size: cfg.pool_size,
        }
    }
}
