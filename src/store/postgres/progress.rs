//! Progress history on Postgres: the stage changes and milestones of each job, and the recent
//! output sizes that progress estimates come from.

use diesel::{ExpressionMethods, QueryDsl};
use diesel_async::RunQueryDsl;

use super::PgStore;
use crate::{
    job::{JobId, JobStatus},
    progress::ProgressRecord,
    store::{
        Error,
        models::NewProgressRow,
        schema::{job_progress_events, job_results, jobs},
    },
};

pub(super) async fn append(
    store: &PgStore,
    id: JobId,
    events: &[ProgressRecord],
) -> Result<(), Error> {
    if events.is_empty() {
        return Ok(());
    }
    let mut conn = store.conn().await?;
    insert(&mut conn, id, events).await
}

/// Inserts `events` into the job's history on `conn` (inside the caller's transaction when
/// it has one).
pub(super) async fn insert(
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

pub(super) async fn history(
    store: &PgStore,
    id: JobId,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<(i64, Vec<u8>)>, Error> {
    let mut conn = store.conn().await?;
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

pub(super) async fn result_output_tokens(
    store: &PgStore,
    ids: &[JobId],
) -> Result<Vec<(JobId, u64)>, Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = store.conn().await?;
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

pub(super) async fn recent_output_tokens(
    store: &PgStore,
    job_type: &str,
    model: &str,
    limit: i64,
) -> Result<Vec<u64>, Error> {
    let mut conn = store.conn().await?;
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
