//! Finished jobs counted in a server's store directly (its `jobs` table, Postgres or SQLite),
//! so that waiting for a run to end costs the server nothing: its own connection, whose
//! backend and transactions the cost scenario leaves out of the server's figures.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::Context;
use diesel::{QueryableByName, sql_types::BigInt, sql_types::Integer};

use crate::server::{Store, postgres_url};

/// Completed and failed-or-cancelled jobs, in one statement both backends understand.
const FINISHED: &str = "SELECT count(*) FILTER (WHERE status = 'completed') AS completed, \
     count(*) FILTER (WHERE status IN ('failed', 'cancelled')) AS failed FROM jobs";

#[derive(QueryableByName)]
struct Finished {
    #[diesel(sql_type = BigInt)]
    completed: i64,
    #[diesel(sql_type = BigInt)]
    failed: i64,
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// A connection to a server's store that counts its finished jobs.
pub(crate) enum StoreCounter {
    /// On the server's Postgres database.
    Postgres {
        /// The connection.
        conn: Box<diesel_async::AsyncPgConnection>,
        /// Its backend's process id.
        pid: u32,
        /// Statements run on it (each one transaction).
        queries: u64,
    },
    /// On the server's SQLite file (WAL: reading does not block the server's writes).
    Sqlite(Arc<Mutex<diesel::SqliteConnection>>),
}

impl StoreCounter {
    /// Opens a connection to `store`.
    pub(crate) async fn open(store: &Store) -> anyhow::Result<StoreCounter> {
        match store {
            Store::Postgres { database } => {
                use diesel_async::{AsyncConnection, RunQueryDsl};
                let mut conn = diesel_async::AsyncPgConnection::establish(&format!(
                    "{}/{database}",
                    postgres_url()
                ))
                .await
                .context("cannot connect to the server's database")?;
                let pid: Pid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
                    .get_result(&mut conn)
                    .await?;
                Ok(StoreCounter::Postgres {
                    conn: Box::new(conn),
                    pid: u32::try_from(pid.pid)?,
                    queries: 1,
                })
            }
            Store::Sqlite { path, .. } => {
                use diesel::{Connection, connection::SimpleConnection};
                let path = path.to_str().context("the SQLite path is not UTF-8")?;
                let mut conn = diesel::SqliteConnection::establish(path)
                    .with_context(|| format!("cannot open {path}"))?;
                conn.batch_execute("PRAGMA busy_timeout = 5000")?;
                Ok(StoreCounter::Sqlite(Arc::new(Mutex::new(conn))))
            }
        }
    }

    /// The Postgres backend serving this counter (to leave out of Postgres's CPU time).
    pub(crate) fn backend_pid(&self) -> Option<u32> {
        match self {
            StoreCounter::Postgres { pid, .. } => Some(*pid),
            StoreCounter::Sqlite(_) => None,
        }
    }

    /// Transactions this counter has run on Postgres so far (to leave out of the server's).
    pub(crate) fn transactions(&self) -> u64 {
        match self {
            StoreCounter::Postgres { queries, .. } => *queries,
            StoreCounter::Sqlite(_) => 0,
        }
    }

    /// Completed jobs, and failed or cancelled ones, in the store now.
    pub(crate) async fn finished(&mut self) -> anyhow::Result<(usize, usize)> {
        let f: Finished = match self {
            StoreCounter::Postgres { conn, queries, .. } => {
                use diesel_async::RunQueryDsl;
                *queries += 1;
                diesel::sql_query(FINISHED).get_result(&mut **conn).await?
            }
            StoreCounter::Sqlite(conn) => {
                let conn = conn.clone();
                tokio::task::spawn_blocking(move || {
                    use diesel::RunQueryDsl;
                    let mut c = conn.lock().unwrap_or_else(PoisonError::into_inner);
                    diesel::sql_query(FINISHED).get_result::<Finished>(&mut *c)
                })
                .await??
            }
        };
        Ok((usize::try_from(f.completed)?, usize::try_from(f.failed)?))
    }

    /// Polls until `expected` jobs are completed; returns when that was seen. Fails as soon
    /// as a job failed or more than `expected` completed, or after `timeout`.
    pub(crate) async fn wait_for_completed(
        &mut self,
        expected: usize,
        timeout: Duration,
    ) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let (completed, failed) = self.finished().await?;
            let now = Instant::now();
            anyhow::ensure!(failed == 0, "{failed} jobs failed or were cancelled");
            anyhow::ensure!(
                completed <= expected,
                "{completed} jobs completed, {expected} were submitted"
            );
            if completed == expected {
                return Ok(now);
            }
            anyhow::ensure!(
                now < deadline,
                "only {completed} of {expected} jobs completed in {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
