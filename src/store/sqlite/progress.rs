//! Progress history on SQLite: the stage changes and milestones of each job, and the recent
//! output sizes that progress estimates come from.

use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl, SqliteConnection};

use super::{
    key,
    rows::micros,
    schema::{job_progress_events, job_results, jobs},
};
use crate::{
    job::{JobId, JobStatus},
    progress::ProgressRecord,
    store::{Error, models::NewProgressRow},
};

/// Appends `events` to the job's history (inside the caller's transaction when it has one).
pub(super) fn insert(
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

pub(super) fn history(
    conn: &mut SqliteConnection,
    id: JobId,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<(i64, Vec<u8>)>, Error> {
    let rows: Vec<(i64, Vec<u8>)> = job_progress_events::table
        .filter(job_progress_events::job_id.eq(key(id)))
        .filter(job_progress_events::id.gt(after.unwrap_or(0)))
        .order(job_progress_events::id.asc())
        .select((job_progress_events::id, job_progress_events::event))
        .limit(limit)
        .load(conn)?;
    Ok(rows)
}

/// Output tokens of the results of `ids` (SQLite keys); ids that do not parse are skipped.
pub(super) fn result_output_tokens(
    conn: &mut SqliteConnection,
    ids: &[String],
) -> Result<Vec<(JobId, u64)>, Error> {
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
}

pub(super) fn recent_output_tokens(
    conn: &mut SqliteConnection,
    job_type: &str,
    model: &str,
    limit: i64,
) -> Result<Vec<u64>, Error> {
    let tokens: Vec<i64> = jobs::table
        .inner_join(job_results::table)
        .filter(jobs::status.eq(JobStatus::Completed.as_str()))
        .filter(jobs::job_type.eq(job_type))
        .filter(jobs::model.eq(model))
        .order(jobs::finished_at.desc())
        .select(job_results::output_tokens)
        .limit(limit)
        .load(conn)?;
    Ok(tokens
        .into_iter()
        .filter_map(|t| u64::try_from(t).ok())
        .collect())
}
