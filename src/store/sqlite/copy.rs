//! Copying an embedded store into Postgres (`llm-jobs copy-store`), to move from the embedded
//! mode to Redis + Postgres without losing what it holds: batches, jobs with their results,
//! attempt errors, progress history and event logs, API keys and the audit log.
//!
//! The source is read whole, with no server using it (its claim is taken, see
//! [`crate::store::single`]); the target is written in one transaction, so a failed copy
//! leaves it as it was. The target must hold no job, key or audit event. Jobs left unfinished
//! are copied as they are: on Redis + Postgres the reconciler re-enqueues them.

use std::path::Path;

use diesel::{ExpressionMethods, QueryDsl};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use self::source::Source;
use super::rows::{json, time, time_opt, uuid};
use crate::store::{Error, models, schema as pg};

/// Rows per INSERT: well below Postgres's 65,535 bind parameters at 28 columns.
const CHUNK: usize = 1000;

/// How many rows of each table were copied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Copied {
    /// Batches.
    pub batches: usize,
    /// Jobs, whatever their status.
    pub jobs: usize,
    /// Results of finished jobs.
    pub results: usize,
    /// Failed attempts.
    pub attempt_failures: usize,
    /// Progress history entries.
    pub progress_events: usize,
    /// Stored event logs of ended jobs.
    pub event_logs: usize,
    /// API keys, revoked ones included.
    pub api_keys: usize,
    /// Audit log entries.
    pub audit_events: usize,
}

mod source;

/// Copies the SQLite store at `path` into the empty Postgres database at `url` (created and
/// migrated when needed, once the source is claimed).
///
/// Errors: [`Error::InUse`] when a server uses the source; [`Error::Refused`] when the target
/// already holds jobs, keys or audit events; [`Error::Unavailable`], [`Error::Query`],
/// [`Error::Corrupt`] (a source row that does not decode: nothing is written).
pub async fn copy_to_postgres(path: &Path, url: &str) -> Result<Copied, Error> {
    let _claim = crate::store::single::claim(
        &crate::store::Location::Sqlite(path.to_owned()),
        crate::store::single::Mode::Exclusive,
    )
    .await?;
    let source = {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || source::read(&path))
            .await
            .map_err(|e| Error::Unavailable(format!("SQLite read task failed: {e}")))??
    };
    // Only now, with the source claimed and read, is the target created and migrated.
    crate::store::postgres::ensure_database(url).await?;
    crate::store::postgres::migrate(url).await?;
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .map_err(|e| Error::Unavailable(e.to_string()))?;
    conn.transaction::<_, Error, _>(async |conn| write(conn, source).await)
        .await
}

/// Inserts `rows` into `table` [`CHUNK`] rows per statement.
macro_rules! insert_chunks {
    ($conn:expr, $table:expr, $rows:expr) => {
        for chunk in $rows.chunks(CHUNK) {
            diesel::insert_into($table)
                .values(chunk)
                .execute($conn)
                .await?;
        }
    };
}

async fn write(conn: &mut AsyncPgConnection, mut s: Source) -> Result<Copied, Error> {
    refuse_unless_empty(conn).await?;
    let copied = Copied {
        batches: s.batches.len(),
        jobs: s.jobs.len(),
        results: s.results.len(),
        attempt_failures: s.failures.len(),
        progress_events: s.progress.len(),
        event_logs: s.logs.len(),
        api_keys: s.keys.len(),
        audit_events: s.audit.len(),
    };
    write_jobs(conn, &mut s).await?;
    write_histories(conn, &mut s).await?;
    write_security(conn, s).await?;
    Ok(copied)
}

/// Refuses a target that holds jobs, API keys or audit events.
async fn refuse_unless_empty(conn: &mut AsyncPgConnection) -> Result<(), Error> {
    let held: i64 = pg::jobs::table.count().get_result::<i64>(conn).await?
        + pg::api_keys::table.count().get_result::<i64>(conn).await?
        + pg::audit_events::table
            .count()
            .get_result::<i64>(conn)
            .await?;
    if held > 0 {
        return Err(Error::Refused(
            "the target database already holds jobs, API keys or audit events; copy into an \
             empty one (a fresh database, migrated)"
                .into(),
        ));
    }
    Ok(())
}

