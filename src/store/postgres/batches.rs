//! Batches on Postgres: one transaction for a batch and all its jobs, one statement for a
//! batch's job states, and cleanup that takes a batch's jobs only together.
//!
//! The batch row types live here rather than in `models.rs`: nothing else reads them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::{
    ExpressionMethods, NullableExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper,
    prelude::{Insertable, Queryable, Selectable},
    sql_types::{BigInt, Nullable, Timestamptz},
};
use diesel_async::{AsyncConnection, RunQueryDsl};
use tracing::instrument;
use uuid::Uuid;

use super::{IDEMPOTENCY_WINDOW, PgStore};
use crate::{
    batch::{Batch, BatchId, Member, NewBatch, Snapshot},
    job::{JobStatus, NewJob},
    store::{
        Deletable, Error, InsertedBatch,
        models::NewJobRow,
        schema::{batches, job_results, jobs},
    },
};

/// Jobs per INSERT statement: 14 columns each keeps a statement well below Postgres's 65,535
/// bind parameters, with room for columns added later.
const JOBS_PER_INSERT: usize = 500;

/// A row of `batches`.
#[derive(Queryable, Selectable, Debug)]
#[diesel(table_name = batches, check_for_backend(diesel::pg::Pg))]
struct BatchRow {
    id: Uuid,
    display_name: String,
    metadata: serde_json::Value,
    created_at: DateTime<Utc>,
    tenant: String,
}

/// A new row of `batches`.
#[derive(Insertable, Debug)]
#[diesel(table_name = batches)]
struct NewBatchRow<'a> {
    id: Uuid,
    display_name: &'a str,
    metadata: serde_json::Value,
    idempotency_key: Option<&'a str>,
    tenant: &'a str,
}

/// One job of a batch: id, status, last sequence, end, and its result's tokens and cost.
type MemberRow = (
    Uuid,
    String,
    i64,
    Option<DateTime<Utc>>,
    Option<i64>,
    Option<i64>,
    Option<f64>,
);

#[instrument(skip_all, fields(batch_id = %batch.id, jobs = jobs.len()))]
pub(super) async fn insert_batch(
    store: &PgStore,
    batch: &NewBatch,
    jobs: &[NewJob],
) -> Result<InsertedBatch, Error> {
    let metadata = serde_json::to_value(&batch.metadata)
        .map_err(|e| Error::Corrupt(format!("batch metadata: {e}")))?;
    let mut conn = store.conn().await?;
    // Twice at most: a key older than the idempotency window is released, then reused.
    for _ in 0..2 {
        let created = conn
            .transaction::<_, Error, _>(async |conn| {
                let inserted = diesel::insert_into(batches::table)
                    .values(NewBatchRow {
                        id: batch.id,
                        display_name: &batch.display_name,
                        metadata: metadata.clone(),
                        idempotency_key: batch.idempotency_key.as_deref(),
                        tenant: &batch.tenant,
                    })
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?;
                if inserted == 0 {
                    return Ok(false);
                }
                for chunk in jobs.chunks(JOBS_PER_INSERT) {
                    let rows: Vec<_> = chunk
                        .iter()
                        .map(|j| (NewJobRow::from_new(j), jobs::batch_id.eq(batch.id)))
                        .collect();
                    diesel::insert_into(jobs::table)
                        .values(rows)
                        .execute(conn)
                        .await?;
                }
                Ok(true)
            })
            .await?;
        if created {
            return Ok(InsertedBatch {
                id: batch.id,
                created: true,
            });
        }
        // Conflict: the idempotency key was used before (ids are fresh UUIDs).
        let key = batch.idempotency_key.as_deref().unwrap_or_default();
        let earlier: Option<(Uuid, DateTime<Utc>)> = batches::table
            .filter(batches::tenant.eq(&batch.tenant))
            .filter(batches::idempotency_key.eq(key))
            .select((batches::id, batches::created_at))
            .first(&mut conn)
            .await
            .optional()?;
        let Some((id, created_at)) = earlier else {
            continue; // released meanwhile
        };
        if created_at > Utc::now() - IDEMPOTENCY_WINDOW {
            return Ok(InsertedBatch { id, created: false });
        }
        diesel::update(batches::table.find(id))
            .filter(batches::tenant.eq(&batch.tenant))
            .filter(batches::idempotency_key.eq(key))
            .set(batches::idempotency_key.eq(None::<String>))
            .execute(&mut conn)
            .await?;
    }
    Err(Error::Unavailable(
        "the idempotency key is being released concurrently; retry".into(),
    ))
}

pub(super) async fn get_batch(store: &PgStore, id: BatchId) -> Result<Option<Snapshot>, Error> {
    let mut conn = store.conn().await?;
    let row: Option<BatchRow> = batches::table
        .find(id)
        .select(BatchRow::as_select())
        .first(&mut conn)
        .await
        .optional()?;
    let Some(row) = row else { return Ok(None) };
    let rows: Vec<MemberRow> = jobs::table
        .left_join(job_results::table)
        .filter(jobs::batch_id.eq(id))
        .order(jobs::id.asc())
        .select((
            jobs::id,
            jobs::status,
            jobs::last_sequence,
            jobs::finished_at,
            job_results::input_tokens.nullable(),
            job_results::output_tokens.nullable(),
            job_results::cost_usd.nullable(),
        ))
        .load(&mut conn)
        .await?;
    let u = |v: i64| u64::try_from(v).unwrap_or(0);
    let members = rows
        .into_iter()
        .map(
            |(id, status, last_sequence, finished_at, input, output, cost)| {
                Ok(Member {
                    id,
                    status: JobStatus::parse(&status)
                        .ok_or_else(|| Error::Corrupt(format!("job {id}: bad status")))?,
                    last_sequence: u(last_sequence),
                    finished_at,
                    tokens: input.zip(output).map(|(i, o)| (u(i), u(o))),
                    cost_usd: cost,
                })
            },
        )
        .collect::<Result<Vec<_>, Error>>()?;
    let metadata: BTreeMap<String, String> = serde_json::from_value(row.metadata)
        .map_err(|_| Error::Corrupt(format!("batch {id}: bad metadata")))?;
    Ok(Some(Snapshot {
        batch: Batch {
            id: row.id,
            display_name: row.display_name,
            metadata,
            created_at: row.created_at,
            tenant: row.tenant,
        },
        members,
    }))
}

/// Which jobs `j` a cleanup deletes ($1: ended before this time): ended jobs, and a batch's
/// jobs only once all of them ended before then. One text for the delete and its dry run, so
/// the two cannot disagree.
const DELETABLE: &str = "j.status IN ('completed', 'failed', 'cancelled') AND j.finished_at < $1 \
     AND (j.batch_id IS NULL OR NOT EXISTS ( \
       SELECT 1 FROM jobs o WHERE o.batch_id = j.batch_id \
         AND (o.status NOT IN ('completed', 'failed', 'cancelled') \
              OR o.finished_at IS NULL OR o.finished_at >= $1)))";

/// How many jobs [`delete_finished`] would delete for `before`, and their first and last end.
pub(super) async fn deletable(store: &PgStore, before: DateTime<Utc>) -> Result<Deletable, Error> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        n: i64,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        oldest: Option<DateTime<Utc>>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        newest: Option<DateTime<Utc>>,
    }
    let mut conn = store.conn().await?;
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
pub(super) async fn delete_finished(
    store: &PgStore,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, Error> {
    let mut conn = store.conn().await?;
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
