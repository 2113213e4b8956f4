//! One server with an in-process queue per store, and no other server beside it. Such a
//! server re-enqueues every job its store has unfinished and its own queue does not know (at
//! start, and in every reconciler pass), so any other server on the same store, embedded or
//! on Redis, would have its jobs run again (and theirs by it). Servers on Redis share a store
//! freely: their queue is shared too.
//!
//! So an in-process server claims its store exclusively, and a server on Redis claims it
//! shared: the first kind excludes every other server, the second only the first kind. On
//! SQLite the claim is the operating system's lock (`flock`) on `PATH.lock` beside the file
//! (the path with symbolic links resolved, so two names of one file are one store); on
//! Postgres, a session advisory lock held by a connection kept for the purpose. Both end with
//! the process, however it ends. (A Postgres restart ends the advisory lock too; it is not
//! taken again until the server restarts.)

use std::path::Path;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::{Error, Location};

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

/// How a server uses its store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// With an in-process queue: no other server may use the store.
    Exclusive,
    /// With the queue in Redis: other such servers may use the store too.
    Shared,
}

/// Claims the store at `location` for this process, in `mode`.
///
/// Errors: [`Error::InUse`] when another process's claim excludes this one;
/// [`Error::Unavailable`] when the lock cannot be taken (lock file not creatable, Postgres
/// unreachable).
pub async fn claim(location: &Location, mode: Mode) -> Result<Claim, Error> {
    match location {
        Location::Sqlite(path) => claim_file(path, mode).map(Claim::File),
        Location::Postgres(url) => {
            let mut conn = AsyncPgConnection::establish(url)
                .await
                .map_err(|e| Error::Unavailable(e.to_string()))?;
            #[derive(diesel::QueryableByName)]
            struct Locked {
                #[diesel(sql_type = diesel::sql_types::Bool)]
                locked: bool,
            }
            let function = match mode {
                Mode::Exclusive => "pg_try_advisory_lock",
                Mode::Shared => "pg_try_advisory_lock_shared",
            };
            let row: Locked =
                diesel::sql_query(format!("SELECT {function}({EMBEDDED_LOCK}) AS locked"))
                    .get_result(&mut conn)
                    .await?;
            if !row.locked {
                return Err(in_use(mode, "this Postgres database"));
            }
            Ok(Claim::Postgres(Box::new(conn)))
        }
    }
}

/// The refusal for a claim in `mode` on `store`.
fn in_use(mode: Mode, store: &str) -> Error {
    Error::InUse(match mode {
        Mode::Exclusive => format!(
            "another llm-jobs server is using {store}: a server with an in-process queue must \
             be the only one on its store (set REDIS_URL to run several)"
        ),
        Mode::Shared => format!(
            "a llm-jobs server with an in-process queue is using {store}: it must be the only \
             one on its store (give it REDIS_URL too, or stop it)"
        ),
    })
}

fn claim_file(path: &Path, mode: Mode) -> Result<std::fs::File, Error> {
    // Two names of one file (a symbolic link, `./x` and `x`) must meet at one lock.
    let path = &std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    // Owner only, like the store beside it.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&name).map_err(|e| {
        Error::Unavailable(format!(
            "cannot create the lock file {}: {e}",
            Path::new(&name).display()
        ))
    })?;
    let locked = match mode {
        Mode::Exclusive => file.try_lock(),
        Mode::Shared => file.try_lock_shared(),
    };
    match locked {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(in_use(mode, &path.display().to_string())),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::Unavailable(format!(
            "cannot lock {}: {e}",
            Path::new(&name).display()
        ))),
    }
}
