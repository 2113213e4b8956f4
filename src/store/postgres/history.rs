//! [`HistoryStore`] on Postgres: the stage changes and milestones of each job, the stored
//! event logs of ended jobs (`job_event_logs`: written with the result by the group commit,
//! or afterwards for the rare logs not known then; read by late replays), and the recent
//! output sizes that progress estimates come from.

use async_trait::async_trait;
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::PgStore;
use crate::{
    events::archive::Archive,
    job::{JobId, JobStatus},
    progress::ProgressRecord,
    store::{
        Error, HistoryStore,
        models::NewProgressRow,
        schema::{job_event_logs, job_progress_events, job_results, jobs},
    },
};

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Inserts `events` into the job's history on `conn` (inside the caller's transaction when
/// it has one).
pub(super) async fn insert_progress(
    conn: &mut diesel_async::AsyncPgConnection,
    id: JobId,
    events: &[ProgressRecord],
) -> Result<(), Error> {
    if events.is_empty() {
        return Ok(());
    }
    let rows = NewProgressRow::from_events(id, events);
    diesel::insert_into(job_progress_events::table)
        .values(&rows)
        .execute(conn)
        .await?;
    Ok(())
}

/// Inserts or replaces the logs of `logs` (job id, log) with one statement.
pub(super) async fn upsert_logs(
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

#[async_trait]
impl HistoryStore for PgStore {
    async fn append_progress(&self, id: JobId, events: &[ProgressRecord]) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        insert_progress(&mut conn, id, events).await
    }

    async fn progress_history(
        &self,
        id: JobId,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, Error> {
        let mut conn = self.conn().await?;
        let rows: Vec<(i64, Vec<u8>)> = job_progress_events::table
            .filter(job_progress_events::job_id.eq(id))
            .filter(job_progress_events::id.gt(after.unwrap_or(0)))
            .order(job_progress_events::id.asc())
            .select((job_progress_events::id, job_progress_events::event))
            .limit(limit)
            .load(&mut conn)
            .await?;
        Ok(rows)
    }

    /// The logs and the jobs' last sequences, in one transaction.
    async fn store_event_logs(&self, logs: &[(JobId, Archive)]) -> Result<(), Error> {
        use diesel::sql_types::{Array, Int8, Uuid};
        let logs: Vec<(JobId, &Archive)> = logs
            .iter()
            .filter(|(_, a)| a.count > 0)
            .map(|(id, a)| (*id, a))
            .collect();
        if logs.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        conn.transaction::<_, Error, _>(async |conn| {
            upsert_logs(conn, &logs).await?;
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
    async fn event_log(&self, id: JobId) -> Result<Option<Archive>, Error> {
        let mut conn = self.conn().await?;
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

    async fn result_output_tokens(&self, ids: &[JobId]) -> Result<Vec<(JobId, u64)>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let rows: Vec<(uuid::Uuid, i64)> = job_results::table
            .filter(job_results::job_id.eq_any(ids))
            .select((job_results::job_id, job_results::output_tokens))
            .load(&mut conn)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, n)| (id, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    async fn recent_output_tokens(
        &self,
        job_type: &str,
        model: &str,
        limit: i64,
    ) -> Result<Vec<u64>, Error> {
        let mut conn = self.conn().await?;
        let tokens: Vec<i64> = jobs::table
            .inner_join(job_results::table)
            .filter(jobs::status.eq(JobStatus::Completed.as_str()))
            .filter(jobs::job_type.eq(job_type))
            .filter(jobs::model.eq(model))
            .order(jobs::finished_at.desc())
            .select(job_results::output_tokens)
            .limit(limit)
            .load(&mut conn)
            .await?;
        Ok(tokens
            .into_iter()
            .filter_map(|t| u64::try_from(t).ok())
            .collect())
    }
}
