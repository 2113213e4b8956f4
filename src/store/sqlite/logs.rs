//! Stored event logs of ended jobs (`job_event_logs`) in the SQLite store: written with the
//! result, or afterwards for the rare logs not known then; read by late replays.

use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, RunQueryDsl, SqliteConnection};

use super::{key, schema::job_event_logs, schema::jobs};
use crate::{events::archive::Archive, job::JobId, store::Error};

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Inserts or replaces the job's log.
pub(super) fn upsert(conn: &mut SqliteConnection, id: JobId, log: &Archive) -> Result<(), Error> {
    diesel::replace_into(job_event_logs::table)
        .values((
            job_event_logs::job_id.eq(key(id)),
            job_event_logs::first_sequence.eq(to_i64(log.first_sequence)),
            job_event_logs::event_count.eq(to_i64(log.count)),
            job_event_logs::events.eq(&log.data),
        ))
        .execute(conn)?;
    Ok(())
}

/// Each log with its job's `last_sequence` (see `Store::store_event_logs`).
pub(super) fn store(conn: &mut SqliteConnection, logs: &[(JobId, Archive)]) -> Result<(), Error> {
    for (id, log) in logs {
        let Some(last) = log.last_sequence() else {
            continue;
        };
        upsert(conn, *id, log)?;
        diesel::update(jobs::table.find(key(*id)))
            .set(jobs::last_sequence.eq(to_i64(last)))
            .execute(conn)?;
    }
    Ok(())
}

/// The job's stored log, `None` when it has none.
pub(super) fn get(conn: &mut SqliteConnection, id: JobId) -> Result<Option<Archive>, Error> {
    let row: Option<(i64, i64, Vec<u8>)> = job_event_logs::table
        .find(key(id))
        .select((
            job_event_logs::first_sequence,
            job_event_logs::event_count,
            job_event_logs::events,
        ))
        .get_result(conn)
        .optional()?;
    Ok(row.map(|(first, count, data)| Archive {
        first_sequence: u64::try_from(first).unwrap_or(0),
        count: u64::try_from(count).unwrap_or(0),
        data,
    }))
}
