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

/// The source's rows, read with diesel's blocking calls (diesel-async's are for the target).
mod source {
    use std::path::Path;

    use diesel::{QueryDsl, RunQueryDsl, SelectableHelper};

    use super::super::{
        connect,
        rows::{JobRow, ResultRow},
        schema as lite,
    };
    use crate::store::Error;

    pub(super) type BatchRow = (String, String, String, Option<String>, i64, String);
    pub(super) type FailureRow = (String, i32, String, String, bool, i64);
    pub(super) type ProgressRow = (String, i32, String, String, i64, Vec<u8>);
    pub(super) type LogRow = (String, i64, i64, Vec<u8>);
    pub(super) type KeyRow = (
        String,
        String,
        String,
        String,
        String,
        String,
        Option<i32>,
        Option<i32>,
        i64,
        Option<i64>,
    );
    pub(super) type AuditRow = (i64, String, String, String, String, String, String, String);

    /// Everything the source holds.
    pub(super) struct Source {
        pub(super) batches: Vec<BatchRow>,
        pub(super) jobs: Vec<(JobRow, bool)>,
        pub(super) results: Vec<ResultRow>,
        pub(super) failures: Vec<FailureRow>,
        pub(super) progress: Vec<ProgressRow>,
        pub(super) logs: Vec<LogRow>,
        pub(super) keys: Vec<KeyRow>,
        pub(super) audit: Vec<AuditRow>,
    }

    pub(super) fn read(path: &Path) -> Result<Source, Error> {
        let conn = &mut connect(path)?;
        Ok(Source {
            batches: lite::batches::table
                .order(lite::batches::id)
                .select((
                    lite::batches::id,
                    lite::batches::display_name,
                    lite::batches::metadata,
                    lite::batches::idempotency_key,
                    lite::batches::created_at,
                    lite::batches::tenant,
                ))
                .load(conn)?,
            jobs: lite::jobs::table
                .order(lite::jobs::id)
                .select((JobRow::as_select(), lite::jobs::discard_prompt))
                .load(conn)?,
            results: lite::job_results::table
                .order(lite::job_results::job_id)
                .select(ResultRow::as_select())
                .load(conn)?,
            failures: lite::job_attempt_failures::table
                .order((
                    lite::job_attempt_failures::job_id,
                    lite::job_attempt_failures::attempt,
                ))
                .select((
                    lite::job_attempt_failures::job_id,
                    lite::job_attempt_failures::attempt,
                    lite::job_attempt_failures::error_code,
                    lite::job_attempt_failures::message,
                    lite::job_attempt_failures::retryable,
                    lite::job_attempt_failures::created_at,
                ))
                .load(conn)?,
            progress: lite::job_progress_events::table
                .order(lite::job_progress_events::id)
                .select((
                    lite::job_progress_events::job_id,
                    lite::job_progress_events::attempt,
                    lite::job_progress_events::kind,
                    lite::job_progress_events::name,
                    lite::job_progress_events::time,
                    lite::job_progress_events::event,
                ))
                .load(conn)?,
            logs: lite::job_event_logs::table
                .order(lite::job_event_logs::job_id)
                .select((
                    lite::job_event_logs::job_id,
                    lite::job_event_logs::first_sequence,
                    lite::job_event_logs::event_count,
                    lite::job_event_logs::events,
                ))
                .load(conn)?,
            keys: lite::api_keys::table
                .order(lite::api_keys::created_at)
                .select((
                    lite::api_keys::id,
                    lite::api_keys::prefix,
                    lite::api_keys::secret_sha256,
                    lite::api_keys::tenant,
                    lite::api_keys::role,
                    lite::api_keys::name,
                    lite::api_keys::requests_per_minute,
                    lite::api_keys::max_concurrent_jobs,
                    lite::api_keys::created_at,
                    lite::api_keys::revoked_at,
                ))
                .load(conn)?,
            audit: lite::audit_events::table
                .order(lite::audit_events::id)
                .select((
                    lite::audit_events::time,
                    lite::audit_events::actor,
                    lite::audit_events::tenant,
                    lite::audit_events::action,
                    lite::audit_events::target,
                    lite::audit_events::peer,
                    lite::audit_events::outcome,
                    lite::audit_events::detail,
                ))
                .load(conn)?,
        })
    }
}

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

async fn write(conn: &mut AsyncPgConnection, s: Source) -> Result<Copied, Error> {
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
    let batches = s
        .batches
        .into_iter()
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
        .into_iter()
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
        .into_iter()
        .map(|r| {
            let (id, created_at) = (uuid(&r.job_id)?, time(r.created_at)?);
            Ok((
                r.into_postgres(id),
                pg::job_results::created_at.eq(created_at),
            ))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    insert_chunks!(conn, pg::job_results::table, results);
    let failures = s
        .failures
        .into_iter()
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
        .into_iter()
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
        .into_iter()
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
    Ok(copied)
}
