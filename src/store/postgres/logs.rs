//! Stored event logs of ended jobs (`job_event_logs`): written with the result by the group
//! commit, or afterwards for the rare logs not known then; read by late replays.

use diesel::{OptionalExtension, QueryDsl};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::PgStore;
use crate::{
    events::archive::Archive,
    job::JobId,
    store::{Error, schema::job_event_logs},
};

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Inserts or replaces the logs of `logs` (job id, log) with one statement.
pub(super) async fn upsert(
    conn: &mut AsyncPgConnection,
    logs: &[(JobId, &Archive)],
) -> Result<(), Error> {
    use diesel::sql_types::{Array, Bytea, Int8, Uuid};
    if logs.is_empty() {
        return Ok(());
    }
    let ids: Vec<JobId> = logs.iter().map(|(id, _)| *id).collect();
    let firsts: Vec<i64> = logs.iter().map(|(_, a)| to_i64(a.first_sequence)).collect();
    let counts: Vec<i64> = logs.iter().map(|(_, a)| to_i64(a.count)).collect();
    let data: Vec<&[u8]> = logs.iter().map(|(_, a)| a.data.as_slice()).collect();
    diesel::sql_query(
        "INSERT INTO job_event_logs (job_id, first_sequence, event_count, events) \
         SELECT * FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::bytea[]) \
         ON CONFLICT (job_id) DO UPDATE SET first_sequence = excluded.first_sequence, \
           event_count = excluded.event_count, events = excluded.events",
    )
    .bind::<Array<Uuid>, _>(ids)
    .bind::<Array<Int8>, _>(firsts)
    .bind::<Array<Int8>, _>(counts)
    .bind::<Array<Bytea>, _>(data)
    .execute(conn)
    .await?;
    Ok(())
}

/// [`crate::store::Store::store_event_logs`]: the logs and the jobs' last sequences, in one
/// transaction.
pub(super) async fn store(store: &PgStore, logs: &[(JobId, Archive)]) -> Result<(), Error> {
    use diesel::sql_types::{Array, Int8, Uuid};
    let logs: Vec<(JobId, &Archive)> = logs
        .iter()
        .filter(|(_, a)| a.count > 0)
        .map(|(id, a)| (*id, a))
        .collect();
    if logs.is_empty() {
        return Ok(());
    }
    let mut conn = store.conn().await?;
    conn.transaction::<_, Error, _>(async |conn| {
        upsert(conn, &logs).await?;
        let (ids, seqs): (Vec<JobId>, Vec<i64>) = logs
            .iter()
            .filter_map(|(id, a)| Some((*id, to_i64(a.last_sequence()?))))
            .unzip();
        diesel::sql_query(
            "UPDATE jobs SET last_sequence = v.seq \
             FROM unnest($1::uuid[], $2::int8[]) AS v(id, seq) WHERE jobs.id = v.id",
        )
        .bind::<Array<Uuid>, _>(ids)
        .bind::<Array<Int8>, _>(seqs)
        .execute(conn)
        .await?;
        Ok(())
    })
    .await
}

/// The job's stored log, `None` when it has none.
pub(super) async fn get(store: &PgStore, id: JobId) -> Result<Option<Archive>, Error> {
    let mut conn = store.conn().await?;
    let row: Option<(i64, i64, Vec<u8>)> = job_event_logs::table
        .find(id)
        .select((
            job_event_logs::first_sequence,
            job_event_logs::event_count,
            job_event_logs::events,
        ))
        .first(&mut conn)
        .await
        .optional()?;
    Ok(row.map(|(first, count, data)| Archive {
        first_sequence: u64::try_from(first).unwrap_or(0),
        count: u64::try_from(count).unwrap_or(0),
        data,
    }))
}
