//! The batches' contract ([`llm_jobs::store::BatchStore`]) on both SQL backends: a batch reads
//! back with its jobs in request order; a batch idempotency key used within the window returns
//! the first batch and stores nothing, per tenant.

use std::collections::BTreeMap;

use anyhow::Context;
use llm_jobs::{
    batch::NewBatch,
    job::{JobStatus, NewJob},
    store::{InsertedBatch, Store},
};

use super::{retention::new_job, stores::store_contract};

store_contract! {
    a_batch_reads_back_with_its_jobs_in_request_order;
    a_used_batch_key_returns_the_first_batch_and_stores_nothing;
}

/// A batch of `tenant` with `key`.
fn new_batch(tenant: &str, key: Option<&str>) -> NewBatch {
    NewBatch {
        id: uuid::Uuid::now_v7(),
        display_name: "nightly".into(),
        metadata: BTreeMap::from([("team".to_owned(), "search".to_owned())]),
        idempotency_key: key.map(str::to_owned),
        tenant: tenant.into(),
    }
}

/// `n` jobs of `tenant`, in request order.
fn jobs_of(tenant: &str, n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|_| NewJob {
            tenant: tenant.into(),
            ..new_job()
        })
        .collect()
}

async fn a_batch_reads_back_with_its_jobs_in_request_order(
    store: &dyn Store,
) -> anyhow::Result<()> {
    let batch = new_batch("acme", None);
    let jobs = jobs_of("acme", 3);
    assert_eq!(
        store.insert_batch(&batch, &jobs).await?,
        InsertedBatch {
            id: batch.id,
            created: true
        }
    );
    let read = store.get_batch(batch.id).await?.context("a stored batch")?;
    assert_eq!(
        (
            read.batch.id,
            &read.batch.display_name,
            &read.batch.metadata,
            &read.batch.tenant
        ),
        (
            batch.id,
            &batch.display_name,
            &batch.metadata,
            &batch.tenant
        )
    );
    let members: Vec<_> = read.members.iter().map(|m| (m.id, m.status)).collect();
    let queued: Vec<_> = jobs.iter().map(|j| (j.id, JobStatus::Queued)).collect();
    assert_eq!(members, queued);
    for job in &jobs {
        let stored = store.get_job(job.id).await?.context("a batch's job")?;
        assert_eq!(stored.batch_id, Some(batch.id));
    }
    assert!(store.get_batch(uuid::Uuid::now_v7()).await?.is_none());
    Ok(())
}

async fn a_used_batch_key_returns_the_first_batch_and_stores_nothing(
    store: &dyn Store,
) -> anyhow::Result<()> {
    let first = new_batch("acme", Some("nightly-1"));
    store.insert_batch(&first, &jobs_of("acme", 2)).await?;
    let again = new_batch("acme", Some("nightly-1"));
    let again_jobs = jobs_of("acme", 2);
    assert_eq!(
        store.insert_batch(&again, &again_jobs).await?,
        InsertedBatch {
            id: first.id,
            created: false
        }
    );
    assert!(store.get_batch(again.id).await?.is_none());
    for job in &again_jobs {
        assert!(store.get_job(job.id).await?.is_none(), "nothing is stored");
    }
    // The key is the tenant's own: another tenant's batch with it is a new batch.
    let other = new_batch("other", Some("nightly-1"));
    assert_eq!(
        store.insert_batch(&other, &jobs_of("other", 1)).await?,
        InsertedBatch {
            id: other.id,
            created: true
        }
    );
    Ok(())
}
