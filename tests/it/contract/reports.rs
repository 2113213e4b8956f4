//! The failed-jobs part of the operators' contract ([`llm_jobs::store::ReportStore`]) on both
//! SQL backends: failed jobs list newest first, filtered and paged; forgetting marks only
//! failed ones, once; a requeue puts a failed job back with one more attempt, dropping its
//! result and stored log but keeping its attempt history, and refuses jobs that did not fail
//! or whose prompt is gone.

use anyhow::Context;
use llm_jobs::{
    job::{JobError, JobId, JobStatus, Outcome},
    store::{FailedFilter, Finish, Store},
};

use super::{retention::new_job, stores::store_contract};

store_contract! {
    failed_jobs_list_newest_first_filtered_and_paged;
    forgetting_marks_failed_jobs_once;
    a_requeue_gives_a_failed_job_one_more_attempt_and_keeps_its_history;
}

/// A job of its own, run once to its end: FAILED with `code`, or COMPLETED without one; a
/// two-event log is stored with its result.
async fn ended(
    store: &dyn Store,
    code: Option<&str>,
    discard_prompt: bool,
) -> anyhow::Result<JobId> {
    let job = llm_jobs::job::NewJob {
        discard_prompt,
        ..new_job()
    };
    let id = store.insert_job(&job).await?.job.id;
    let attempt = store
        .start_attempt(id)
        .await?
        .context("it starts")?
        .attempts;
    let finish = match code {
        Some(code) => Finish::Failed {
            error: JobError {
                code: code.into(),
                message: format!("{code} happened"),
            },
            retryable: false,
            partial: Outcome::default(),
        },
        None => Finish::Completed(Outcome::default()),
    };
    let log = crate::store::log_of(1, 2);
    store
        .finish_attempt(id, attempt, finish, &[], Some(2), Some(&log))
        .await?
        .context("its attempt ends it")?;
    Ok(id)
}

async fn failed_ids(
    store: &dyn Store,
    filter: &FailedFilter,
    before: Option<JobId>,
) -> anyhow::Result<Vec<JobId>> {
    Ok(store
        .failed_jobs(filter, before, 10)
        .await?
        .into_iter()
        .map(|j| j.id)
        .collect())
}

async fn failed_jobs_list_newest_first_filtered_and_paged(store: &dyn Store) -> anyhow::Result<()> {
    let first = ended(store, Some("upstream_server_error"), false).await?;
    let done = ended(store, None, false).await?;
    let second = ended(store, Some("timeout"), false).await?;
    let all = FailedFilter::default();
    assert_eq!(failed_ids(store, &all, None).await?, [second, first]);
    assert!(!failed_ids(store, &all, None).await?.contains(&done));
    assert_eq!(failed_ids(store, &all, Some(second)).await?, [first]);
    let timeouts = FailedFilter {
        error_code: Some("timeout".into()),
        ..FailedFilter::default()
    };
    assert_eq!(failed_ids(store, &timeouts, None).await?, [second]);
    let elsewhere = FailedFilter {
        tenant: Some("nobody".into()),
        ..FailedFilter::default()
    };
    assert!(failed_ids(store, &elsewhere, None).await?.is_empty());
    Ok(())
}

async fn forgetting_marks_failed_jobs_once(store: &dyn Store) -> anyhow::Result<()> {
    let failed = ended(store, Some("timeout"), false).await?;
    let kept = ended(store, Some("timeout"), false).await?;
    let done = ended(store, None, false).await?;
    let unknown = uuid::Uuid::now_v7();
    assert_eq!(
        store.forget_failed(&[failed, done, unknown]).await?,
        [failed],
        "only failed jobs are forgotten"
    );
    assert_eq!(
        failed_ids(store, &FailedFilter::default(), None).await?,
        [kept]
    );
    assert!(store.forget_failed(&[failed]).await?.is_empty(), "once");
    assert_eq!(
        store.get_job(failed).await?.map(|j| j.status),
        Some(JobStatus::Failed),
        "a forgotten job stays as it was"
    );
    Ok(())
}

async fn a_requeue_gives_a_failed_job_one_more_attempt_and_keeps_its_history(
    store: &dyn Store,
) -> anyhow::Result<()> {
    let failed = ended(store, Some("timeout"), false).await?;
    let requeued = store
        .requeue_failed(failed)
        .await?
        .context("a failed job is requeued")?;
    assert_eq!(
        (
            requeued.status,
            requeued.attempts,
            requeued.max_attempts,
            requeued.error
        ),
        (JobStatus::Queued, 1, 2, None)
    );
    let result = store.get_result(failed).await?.context("the job stays")?;
    assert!(result.outcome.is_none(), "its failed result goes");
    assert!(
        store.event_log(failed).await?.is_none(),
        "its stored log goes"
    );
    assert_eq!(
        store.attempt_failures(failed).await?,
        [(
            1,
            JobError {
                code: "timeout".into(),
                message: "timeout happened".into()
            }
        )],
        "its attempt history stays"
    );
    assert!(
        failed_ids(store, &FailedFilter::default(), None)
            .await?
            .is_empty()
    );
    assert!(
        store.requeue_failed(failed).await?.is_none(),
        "it is not failed now"
    );
    let done = ended(store, None, false).await?;
    assert!(store.requeue_failed(done).await?.is_none());
    let without_prompt = ended(store, Some("timeout"), true).await?;
    assert!(
        store.requeue_failed(without_prompt).await?.is_none(),
        "nothing to run again without its prompt"
    );
    Ok(())
}
