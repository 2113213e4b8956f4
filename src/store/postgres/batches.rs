//! [`BatchStore`] on Postgres: one transaction for a batch and all its jobs, one statement for
//! a batch's job states.
//!
//! The batch row types live here rather than in `models.rs`: nothing else reads them.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::{
    ExpressionMethods, NullableExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper,
    prelude::{Insertable, Queryable, Selectable},
};
use diesel_async::{AsyncConnection, RunQueryDsl};
use tracing::instrument;
use uuid::Uuid;

use super::{IDEMPOTENCY_WINDOW, PgStore};
use crate::{
    batch::{Batch, BatchId, Member, NewBatch, Snapshot},
    job::{JobStatus, NewJob},
    store::{
        BatchStore, Error, InsertedBatch,
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

#[async_trait]
impl BatchStore for PgStore {
    #[instrument(skip_all, fields(batch_id = %batch.id, jobs = jobs.len()))]
    async fn insert_batch(
        &self,
        batch: &NewBatch,
        jobs: &[NewJob],
    ) -> Result<InsertedBatch, Error> {
        let metadata = serde_json::to_value(&batch.metadata)
            .map_err(|e| Error::Corrupt(format!("batch metadata: {e}")))?;
        let mut conn = self.conn().await?;
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

    async fn get_batch(&self, id: BatchId) -> Result<Option<Snapshot>, Error> {
        let mut conn = self.conn().await?;
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
}