/// Batches, then jobs, then their results (so each row's references exist).
async fn write_jobs(conn: &mut AsyncPgConnection, s: &mut Source) -> Result<(), Error> {
    let batches = s
        .batches
        .drain(..)
        .map(|(id, name, metadata, key, created_at, tenant)| {
            Ok((
                pg::batches::id.eq(uuid(&id)?),
                pg::batches::display_name.eq(name),
                pg::batches::metadata.eq(json(&metadata, "batch metadata")?),
                pg::batches::idempotency_key.eq(key),
                pg::batches::created_at.eq(time(created_at)?),
                pg::batches::tenant.eq(tenant),
            ))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    insert_chunks!(conn, pg::batches::table, batches);
    let jobs = s
        .jobs
        .drain(..)
        .map(|(row, discard)| {
            Ok((
                models::JobRow::try_from(row)?,
                pg::jobs::discard_prompt.eq(discard),
            ))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    insert_chunks!(conn, pg::jobs::table, jobs);
    let results = s
        .results
        .drain(..)
        .map(|r| {
            let (id, created_at) = (uuid(&r.job_id)?, time(r.created_at)?);
            Ok((
                r.into_postgres(id),
                pg::job_results::created_at.eq(created_at),
            ))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    insert_chunks!(conn, pg::job_results::table, results);
    Ok(())
}

/// Failed attempts, progress history and event logs.
async fn write_histories(conn: &mut AsyncPgConnection, s: &mut Source) -> Result<(), Error> {
    let failures = s
        .failures
        .drain(..)
        .map(|(id, attempt, code, message, retryable, created_at)| {
            Ok((
                pg::job_attempt_failures::job_id.eq(uuid(&id)?),
                pg::job_attempt_failures::attempt.eq(attempt),
                pg::job_attempt_failures::error_code.eq(code),
                pg::job_attempt_failures::message.eq(message),
                pg::job_attempt_failures::retryable.eq(retryable),
                pg::job_attempt_failures::created_at.eq(time(created_at)?),
            ))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    insert_chunks!(conn, pg::job_attempt_failures::table, failures);
    let progress = s
        .progress
        .drain(..)
        .map(|(id, attempt, kind, name, at, event)| {
            Ok((
                pg::job_progress_events::job_id.eq(uuid(&id)?),
                pg::job_progress_events::attempt.eq(attempt),
                pg::job_progress_events::kind.eq(kind),
                pg::job_progress_events::name.eq(name),
                pg::job_progress_events::time.eq(time(at)?),
                pg::job_progress_events::event.eq(event),
            ))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    // In source order, so positions (page tokens aside) keep the history's order.
    insert_chunks!(conn, pg::job_progress_events::table, progress);
    let logs = s
        .logs
        .drain(..)
        .map(|(id, first, count, events)| {
            Ok((
                pg::job_event_logs::job_id.eq(uuid(&id)?),
                pg::job_event_logs::first_sequence.eq(first),
                pg::job_event_logs::event_count.eq(count),
                pg::job_event_logs::events.eq(events),
            ))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    insert_chunks!(conn, pg::job_event_logs::table, logs);
    Ok(())
}

/// API keys and the audit log.
async fn write_security(conn: &mut AsyncPgConnection, s: Source) -> Result<(), Error> {
    let keys = s
        .keys
        .into_iter()
        .map(
            |(id, prefix, secret, tenant, role, name, rpm, jobs, created_at, revoked_at)| {
                Ok((
                    pg::api_keys::id.eq(uuid(&id)?),
                    pg::api_keys::prefix.eq(prefix),
                    pg::api_keys::secret_sha256.eq(secret),
                    pg::api_keys::tenant.eq(tenant),
                    pg::api_keys::role.eq(role),
                    pg::api_keys::name.eq(name),
                    pg::api_keys::requests_per_minute.eq(rpm),
                    pg::api_keys::max_concurrent_jobs.eq(jobs),
                    pg::api_keys::created_at.eq(time(created_at)?),
                    pg::api_keys::revoked_at.eq(time_opt(revoked_at)?),
                ))
            },
        )
        .collect::<Result<Vec<_>, Error>>()?;
    insert_chunks!(conn, pg::api_keys::table, keys);
    let audit = s
        .audit
        .into_iter()
        .map(
            |(at, actor, tenant, action, target, peer, outcome, detail)| {
                Ok((
                    pg::audit_events::time.eq(time(at)?),
                    pg::audit_events::actor.eq(actor),
                    pg::audit_events::tenant.eq(tenant),
                    pg::audit_events::action.eq(action),
                    pg::audit_events::target.eq(target),
                    pg::audit_events::peer.eq(peer),
                    pg::audit_events::outcome.eq(outcome),
                    pg::audit_events::detail.eq(detail),
                ))
            },
        )
        .collect::<Result<Vec<_>, Error>>()?;
    insert_chunks!(conn, pg::audit_events::table, audit);
    Ok(())
}
