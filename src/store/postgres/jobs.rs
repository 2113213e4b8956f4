//! [`JobStore`] on Postgres: a job's row, the reconciler's reads, and retention. A job
//! without an idempotency key is inserted by the group commit ([`super::writer`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::{
    ExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper,
    sql_types::{BigInt, Nullable, Timestamptz},
};
use diesel_async::RunQueryDsl;
use tracing::instrument;

use super::{IDEMPOTENCY_WINDOW, PgStore};
use crate::{
    job::{Job, JobId, JobStatus, NewJob},
    store::{
        Deletable, Error, Inserted, JobStore, StoredResult,
        models::{JobRow, NewJobRow, ResultRow},
        schema::{job_results, jobs},
    },
};

/// Which jobs `j` a cleanup deletes ($1: ended before this time): ended jobs, and a batch's
/// jobs only once all of them ended before then. One text for the delete and its dry run, so
/// the two cannot disagree.
const DELETABLE: &str = "j.status IN ('completed', 'failed', 'cancelled') AND j.finished_at < $1 \
     AND (j.batch_id IS NULL OR NOT EXISTS ( \
       SELECT 1 FROM jobs o WHERE o.batch_id = j.batch_id \
         AND (o.status NOT IN ('completed', 'failed', 'cancelled') \
              OR o.finished_at IS NULL OR o.finished_at >= $1)))";

#[async_trait]
impl JobStore for PgStore {
    #[instrument(skip_all, fields(job_id = %job.id))]
    async fn insert_job(&self, job: &NewJob) -> Result<Inserted, Error> {
        if job.idempotency_key.is_none() {
            // A fresh id cannot conflict: group-committed with other jobs' writes.
            let row = self.writer().insert(NewJobRow::from_new(job)).await?;
            return Ok(Inserted {
                job: row.try_into()?,
                created: true,
            });
        }
        let mut conn = self.conn().await?;
        // Twice at most: a key older than the idempotency window is released, then reused.
        for _ in 0..2 {
            let inserted: Option<JobRow> = diesel::insert_into(jobs::table)
                .values(NewJobRow::from_new(job))
                .on_conflict_do_nothing()
                .returning(JobRow::as_returning())
                .get_result(&mut conn)
                .await
                .optional()?;
            if let Some(row) = inserted {
                return Ok(Inserted {
                    job: row.try_into()?,
                    created: true,
                });
            }
            // Conflict: the idempotency key was used before (ids are fresh UUIDs).
            let key = job.idempotency_key.as_deref().unwrap_or_default();
            let earlier: Option<JobRow> = jobs::table
                .filter(jobs::tenant.eq(&job.tenant))
                .filter(jobs::idempotency_key.eq(key))
                .select(JobRow::as_select())
                .first(&mut conn)
                .await
                .optional()?;
            let Some(row) = earlier else {
                continue; // released meanwhile
            };
            if row.created_at > Utc::now() - IDEMPOTENCY_WINDOW {
                return Ok(Inserted {
                    job: row.try_into()?,
                    created: false,
                });
            }
            diesel::update(jobs::table.find(row.id))
                .filter(jobs::tenant.eq(&job.tenant))
                .filter(jobs::idempotency_key.eq(key))
                .set(jobs::idempotency_key.eq(None::<String>))
                .execute(&mut conn)
                .await?;
        }
        Err(Error::Unavailable(
            "the idempotency key is being released concurrently; retry".into(),
        ))
    }

