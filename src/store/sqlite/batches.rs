//! [`BatchStore`] on SQLite: one transaction for a batch and all its jobs, one statement for a
//! batch's job states.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::Utc;
use diesel::{
    ExpressionMethods, NullableExpressionMethods, OptionalExtension, QueryDsl, RunQueryDsl,
};
use tracing::instrument;

use super::{
    SqliteStore, insert_row,
    rows::{micros, time, time_opt, uuid},
    schema::{batches, job_results, jobs},
};
use crate::{
    batch::{Batch, BatchId, Member, NewBatch, Snapshot},
    job::{JobStatus, NewJob},
    store::{BatchStore, Error, InsertedBatch, postgres::IDEMPOTENCY_WINDOW},
};

/// One job of a batch: id, status, last sequence, end, and its result's tokens and cost.
type MemberRow = (
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<f64>,
);

#[async_trait]
impl BatchStore for SqliteStore {
    #[instrument(skip_all, fields(batch_id = %batch.id, jobs = jobs.len()))]
    async fn insert_batch(
        &self,
        batch: &NewBatch,
        jobs: &[NewJob],
    ) -> Result<InsertedBatch, Error> {
        let metadata = serde_json::to_string(&batch.metadata)
            .map_err(|e| Error::Corrupt(format!("batch metadata: {e}")))?;
        let (batch, jobs) = (batch.clone(), jobs.to_vec());
        self.write(move |conn| {
            let key = batch.idempotency_key.as_deref();
            if let Some(key) = key {
                let earlier: Option<(String, i64)> = batches::table
                    .filter(batches::tenant.eq(&batch.tenant))
                    .filter(batches::idempotency_key.eq(key))
                    .select((batches::id, batches::created_at))
                    .get_result(conn)
                    .optional()?;
                if let Some((id, created_at)) = earlier {
                    if time(created_at)? > Utc::now() - IDEMPOTENCY_WINDOW {
                        return Ok(InsertedBatch {
                            id: uuid(&id)?,
                            created: false,
                        });
                    }
                    // Older than the window: released, in this same transaction.
                    diesel::update(batches::table.find(&id))
                        .set(batches::idempotency_key.eq(None::<String>))
                        .execute(conn)?;
                }
            }
            diesel::insert_into(batches::table)
                .values((
                    batches::id.eq(batch.id.to_string()),
                    batches::display_name.eq(&batch.display_name),
                    batches::metadata.eq(&metadata),
                    batches::idempotency_key.eq(key),
                    batches::created_at.eq(micros(Utc::now())),
                    batches::tenant.eq(&batch.tenant),
                ))
                .execute(conn)?;
            for job in &jobs {
                // Batch jobs carry no idempotency key, so nothing can conflict.
                insert_row(conn, job, Some(batch.id))?.ok_or_else(|| {
                    Error::Corrupt(format!("job {} of batch {} exists", job.id, batch.id))
                })?;
            }
            Ok(InsertedBatch {
                id: batch.id,
                created: true,
            })
        })
        .await
    }

    async fn get_batch(&self, id: BatchId) -> Result<Option<Snapshot>, Error> {
        self.run(move |conn| {
            let row: Option<(String, String, String, i64, String)> = batches::table
                .find(id.to_string())
                .select((
                    batches::id,
                    batches::display_name,
                    batches::metadata,
                    batches::created_at,
                    batches::tenant,
                ))
                .get_result(conn)
                .optional()?;
            let Some((_, display_name, metadata, created_at, tenant)) = row else {
                return Ok(None);
            };
            let rows: Vec<MemberRow> = jobs::table
                .left_join(job_results::table)
                .filter(jobs::batch_id.eq(id.to_string()))
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
                .load(conn)?;
            let u = |v: i64| u64::try_from(v).unwrap_or(0);
            let members = rows
                .into_iter()
                .map(
                    |(job, status, last_sequence, finished_at, input, output, cost)| {
                        Ok(Member {
                            status: JobStatus::parse(&status)
                                .ok_or_else(|| Error::Corrupt(format!("job {job}: bad status")))?,
                            id: uuid(&job)?,
                            last_sequence: u(last_sequence),
                            finished_at: time_opt(finished_at)?,
                            tokens: input.zip(output).map(|(i, o)| (u(i), u(o))),
                            cost_usd: cost,
                        })
                    },
                )
                .collect::<Result<Vec<_>, Error>>()?;
            let metadata: BTreeMap<String, String> = serde_json::from_str(&metadata)
                .map_err(|_| Error::Corrupt(format!("batch {id}: bad metadata")))?;
            Ok(Some(Snapshot {
                batch: Batch {
                    id,
                    display_name,
                    metadata,
                    created_at: time(created_at)?,
                    tenant,
                },
                members,
            }))
        })
        .await
    }
}
