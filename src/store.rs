//! The durable store: the source of truth for a job's existence and final state.
//!
//! One interface per aggregate: [`JobStore`] (jobs), [`AttemptStore`] (their attempts),
//! [`HistoryStore`] (progress histories and event logs), [`BatchStore`], [`KeyStore`],
//! [`AuditStore`] and [`ReportStore`] (the operators' views); [`Store`] is all of them, the
//! interface the gateway and the worker hold. [`postgres`] implements them with diesel-async
//! for production; [`sqlite`] with diesel on a SQLite file for the embedded mode (first runs,
//! development, single-node installs), one file per interface in each. [`open`] picks one
//! from the configuration. Every state change that must happen once (start of an attempt,
//! the final status) is a conditional update, so a stale worker cannot overwrite a newer
//! attempt.

mod attempts;
pub mod audit;
mod batches;
mod history;
mod jobs;
mod keys;
pub mod models;
pub mod postgres;
mod reports;
pub mod schema;
pub mod single;
pub mod sqlite;

use std::{path::PathBuf, sync::Arc};

pub use attempts::{AttemptStore, Finish};
pub use audit::AuditStore;
pub use batches::{BatchStore, InsertedBatch};
pub use history::HistoryStore;
pub use jobs::{Deletable, Inserted, JobStore, StoredResult};
pub use keys::KeyStore;
pub use reports::{FailedFilter, GroupBy, JobFilter, Performance, QueueFigures, ReportStore};

/// Which database holds the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A Postgres URL.
    Postgres(String),
    /// A SQLite file.
    Sqlite(PathBuf),
}

impl Location {
    /// The database `url` names: Postgres for `postgres://…` or `postgresql://…`, a SQLite
    /// file for `sqlite://PATH` or `sqlite:PATH`, and the file at `sqlite_path` when `url` is
    /// empty.
    ///
    /// Errors: a URL of another scheme (the message names `DATABASE_URL` and the schemes
    /// understood), or `sqlite://` without a path.
    pub fn parse(url: &str, sqlite_path: &std::path::Path) -> Result<Location, String> {
        let url = url.trim();
        if url.is_empty() {
            return Ok(Location::Sqlite(sqlite_path.to_owned()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Location::Postgres(url.to_owned()));
        }
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err("DATABASE_URL: `sqlite://` needs a file path".into());
            }
            return Ok(Location::Sqlite(PathBuf::from(path)));
        }
        Err(format!(
            "DATABASE_URL must start with postgres://, postgresql:// or sqlite:// (or be empty \
             for a SQLite file at --sqlite-path); got {:?}",
            url.split("://").next().unwrap_or_default()
        ))
    }
}

/// What opening the store needs (built from `config::Database`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// `DATABASE_URL`: see [`Location::parse`].
    pub url: String,
    /// The SQLite file used when `url` is empty.
    pub sqlite_path: PathBuf,
    /// Pooled connections (Postgres; SQLite uses one connection).
    pub pool_size: usize,
}

impl Settings {
    /// The database these settings name ([`Location::parse`]).
    pub fn location(&self) -> Result<Location, String> {
        Location::parse(&self.url, &self.sqlite_path)
    }
}

/// Opens the configured store: a Postgres pool (connections open lazily, so this succeeds
/// while Postgres is down) or the SQLite file (created when missing).
///
/// Errors: [`Error::Unavailable`] for a bad `DATABASE_URL` or a SQLite file that cannot be
/// opened.
pub async fn open(cfg: impl Into<Settings>) -> Result<Arc<dyn Store>, Error> {
    let cfg = cfg.into();
    Ok(match cfg.location().map_err(Error::Unavailable)? {
        Location::Postgres(url) => Arc::new(postgres::PgStore::new(&url, cfg.pool_size)?),
        Location::Sqlite(path) => Arc::new(sqlite::SqliteStore::open(&path).await?),
    })
}

