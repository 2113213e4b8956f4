//! Retention's contract ([`llm_jobs::store::JobStore::deletable`] and `delete_finished`) on
//! both SQL backends: an ended job goes with what it left (its result and stored event log)
//! while unfinished ones stay; a batch's jobs go only once all of them ended, and the batch
//! once none of its jobs is left; the dry run counts what the delete takes.
//!
//! The Postgres store deletes event logs itself (they have no foreign key), SQLite's go by
//! cascade: the same check covers both.

use anyhow::Context;
use chrono::{TimeDelta, Utc};
use llm_jobs::{
    batch::NewBatch,
    job::{ChatMessage, GenerationParams, JobId, NewJob, Outcome, Priority},
    store::{Finish, Store},
};

use super::stores::store_contract;

store_contract! {
    an_ended_job_goes_with_its_result_and_log_and_unfinished_ones_stay;
    a_batch_goes_only_once_all_its_jobs_ended;
}

/// A queued job of tenant `default` with no idempotency key (so batches take it too).
pub(super) fn new_job() -> NewJob {
    NewJob {
        id: uuid::Uuid::now_v7(),
        job_type: "general".into(),
        priority: Priority::Normal,
        queue: llm_jobs::job::queue_name("general", Priority::Normal),
        messages: vec![ChatMessage {
            role: "user".into(),
            content: "hello".into(),
        }],
        params: GenerationParams {
            model: "sim".into(),
            ..Default::default()
        },
        streaming_mode: Default::default(),
        metadata: Default::default(),
        idempotency_key: None,
        max_attempts: 3,
        timeout: None,
        tags: vec![],
        tenant: "default".into(),
        discard_prompt: false,
        trace_context: None,
    }
}

/// Runs the job's first attempt to COMPLETED, storing a two-event log with its result.
async fn complete(store: &dyn Store, id: JobId) -> anyhow::Result<()> {
    let job = store
        .start_attempt(id)
        .await?
        .context("a queued job starts")?;
    let done = Finish::Completed(Outcome {
        content: "done".into(),
        ..Default::default()
    });
    let log = crate::store::log_of(1, 2);
    store
        .finish_attempt(id, job.attempts, done, &[], Some(2), Some(&log))
        .await?
        .context("the attempt that owns the job ends it")?;
    Ok(())
}

async fn an_ended_job_goes_with_its_result_and_log_and_unfinished_ones_stay(
    store: &dyn Store,
) -> anyhow::Result<()> {
    let ended = store.insert_job(&new_job()).await?.job.id;
    let queued = store.insert_job(&new_job()).await?.job.id;
    let running = store.insert_job(&new_job()).await?.job.id;
    complete(store, ended).await?;
    store.start_attempt(running).await?.context("it starts")?;
    let end = store
        .get_job(ended)
        .await?
        .and_then(|j| j.finished_at)
        .context("an ended job has its end")?;
    assert!(store.event_log(ended).await?.is_some());

    // Before the end: nothing to delete, and nothing goes.
    let early = end - TimeDelta::seconds(60);
    assert_eq!(store.deletable(early).await?.jobs, 0);
    assert_eq!(store.delete_finished(early, 10).await?, 0);

    let before = Utc::now() + TimeDelta::seconds(60);
    let deletable = store.deletable(before).await?;
    assert_eq!(
        (deletable.jobs, deletable.oldest, deletable.newest),
        (1, Some(end), Some(end))
    );
    assert_eq!(store.delete_finished(before, 10).await?, 1);
    assert!(store.get_job(ended).await?.is_none());
    assert!(store.get_result(ended).await?.is_none());
    assert!(store.event_log(ended).await?.is_none(), "its log goes too");
    assert!(store.get_job(queued).await?.is_some());
    assert!(store.get_job(running).await?.is_some());
    assert_eq!(store.deletable(before).await?.jobs, 0);
    assert_eq!(store.delete_finished(before, 10).await?, 0);
    Ok(())
}

async fn a_batch_goes_only_once_all_its_jobs_ended(store: &dyn Store) -> anyhow::Result<()> {
    let batch = NewBatch {
        id: uuid::Uuid::now_v7(),
        display_name: "retention".into(),
        metadata: Default::default(),
        idempotency_key: None,
        tenant: "default".into(),
    };
    let jobs = [new_job(), new_job()];
    store.insert_batch(&batch, &jobs).await?;
    complete(store, jobs[0].id).await?;
    let before = Utc::now() + TimeDelta::seconds(60);
    assert_eq!(
        store.deletable(before).await?.jobs,
        0,
        "a batch's ended job waits for its sibling"
    );
    assert_eq!(store.delete_finished(before, 10).await?, 0);
    let kept = store
        .get_batch(batch.id)
        .await?
        .context("the batch stays")?;
    assert_eq!(kept.members.len(), 2);

    complete(store, jobs[1].id).await?;
    assert_eq!(store.deletable(before).await?.jobs, 2);
    assert_eq!(
        store.delete_finished(before, 1).await?,
        1,
        "at most `batch` jobs"
    );
    assert!(
        store.get_batch(batch.id).await?.is_some(),
        "a batch with a job left stays"
    );
    assert_eq!(store.delete_finished(before, 10).await?, 1);
    assert!(
        store.get_batch(batch.id).await?.is_none(),
        "a batch with no job left goes"
    );
    assert_eq!(store.delete_finished(before, 10).await?, 0);
    Ok(())
}
