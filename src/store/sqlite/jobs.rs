//! [`JobStore`] on SQLite: a job's row, the reconciler's reads, and retention.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::{
    ExpressionMethods, OptionalExtension, QueryDsl, RunQueryDsl, SelectableHelper,
    sql_types::{BigInt, Nullable},
};
use tracing::instrument;

use super::{
    SqliteStore, insert_row, key,
    rows::{self, JobRow, ResultRow, micros, time_opt},
    schema::{job_results, jobs},
};
use crate::{
    job::{Job, JobId, JobStatus, NewJob},
    store::{Deletable, Error, Inserted, JobStore, StoredResult, postgres::IDEMPOTENCY_WINDOW},
};

/// The stored statuses of a job not yet ended.
const UNFINISHED: [&str; 2] = ["queued", "running"];

/// Which jobs `j` a cleanup deletes (?1: ended before this time, in µs): ended jobs, and a
/// batch's jobs only once all of them ended before then. One text for the delete and its dry
/// run, so the two cannot disagree.
const DELETABLE: &str = "j.status IN ('completed', 'failed', 'cancelled') AND j.finished_at < ?1 \
     AND (j.batch_id IS NULL OR NOT EXISTS ( \
       SELECT 1 FROM jobs o WHERE o.batch_id = j.batch_id \
         AND (o.status NOT IN ('completed', 'failed', 'cancelled') \
              OR o.finished_at IS NULL OR o.finished_at >= ?1)))";

#[async_trait]
impl JobStore for SqliteStore {
    #[instrument(skip_all, fields(job_id = %job.id))]
    async fn insert_job(&self, job: &NewJob) -> Result<Inserted, Error> {
        let job = job.clone();
        self.write(move |conn| {
            if let Some(row) = insert_row(conn, &job, None)? {
                return Ok(Inserted {
                    job: row.try_into()?,
                    created: true,
                });
            }
            // Conflict: the idempotency key was used before (ids are fresh UUIDs).
            let key = job.idempotency_key.as_deref().unwrap_or_default();
            let earlier: JobRow = jobs::table
                .filter(jobs::tenant.eq(&job.tenant))
                .filter(jobs::idempotency_key.eq(key))
                .select(JobRow::as_select())
                .get_result(conn)?;
            let window = micros(Utc::now() - IDEMPOTENCY_WINDOW);
            if earlier.created_at > window {
                return Ok(Inserted {
                    job: earlier.try_into()?,
                    created: false,
                });
            }
            // Older than the window: the key is released and used again (in this same
            // transaction, so no other writer sees it free).
            diesel::update(jobs::table.find(&earlier.id))
                .set(jobs::idempotency_key.eq(None::<String>))
                .execute(conn)?;
            let row = insert_row(conn, &job, None)?
                .ok_or_else(|| Error::Corrupt("idempotency key still taken".into()))?;
            Ok(Inserted {
                job: row.try_into()?,
                created: true,
            })
        })
        .await
    }

