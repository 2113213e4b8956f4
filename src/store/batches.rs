//! Batches: a batch and all its jobs stored at once, and read back as one snapshot.

use async_trait::async_trait;

use super::Error;
use crate::{
    batch::{BatchId, NewBatch, Snapshot},
    job::NewJob,
};

/// What `insert_batch` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InsertedBatch {
    /// The stored batch (the earlier one when the idempotency key was already used).
    pub id: BatchId,
    /// False when an earlier batch with the same idempotency key was returned instead.
    pub created: bool,
}

/// The batches.
#[async_trait]
pub trait BatchStore: Send + Sync + 'static {
    /// Stores the batch and all its jobs (QUEUED, in request order; they must carry no
    /// idempotency key) in one transaction. With a batch idempotency key used within the last
    /// 24 h, stores nothing and returns the earlier batch's id with `created` false.
    async fn insert_batch(&self, batch: &NewBatch, jobs: &[NewJob])
    -> Result<InsertedBatch, Error>;

    /// The batch and every job of it in request order, the jobs read by one statement (so
    /// their statuses are of one moment); `None` when the batch is unknown.
    async fn get_batch(&self, id: BatchId) -> Result<Option<Snapshot>, Error>;
}
