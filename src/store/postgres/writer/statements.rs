//! The statements of one group commit ([`super`]): multi-row inserts of new jobs, one update
//! for attempt starts, one fenced update for attempt ends plus the rows they leave.

use diesel::{ExpressionMethods, SelectableHelper};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::{super::to_i32, End};
use crate::{
    job::{JobId, JobStatus},
    store::{
        Error,
        models::{AttemptFailureRow, JobRow, ListedJobRow, NewJobRow, NewProgressRow, ResultRow},
        schema::{job_attempt_failures, job_progress_events, job_results, jobs},
    },
};

/// Rows the statements returned, by job.
pub(super) type Rows = std::collections::HashMap<JobId, JobRow>;

fn by_id(rows: Vec<JobRow>) -> Rows {
    rows.into_iter().map(|r| (r.id, r)).collect()
}

/// Inserts new jobs with one multi-row statement; the rows come back without their prompts.
pub(super) async fn insert_jobs<'a>(
    conn: &mut AsyncPgConnection,
    rows: impl IntoIterator<Item = &'a NewJobRow>,
) -> Result<Rows, Error> {
    let rows: Vec<&NewJobRow> = rows.into_iter().collect();
    if rows.is_empty() {
        return Ok(Rows::new());
    }
    // The prompt is not sent back: the caller has it (see `apply`).
    let inserted: Vec<ListedJobRow> = diesel::insert_into(jobs::table)
        .values(rows)
        .returning(ListedJobRow::as_returning())
        .get_results(conn)
        .await?;
    Ok(by_id(inserted.into_iter().map(JobRow::from).collect()))
}

/// Starts an attempt of each job still QUEUED or RUNNING, with one statement.
pub(super) async fn start_attempts(
    conn: &mut AsyncPgConnection,
    ids: impl IntoIterator<Item = JobId>,
) -> Result<Rows, Error> {
    let ids: Vec<JobId> = ids.into_iter().collect();
    if ids.is_empty() {
        return Ok(Rows::new());
    }
    let now = chrono::Utc::now();
    let started: Vec<JobRow> = diesel::update(jobs::table)
        .filter(jobs::id.eq_any(ids))
        .filter(jobs::status.eq_any([JobStatus::Queued.as_str(), JobStatus::Running.as_str()]))
        .set((
            jobs::status.eq(JobStatus::Running.as_str()),
            jobs::attempts.eq(jobs::attempts + 1),
            jobs::started_at.eq(now),
            jobs::updated_at.eq(now),
        ))
        .returning(JobRow::as_returning())
        .get_results(conn)
        .await?;
    Ok(by_id(started))
}

/// The columns of `jobs` an attempt's end changes, one array per column (for `unnest`).
#[derive(Default)]
struct EndColumns {
    ids: Vec<JobId>,
    attempts: Vec<i32>,
    statuses: Vec<&'static str>,
    codes: Vec<Option<String>>,
    messages: Vec<Option<String>>,
    sequences: Vec<Option<i64>>,
}

/// Ends each attempt that still owns its job, with one fenced statement, then writes what
/// the ended ones leave ([`insert_ended`]).
pub(super) async fn end_attempts<'a>(
    conn: &mut AsyncPgConnection,
    ends: impl IntoIterator<Item = &'a End>,
) -> Result<Rows, Error> {
    use diesel::sql_types::{Array, Int4, Int8, Nullable, Text, Timestamptz, Uuid};
    let ends: Vec<&End> = ends.into_iter().collect();
    if ends.is_empty() {
        return Ok(Rows::new());
    }
    let mut c = EndColumns::default();
    for e in &ends {
        c.ids.push(e.id);
        c.attempts.push(to_i32(e.attempt));
        c.statuses.push(e.status.as_str());
        c.codes.push(e.error.as_ref().map(|e| e.code.clone()));
        c.messages.push(e.error.as_ref().map(|e| e.message.clone()));
        c.sequences.push(e.terminal_sequence);
    }
    // Fenced: only a job still RUNNING the same attempt ends; a stale attempt writes nothing.
    let ended: Vec<JobRow> = diesel::sql_query(
        "UPDATE jobs SET status = v.status, error_code = v.code, error_message = v.message, \
         last_sequence = coalesce(v.seq, jobs.last_sequence), finished_at = $7, updated_at = $7 \
         FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::text[], $5::text[], $6::int8[]) \
           AS v(id, attempt, status, code, message, seq) \
         WHERE jobs.id = v.id AND jobs.status = 'running' AND jobs.attempts = v.attempt \
         RETURNING jobs.*",
    )
    .bind::<Array<Uuid>, _>(c.ids)
    .bind::<Array<Int4>, _>(c.attempts)
    .bind::<Array<Text>, _>(c.statuses)
    .bind::<Array<Nullable<Text>>, _>(c.codes)
    .bind::<Array<Nullable<Text>>, _>(c.messages)
    .bind::<Array<Nullable<Int8>>, _>(c.sequences)
    .bind::<Timestamptz, _>(chrono::Utc::now())
    .load(conn)
    .await?;
    let ended = by_id(ended);
    let mine: Vec<&End> = ends
        .iter()
        .copied()
        .filter(|e| ended.contains_key(&e.id))
        .collect();
    if !mine.is_empty() {
        insert_ended(conn, &mine).await?;
    }
    Ok(ended)
}

/// What the attempts that did end leave besides the job's row: results, failure records,
/// event logs and progress history, one multi-row statement each.
async fn insert_ended(conn: &mut AsyncPgConnection, mine: &[&End]) -> Result<(), Error> {
    let results: Vec<&ResultRow> = mine.iter().map(|e| &e.result).collect();
    diesel::insert_into(job_results::table)
        .values(results)
        .execute(conn)
        .await?;
    let failures: Vec<AttemptFailureRow<'_>> = mine
        .iter()
        .filter_map(|e| {
            e.error.as_ref().map(|error| AttemptFailureRow {
                job_id: e.id,
                attempt: to_i32(e.attempt),
                error_code: &error.code,
                message: &error.message,
                retryable: e.retryable,
            })
        })
        .collect();
    if !failures.is_empty() {
        diesel::insert_into(job_attempt_failures::table)
            .values(failures)
            .on_conflict_do_nothing()
            .execute(conn)
            .await?;
    }
    let logs: Vec<(JobId, &crate::events::archive::Archive)> = mine
        .iter()
        .filter_map(|e| e.log.as_ref().map(|log| (e.id, log)))
        .collect();
    super::super::history::upsert_logs(conn, &logs).await?;
    let history: Vec<&NewProgressRow> = mine.iter().flat_map(|e| e.history.iter()).collect();
    // Each statement stays under the bind limit however long the histories are.
    for chunk in history.chunks(8192) {
        diesel::insert_into(job_progress_events::table)
            .values(chunk.to_vec())
            .execute(conn)
            .await?;
    }
    Ok(())
}
