//! [`HistoryStore`] on SQLite: the stage changes and milestones of each job, the stored event
//! logs of ended jobs (`job_event_logs`: written with the result, or afterwards for the rare
//! logs not known then; read by late replays), and the recent output sizes that progress
//! estimates come from.

use async_trait::async_trait;
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, RunQueryDsl, SqliteConnection};

use super::{
    SqliteStore, key,
    rows::micros,
    schema::{job_event_logs, job_progress_events, job_results, jobs},
};
use crate::{
    events::archive::Archive,
    job::{JobId, JobStatus},
    progress::ProgressRecord,
    store::{Error, HistoryStore, models::NewProgressRow},
};

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Appends `events` to the job's history (inside the caller's transaction when it has one).
pub(super) fn insert_progress(
    conn: &mut SqliteConnection,
    id: JobId,
    events: &[ProgressRecord],
) -> Result<(), Error> {
    for r in NewProgressRow::from_events(id, events) {
        diesel::insert_into(job_progress_events::table)
            .values((
                job_progress_events::job_id.eq(key(r.job_id)),
                job_progress_events::attempt.eq(r.attempt),
                job_progress_events::kind.eq(r.kind),
                job_progress_events::name.eq(r.name),
                job_progress_events::time.eq(micros(r.time)),
                job_progress_events::event.eq(r.event),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Inserts or replaces the job's log.
pub(super) fn upsert_log(
    conn: &mut SqliteConnection,
    id: JobId,
    log: &Archive,
) -> Result<(), Error> {
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

#[async_trait]
impl HistoryStore for SqliteStore {
    async fn append_progress(&self, id: JobId, events: &[ProgressRecord]) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        let events = events.to_vec();
        self.write(move |conn| insert_progress(conn, id, &events))
            .await
    }

    async fn progress_history(
        &self,
        id: JobId,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, Error> {
        self.run(move |conn| {
            let rows: Vec<(i64, Vec<u8>)> = job_progress_events::table
                .filter(job_progress_events::job_id.eq(key(id)))
                .filter(job_progress_events::id.gt(after.unwrap_or(0)))
                .order(job_progress_events::id.asc())
                .select((job_progress_events::id, job_progress_events::event))
                .limit(limit)
                .load(conn)?;
            Ok(rows)
        })
        .await
    }

    /// Each log with its job's `last_sequence`, in one transaction.
    async fn store_event_logs(&self, logs: &[(JobId, Archive)]) -> Result<(), Error> {
        if logs.is_empty() {
            return Ok(());
        }
        let logs = logs.to_vec();
        self.write(move |conn| {
            for (id, log) in &logs {
                let Some(last) = log.last_sequence() else {
                    continue;
                };
                upsert_log(conn, *id, log)?;
                diesel::update(jobs::table.find(key(*id)))
                    .set(jobs::last_sequence.eq(to_i64(last)))
                    .execute(conn)?;
            }
            Ok(())
        })
        .await
    }

    async fn event_log(&self, id: JobId) -> Result<Option<Archive>, Error> {
        self.run(move |conn| {
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
        })
        .await
    }

    /// Ids whose stored form does not parse are skipped.
    async fn result_output_tokens(&self, ids: &[JobId]) -> Result<Vec<(JobId, u64)>, Error> {
        let ids: Vec<String> = ids.iter().copied().map(key).collect();
        self.run(move |conn| {
            let mut found = Vec::new();
            // One bound variable per id: chunks stay far below SQLite's limit on them.
            for chunk in ids.chunks(500) {
                let rows: Vec<(String, i64)> = job_results::table
                    .filter(job_results::job_id.eq_any(chunk))
                    .select((job_results::job_id, job_results::output_tokens))
                    .load(conn)?;
                found.extend(rows.into_iter().filter_map(|(id, n)| {
                    Some((JobId::parse_str(&id).ok()?, u64::try_from(n).unwrap_or(0)))
                }));
            }
            Ok(found)
        })
        .await
    }

    async fn recent_output_tokens(
        &self,
        job_type: &str,
        model: &str,
        limit: i64,
    ) -> Result<Vec<u64>, Error> {
        let (job_type, model) = (job_type.to_owned(), model.to_owned());
        self.run(move |conn| {
            let tokens: Vec<i64> = jobs::table
                .inner_join(job_results::table)
                .filter(jobs::status.eq(JobStatus::Completed.as_str()))
                .filter(jobs::job_type.eq(job_type.as_str()))
                .filter(jobs::model.eq(model.as_str()))
                .order(jobs::finished_at.desc())
                .select(job_results::output_tokens)
                .limit(limit)
                .load(conn)?;
            Ok(tokens
                .into_iter()
                .filter_map(|t| u64::try_from(t).ok())
                .collect())
        })
        .await
    }
}
