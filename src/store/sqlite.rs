//! [`Store`](super::Store) on a SQLite file through diesel: the embedded mode's store (first
//! runs, development, demos, single-node installs), with its own migrations under
//! `migrations/sqlite/`. One file per interface: [`jobs`], [`attempts`], [`history`],
//! [`batches`], [`keys`], [`audit`] and [`reports`].
//!
//! One connection serves every call, one at a time, on tokio's blocking threads: SQLite
//! allows one writer anyway, and a statement here takes microseconds. The file is in WAL mode
//! with `synchronous = NORMAL`: a committed transaction survives the process being killed
//! (SIGKILL); the last ones may be lost with the machine's power. Other processes (the `keys`
//! and `cleanup` commands) may use the file meanwhile: writers wait up to 5 s for each other.

mod attempts;
mod audit;
mod batches;
mod commit;
mod copy;
mod fixed;
mod history;
mod jobs;
mod keys;
mod reports;
mod rows;
pub mod schema;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use diesel::{
    Connection, OptionalExtension, RunQueryDsl, SelectableHelper, SqliteConnection,
    connection::SimpleConnection,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use self::rows::{JobRow, NewJobRow};
use super::Error;
use crate::job::{JobId, NewJob};

pub use copy::{Copied, copy_to_postgres};

/// The migrations under `migrations/sqlite/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// How long a writer waits for another process's write to end before failing (ms).
const BUSY_TIMEOUT_MS: u32 = 5_000;

/// The SQLite store. Clones share the connection.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<tokio::sync::Mutex<SqliteConnection>>,
    /// Applies writes in batches (group commit) through `conn`.
    committer: commit::Committer,
}

/// Creates the file at `path`, when missing, readable and writable by its owner only (0600):
/// it holds prompts, results and key hashes. SQLite creates the `-wal`, `-shm` and
/// `-journal` files beside it with the same permissions. An existing file keeps its mode
/// (with a warning when others may read it).
fn create_private(path: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let meta = std::fs::metadata(path).ok();
                if meta.as_ref().is_some_and(std::fs::Metadata::is_dir) {
                    return Err(Error::Unavailable(format!(
                        "the SQLite store's path {} is a directory; name a file (e.g. {})",
                        path.display(),
                        path.join("llm-jobs.db").display()
                    )));
                }
                if let Some(meta) = meta
                    && meta.permissions().mode() & 0o077 != 0
                {
                    tracing::warn!(
                        path = %path.display(),
                        mode = format!("{:o}", meta.permissions().mode() & 0o777),
                        "the SQLite store is readable by other users; `chmod 600` it (and its \
                         -wal and -shm files)"
                    );
                }
            }
            Err(e) => {
                return Err(Error::Unavailable(format!(
                    "cannot create SQLite file {}: {e}",
                    path.display()
                )));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Opens (creating when missing, see [`create_private`]) the file at `path` with the store's
/// settings.
fn connect(path: &Path) -> Result<SqliteConnection, Error> {
    let name = path
        .to_str()
        .ok_or_else(|| Error::Unavailable(format!("SQLite path {path:?} is not UTF-8")))?;
    create_private(path)?;
    let mut conn = SqliteConnection::establish(name)
        .map_err(|e| Error::Unavailable(format!("cannot open SQLite file {name}: {e}")))?;
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}; PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;"
    ))
    .map_err(|e| Error::Unavailable(format!("cannot set up SQLite file {name}: {e}")))?;
    Ok(conn)
}

/// Creates the file at `path` when missing and applies pending migrations; returns the
/// versions applied. Errors: [`Error::Unavailable`], [`Error::Migration`].
pub async fn migrate(path: &Path) -> Result<Vec<String>, Error> {
    let path: PathBuf = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn = connect(&path)?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| Error::Migration(e.to_string()))?;
        Ok(applied.iter().map(|v| v.to_string()).collect())
    })
    .await
    .map_err(|e| Error::Migration(format!("migration task failed: {e}")))?
}

impl SqliteStore {
    /// Opens the file at `path` (created when missing; migrations are [`migrate`]'s job).
    ///
    /// Errors: [`Error::Unavailable`] when the file cannot be opened or set up.
    pub async fn open(path: &Path) -> Result<SqliteStore, Error> {
        let path = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || connect(&path))
            .await
            .map_err(|e| Error::Unavailable(format!("SQLite open task failed: {e}")))??;
        let conn = Arc::new(tokio::sync::Mutex::new(conn));
        Ok(SqliteStore {
            committer: commit::Committer::start(conn.clone()),
            conn,
        })
    }

    /// Runs `f` on the connection on a blocking thread, after the calls before it.
    async fn run<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T, Error> + Send + 'static,
    {
        let mut conn = self.conn.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || f(&mut conn))
            .await
            .map_err(|e| Error::Unavailable(format!("SQLite task failed: {e}")))?
    }

    /// Runs `f` as one write of the next group commit ([`commit`]): in a savepoint of an
    /// `IMMEDIATE` transaction (which takes the write lock at once, so it never has to give up
    /// half-way for another process's write), answered once that transaction commits.
    async fn write<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnMut(&mut SqliteConnection) -> Result<T, Error> + Send + 'static,
    {
        self.committer.write(f).await
    }
}

fn to_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// The job `id` as stored.
fn key(id: JobId) -> String {
    id.to_string()
}

/// Inserts a job (in batch `batch` when given); `None` when its idempotency key is taken.
fn insert_row(
    conn: &mut SqliteConnection,
    job: &NewJob,
    batch: Option<uuid::Uuid>,
) -> Result<Option<JobRow>, Error> {
    Ok(diesel::insert_into(schema::jobs::table)
        .values(NewJobRow::from_new(job, batch, chrono::Utc::now()))
        .on_conflict_do_nothing()
        .returning(JobRow::as_returning())
        .get_result(conn)
        .optional()?)
}