    async fn discard_job(&self, id: JobId) -> Result<bool, Error> {
        let mut conn = self.conn().await?;
        let deleted = diesel::delete(jobs::table.find(id))
            .filter(jobs::status.eq(JobStatus::Queued.as_str()))
            .filter(jobs::attempts.eq(0))
            .execute(&mut conn)
            .await?;
        Ok(deleted == 1)
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>, Error> {
        let mut conn = self.conn().await?;
        let row: Option<JobRow> = jobs::table
            .find(id)
            .select(JobRow::as_select())
            .first(&mut conn)
            .await
            .optional()?;
        row.map(Job::try_from).transpose()
    }

    async fn get_result(&self, id: JobId) -> Result<Option<StoredResult>, Error> {
        let mut conn = self.conn().await?;
        let row: Option<(JobRow, Option<ResultRow>)> = jobs::table
            .left_join(job_results::table)
            .filter(jobs::id.eq(id))
            .select((JobRow::as_select(), Option::<ResultRow>::as_select()))
            .first(&mut conn)
            .await
            .optional()?;
        match row {
            None => Ok(None),
            Some((job, result)) => Ok(Some(StoredResult {
                job: job.try_into()?,
                outcome: result.map(Into::into),
            })),
        }
    }

    #[instrument(skip_all, fields(job_id = %id))]
    async fn cancel_queued(&self, id: JobId) -> Result<Option<Job>, Error> {
        let mut conn = self.conn().await?;
        let now = chrono::Utc::now();
        let row: Option<JobRow> = diesel::update(jobs::table.find(id))
            .filter(jobs::status.eq_any([JobStatus::Queued.as_str(), JobStatus::Running.as_str()]))
            .set((
                jobs::status.eq(JobStatus::Cancelled.as_str()),
                jobs::finished_at.eq(now),
                jobs::updated_at.eq(now),
            ))
            .returning(JobRow::as_returning())
            .get_result(&mut conn)
            .await
            .optional()?;
        row.map(Job::try_from).transpose()
    }

    async fn set_last_sequence(&self, id: JobId, sequence: u64) -> Result<(), Error> {
        let mut conn = self.conn().await?;
        diesel::update(jobs::table.find(id))
            .set(jobs::last_sequence.eq(i64::try_from(sequence).unwrap_or(i64::MAX)))
            .execute(&mut conn)
            .await?;
        Ok(())
    }

    async fn set_last_sequences(&self, sequences: &[(JobId, u64)]) -> Result<(), Error> {
        if sequences.is_empty() {
            return Ok(());
        }
        let (ids, seqs): (Vec<uuid::Uuid>, Vec<i64>) = sequences
            .iter()
            .map(|(id, s)| (*id, i64::try_from(*s).unwrap_or(i64::MAX)))
            .unzip();
        let mut conn = self.conn().await?;
        diesel::sql_query(
            "UPDATE jobs SET last_sequence = v.seq \
             FROM unnest($1::uuid[], $2::bigint[]) AS v(id, seq) WHERE jobs.id = v.id",
        )
        .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(ids)
        .bind::<diesel::sql_types::Array<diesel::sql_types::BigInt>, _>(seqs)
        .execute(&mut conn)
        .await?;
        Ok(())
    }

    async fn unfinished(
        &self,
        before: DateTime<Utc>,
        after: Option<JobId>,
        limit: i64,
    ) -> Result<Vec<Job>, Error> {
        let mut conn = self.conn().await?;
        let mut query = jobs::table
            .filter(jobs::status.eq_any([JobStatus::Queued.as_str(), JobStatus::Running.as_str()]))
            .filter(jobs::updated_at.lt(before))
            .order(jobs::id.asc())
            .limit(limit)
            .select(JobRow::as_select())
            .into_boxed();
        if let Some(id) = after {
            query = query.filter(jobs::id.gt(id));
        }
        let rows: Vec<JobRow> = query.load(&mut conn).await?;
        rows.into_iter().map(Job::try_from).collect()
    }

    async fn unfinished_among(&self, ids: &[JobId]) -> Result<Vec<JobId>, Error> {
        let mut conn = self.conn().await?;
        Ok(jobs::table
            .filter(jobs::id.eq_any(ids))
            .filter(jobs::status.eq_any([JobStatus::Queued.as_str(), JobStatus::Running.as_str()]))
            .select(jobs::id)
            .load(&mut conn)
            .await?)
    }

    /// How many jobs [`JobStore::delete_finished`] would delete for `before`, and their first
    /// and last end.
    async fn deletable(&self, before: DateTime<Utc>) -> Result<Deletable, Error> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = BigInt)]
            n: i64,
            #[diesel(sql_type = Nullable<Timestamptz>)]
            oldest: Option<DateTime<Utc>>,
            #[diesel(sql_type = Nullable<Timestamptz>)]
            newest: Option<DateTime<Utc>>,
        }
        let mut conn = self.conn().await?;
        let row: Row = diesel::sql_query(format!(
            "SELECT count(*) AS n, min(j.finished_at) AS oldest, max(j.finished_at) AS newest \
             FROM jobs j WHERE {DELETABLE}"
        ))
        .bind::<Timestamptz, _>(before)
        .get_result(&mut conn)
        .await?;
        Ok(Deletable {
            jobs: u64::try_from(row.n).unwrap_or_default(),
            oldest: row.oldest,
            newest: row.newest,
        })
    }

    /// Deletes up to `limit` jobs that ended before `before` (a batch's jobs only once all of
    /// them did), then the batches created before `before` that have no job left.
    async fn delete_finished(&self, before: DateTime<Utc>, limit: i64) -> Result<u64, Error> {
        let mut conn = self.conn().await?;
        // Results and attempt failures go with their job (ON DELETE CASCADE); progress history
        // and event logs have no foreign key (it would cost a lookup per row written) and go
        // explicitly.
        #[derive(diesel::QueryableByName)]
        struct Deleted {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let deleted: Deleted = diesel::sql_query(format!(
            "WITH gone AS ( \
               DELETE FROM jobs WHERE id IN (SELECT j.id FROM jobs j WHERE {DELETABLE} LIMIT $2) \
               RETURNING id), \
             history AS ( \
               DELETE FROM job_progress_events p USING gone WHERE p.job_id = gone.id), \
             logs AS ( \
               DELETE FROM job_event_logs l USING gone WHERE l.job_id = gone.id) \
             SELECT count(*) AS n FROM gone"
        ))
        .bind::<Timestamptz, _>(before)
        .bind::<BigInt, _>(limit)
        .get_result(&mut conn)
        .await?;
        let deleted = deleted.n;
        diesel::sql_query(
            "DELETE FROM batches b WHERE b.created_at < $1 \
               AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.batch_id = b.id)",
        )
        .bind::<Timestamptz, _>(before)
        .execute(&mut conn)
        .await?;
        Ok(deleted as u64)
    }

    async fn ping(&self) -> Result<(), Error> {
        let mut conn = self.conn().await?;
        diesel::sql_query("SELECT 1").execute(&mut conn).await?;
        Ok(())
    }
}
