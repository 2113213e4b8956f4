//! Creating the database when it is missing and applying the embedded migrations.

use diesel_async::{
    AsyncConnection, AsyncPgConnection, RunQueryDsl,
    async_connection_wrapper::AsyncConnectionWrapper,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::store::Error;

/// Key of the Postgres advisory lock held while migrating ("llm-jobs" in ASCII).
const MIGRATION_LOCK: i64 = 0x6c6c_6d2d_6a6f_6273;

/// The migrations under `migrations/postgres/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Creates the database named in `url` when it does not exist (connecting to the `postgres`
/// maintenance database for that), so a fresh machine needs no manual `createdb`.
///
/// Errors: [`Error::Unavailable`] when Postgres cannot be reached.
pub async fn ensure_database(url: &str) -> Result<(), Error> {
    match AsyncPgConnection::establish(url).await {
        Ok(_) => return Ok(()),
        Err(e) if describe(&e).contains("does not exist") => {
            // Expected on a first start: no error to report (INFO lines carry none).
            tracing::info!("the database does not exist yet; creating it");
        }
        Err(e) => return Err(Error::Unavailable(describe(&e))),
    }
    let (base, name) = url
        .rsplit_once('/')
        .ok_or_else(|| Error::Unavailable(format!("no database name in URL {url:?}")))?;
    let name = name.split('?').next().unwrap_or(name);
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Error::Unavailable(format!(
            "database {name:?} does not exist and its name is not a plain identifier"
        )));
    }
    let mut admin = AsyncPgConnection::establish(&format!("{base}/postgres"))
        .await
        .map_err(|e| Error::Unavailable(e.to_string()))?;
    match diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
    {
        Ok(_) => {
            tracing::info!(database = name, "created database");
            Ok(())
        }
        // Another instance created it at the same moment.
        Err(e) if e.to_string().contains("already exists") => Ok(()),
        Err(e) => Err(Error::Query(e)),
    }
}

/// Applies pending migrations; returns the versions applied.
///
/// Runs diesel's sync migration harness over diesel-async's connection wrapper on a blocking
/// thread. Errors: [`Error::Unavailable`], [`Error::Migration`].
pub async fn migrate(url: &str) -> Result<Vec<String>, Error> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        use diesel::Connection;
        let mut conn = <AsyncConnectionWrapper<AsyncPgConnection> as Connection>::establish(&url)
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        // Instances that start together take turns: concurrent CREATE TABLE statements
        // collide in Postgres's catalogue. The lock ends with this connection.
        diesel::RunQueryDsl::execute(
            diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})")),
            &mut conn,
        )
        .map_err(|e| Error::Migration(e.to_string()))?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| Error::Migration(e.to_string()))?;
        Ok(applied.iter().map(|v| v.to_string()).collect())
    })
    .await
    .map_err(|e| Error::Migration(format!("migration task failed: {e}")))?
}

/// An error with its causes ("error connecting to server: Connection refused").
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}
