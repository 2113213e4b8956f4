//! One server with an in-process queue per store. Such a server re-enqueues every job its
//! store has unfinished and its own queue does not know (at start, and in every reconciler
//! pass), so a second one on the same store would run the first one's jobs again. The first
//! to start claims the store; a second refuses to start.
//!
//! On SQLite the claim is the operating system's lock (`flock`) on `PATH.lock` beside the
//! file; on Postgres, a session advisory lock held by a connection kept for the purpose. Both
//! end with the process, however it ends. (A Postgres restart ends the advisory lock too;
//! it is not taken again until the server restarts.)

use std::path::Path;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::Error;
use crate::config::StoreLocation;

/// Key of the advisory lock ("llm-jobs" in ASCII, plus one: the migration lock is the key
/// itself).
const EMBEDDED_LOCK: i64 = 0x6c6c_6d2d_6a6f_6274;

/// Holds a store's claim until dropped.
pub enum Claim {
    /// The locked `PATH.lock` file of a SQLite store.
    File(std::fs::File),
    /// The connection holding the Postgres advisory lock.
    Postgres(Box<AsyncPgConnection>),
}

/// Claims the store at `location` for this process.
///
/// Errors: [`Error::InUse`] when another process holds it; [`Error::Unavailable`] when the
/// lock cannot be taken (lock file not creatable, Postgres unreachable).
pub async fn claim(location: &StoreLocation) -> Result<Claim, Error> {
    match location {
        StoreLocation::Sqlite(path) => claim_file(path).map(Claim::File),
        StoreLocation::Postgres(url) => {
            let mut conn = AsyncPgConnection::establish(url)
                .await
                .map_err(|e| Error::Unavailable(e.to_string()))?;
            #[derive(diesel::QueryableByName)]
            struct Locked {
                #[diesel(sql_type = diesel::sql_types::Bool)]
                locked: bool,
            }
            let row: Locked = diesel::sql_query(format!(
                "SELECT pg_try_advisory_lock({EMBEDDED_LOCK}) AS locked"
            ))
            .get_result(&mut conn)
            .await?;
            if !row.locked {
                return Err(Error::InUse(
                    "another llm-jobs server with an in-process queue is using this Postgres \
                     database: one such server per store (set REDIS_URL to run several)"
                        .into(),
                ));
            }
            Ok(Claim::Postgres(Box::new(conn)))
        }
    }
}

fn claim_file(path: &Path) -> Result<std::fs::File, Error> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .map_err(|e| {
            Error::Unavailable(format!(
                "cannot create the lock file {}: {e}",
                Path::new(&name).display()
            ))
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::InUse(format!(
            "another llm-jobs server with an in-process queue is using {}: one such server \
             per store (set REDIS_URL to run several)",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::Unavailable(format!(
            "cannot lock {}: {e}",
            Path::new(&name).display()
        ))),
    }
}