    async fn discard_job(&self, id: JobId) -> Result<bool, Error> {
        self.write(move |conn| {
            let deleted = diesel::delete(jobs::table.find(key(id)))
                .filter(jobs::status.eq(JobStatus::Queued.as_str()))
                .filter(jobs::attempts.eq(0))
                .execute(conn)?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>, Error> {
        self.run(move |conn| {
            let row: Option<JobRow> = jobs::table
                .find(key(id))
                .select(JobRow::as_select())
                .get_result(conn)
                .optional()?;
            row.map(Job::try_from).transpose()
        })
        .await
    }

    async fn get_result(&self, id: JobId) -> Result<Option<StoredResult>, Error> {
        self.run(move |conn| {
            let row: Option<(JobRow, Option<ResultRow>)> = jobs::table
                .left_join(job_results::table)
                .filter(jobs::id.eq(key(id)))
                .select((JobRow::as_select(), Option::<ResultRow>::as_select()))
                .get_result(conn)
                .optional()?;
            match row {
                None => Ok(None),
                Some((job, result)) => Ok(Some(StoredResult {
                    job: job.try_into()?,
                    outcome: result.map(Into::into),
                })),
            }
        })
        .await
    }

    #[instrument(skip_all, fields(job_id = %id))]
    async fn cancel_queued(&self, id: JobId) -> Result<Option<Job>, Error> {
        self.write(move |conn| {
            let now = micros(chrono::Utc::now());
            let n = diesel::update(jobs::table.find(key(id)))
                .filter(jobs::status.eq_any(UNFINISHED))
                .set((
                    jobs::status.eq(JobStatus::Cancelled.as_str()),
                    jobs::finished_at.eq(now),
                    jobs::updated_at.eq(now),
                ))
                .execute(conn)?;
            if n == 0 {
                return Ok(None);
            }
            let row: JobRow = jobs::table
                .find(key(id))
                .select(JobRow::as_select())
                .get_result(conn)?;
            Ok(Some(Job::try_from(row)?))
        })
        .await
    }

    async fn set_last_sequence(&self, id: JobId, sequence: u64) -> Result<(), Error> {
        self.set_last_sequences(&[(id, sequence)]).await
    }

    async fn set_last_sequences(&self, sequences: &[(JobId, u64)]) -> Result<(), Error> {
        if sequences.is_empty() {
            return Ok(());
        }
        let sequences = sequences.to_vec();
        self.write(move |conn| {
            for &(id, sequence) in &sequences {
                diesel::update(jobs::table.find(key(id)))
                    .set(jobs::last_sequence.eq(i64::try_from(sequence).unwrap_or(i64::MAX)))
                    .execute(conn)?;
            }
            Ok(())
        })
        .await
    }

    async fn unfinished(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        after: Option<JobId>,
        limit: i64,
    ) -> Result<Vec<Job>, Error> {
        self.run(move |conn| {
            let mut query = jobs::table
                .filter(jobs::status.eq_any(UNFINISHED))
                .filter(jobs::updated_at.lt(micros(before)))
                .order(jobs::id.asc())
                .limit(limit)
                .select(JobRow::as_select())
                .into_boxed();
            if let Some(id) = after {
                query = query.filter(jobs::id.gt(key(id)));
            }
            let rows: Vec<JobRow> = query.load(conn)?;
            rows.into_iter().map(Job::try_from).collect()
        })
        .await
    }

    async fn unfinished_among(&self, ids: &[JobId]) -> Result<Vec<JobId>, Error> {
        let ids: Vec<String> = ids.iter().copied().map(key).collect();
        self.run(move |conn| {
            let found: Vec<String> = jobs::table
                .filter(jobs::id.eq_any(ids))
                .filter(jobs::status.eq_any(UNFINISHED))
                .select(jobs::id)
                .load(conn)?;
            found.iter().map(|id| rows::uuid(id)).collect()
        })
        .await
    }

    /// How many jobs [`JobStore::delete_finished`] would delete for `before`, and their first
    /// and last end.
    async fn deletable(&self, before: DateTime<Utc>) -> Result<Deletable, Error> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = BigInt)]
            n: i64,
            #[diesel(sql_type = Nullable<BigInt>)]
            oldest: Option<i64>,
            #[diesel(sql_type = Nullable<BigInt>)]
            newest: Option<i64>,
        }
        let before = micros(before);
        let row: Row = self
            .run(move |conn| {
                Ok(diesel::sql_query(format!(
                    "SELECT count(*) AS n, min(j.finished_at) AS oldest, max(j.finished_at) AS newest \
                     FROM jobs j WHERE {DELETABLE}"
                ))
                .bind::<BigInt, _>(before)
                .get_result(conn)?)
            })
            .await?;
        Ok(Deletable {
            jobs: u64::try_from(row.n).unwrap_or_default(),
            oldest: time_opt(row.oldest)?,
            newest: time_opt(row.newest)?,
        })
    }

    /// Deletes up to `limit` jobs that ended before `before` (a batch's jobs only once all of
    /// them did), then the batches created before `before` that have no job left.
    async fn delete_finished(&self, before: DateTime<Utc>, limit: i64) -> Result<u64, Error> {
        let before = micros(before);
        self.write(move |conn| {
            // Results, attempt failures, progress and event logs go with their job (ON DELETE
            // CASCADE).
            let deleted = diesel::sql_query(format!(
                "DELETE FROM jobs WHERE id IN (SELECT j.id FROM jobs j WHERE {DELETABLE} LIMIT ?2)"
            ))
            .bind::<BigInt, _>(before)
            .bind::<BigInt, _>(limit)
            .execute(conn)?;
            diesel::sql_query(
                "DELETE FROM batches WHERE created_at < ?1 \
                       AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.batch_id = batches.id)",
            )
            .bind::<BigInt, _>(before)
            .execute(conn)?;
            Ok(deleted as u64)
        })
        .await
    }

    async fn ping(&self) -> Result<(), Error> {
        self.run(|conn| {
            diesel::sql_query("SELECT 1").execute(conn)?;
            Ok(())
        })
        .await
    }
}
