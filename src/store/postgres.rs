//! [`Store`](super::Store) on Postgres through diesel-async, with a deadpool connection pool
//! and embedded migrations. One file per interface: [`jobs`], [`attempts`] (through the group
//! commit of [`writer`]), [`history`], [`batches`], [`keys`], [`audit`] and [`reports`].

mod attempts;
mod audit;
mod batches;
mod history;
mod jobs;
mod keys;
mod migrate;
mod reports;
mod writer;

pub use migrate::{MIGRATIONS, ensure_database, migrate};

use diesel_async::{AsyncPgConnection, pooled_connection::AsyncDieselConnectionManager};

use super::Error;

/// How long an idempotency key returns the job first submitted with it.
pub const IDEMPOTENCY_WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// The connection pool.
type Pool = diesel_async::pooled_connection::deadpool::Pool<AsyncPgConnection>;

/// The Postgres store.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// The group-commit writer of the hot-path writes, started on first use (it needs the
    /// Tokio runtime, which the constructor does not).
    writer: std::sync::Arc<std::sync::OnceLock<writer::Writer>>,
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for Error {
    fn from(e: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        Error::Unavailable(e.to_string())
    }
}

impl PgStore {
    /// Builds the pool (connections open lazily, so this succeeds while Postgres is down).
    ///
    /// Errors: [`Error::Unavailable`] when the pool cannot be built from the URL.
    pub fn new(url: &str, pool_size: usize) -> Result<PgStore, Error> {
        // Each checkout is verified with a test query: a read never meets a connection whose
        // server process was terminated (it would fail as an internal error). The hot-path
        // writes check out one connection per group commit, so the test query is shared by
        // every write of a batch.
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .wait_timeout(Some(std::time::Duration::from_secs(5)))
            .create_timeout(Some(std::time::Duration::from_secs(5)))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        Ok(PgStore {
            pool,
            writer: Default::default(),
        })
    }

    fn writer(&self) -> &writer::Writer {
        self.writer
            .get_or_init(|| writer::Writer::start(self.pool.clone()))
    }

    async fn conn(
        &self,
    ) -> Result<diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>, Error> {
        Ok(self.pool.get().await?)
    }
}

fn to_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}