/// Creates the database when it is missing and applies pending migrations (those under
/// `migrations/postgres/` or `migrations/sqlite/`); returns the versions applied.
///
/// Errors: [`Error::Unavailable`], [`Error::Migration`].
pub async fn migrate(cfg: impl Into<Settings>) -> Result<Vec<String>, Error> {
    match cfg.into().location().map_err(Error::Unavailable)? {
        Location::Postgres(url) => {
            postgres::ensure_database(&url).await?;
            postgres::migrate(&url).await
        }
        Location::Sqlite(path) => sqlite::migrate(&path).await,
    }
}

/// The configured store for logs and errors: `Postgres at postgres://u:***@h/db` or
/// `SQLite at llm-jobs.db` (passwords masked).
pub fn describe(cfg: impl Into<Settings>) -> String {
    match cfg.into().location() {
        Ok(Location::Postgres(url)) => {
            format!("Postgres at {}", crate::redact::redact_url(&url))
        }
        Ok(Location::Sqlite(path)) => format!("SQLite at {}", path.display()),
        Err(e) => e,
    }
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection could be had (pool timeout, connection refused, server gone).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// Stored data does not decode (a bug or a manual edit).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// Migrations could not be applied.
    #[error("migrations failed: {0}")]
    Migration(String),
    /// Another server with an in-process queue uses this store ([`single`]).
    #[error("{0}")]
    InUse(String),
    /// Refused as asked: e.g. copying into a store that already holds data.
    #[error("{0}")]
    Refused(String),
}

/// How SQLite ("database or disk is full") and Postgres ("could not extend file …: No space
/// left on device") report a full disk: a message, not an error kind.
const OUT_OF_SPACE: [&str; 2] = ["disk is full", "No space left on device"];

impl Error {
    /// True when the same write may succeed later: the database is down, restarting, or the
    /// connection was cut. Constraint violations and decoding errors are permanent.
    pub fn is_transient(&self) -> bool {
        use diesel::result::{DatabaseErrorKind as K, Error as D};
        if self.is_unavailable() {
            return true;
        }
        match self {
            Error::Query(D::DatabaseError(
                K::UniqueViolation
                | K::ForeignKeyViolation
                | K::NotNullViolation
                | K::CheckViolation
                | K::RestrictViolation,
                _,
            )) => false,
            Error::Query(D::DatabaseError(K::ClosedConnection | K::SerializationFailure, _))
            | Error::Query(D::BrokenTransactionManager) => true,
            // Postgres reports a killed or restarting backend with a message, not a kind; SQLite
            // reports another process holding the write lock past the busy timeout the same way.
            Error::Query(D::DatabaseError(_, info)) => {
                let m = info.message();
                [
                    "terminating connection",
                    "connection",
                    "shutting down",
                    "starting up",
                    "database is locked",
                ]
                .iter()
                .any(|s| m.contains(s))
            }
            _ => false,
        }
    }

    /// True when retrying later may succeed (the database is down, overloaded, or out of
    /// disk space).
    pub fn is_unavailable(&self) -> bool {
        use diesel::result::{DatabaseErrorKind as K, Error as D};
        match self {
            Error::Unavailable(_) | Error::Query(D::DatabaseError(K::ClosedConnection, _)) => true,
            Error::Query(D::DatabaseError(_, info)) => {
                OUT_OF_SPACE.iter().any(|s| info.message().contains(s))
            }
            _ => false,
        }
    }
}

/// The whole durable store: every aggregate's interface, for the callers that use several.
/// A backend implements each one; this trait follows from them.
pub trait Store:
    JobStore + AttemptStore + HistoryStore + BatchStore + KeyStore + AuditStore + ReportStore
{
}

impl<T> Store for T where
    T: JobStore + AttemptStore + HistoryStore + BatchStore + KeyStore + AuditStore + ReportStore
{
}

#[cfg(test)]
mod tests;
