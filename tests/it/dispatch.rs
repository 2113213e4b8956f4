//! In-process dispatch at the queue: a job enqueued for a free slot of the enqueuing process
//! is claimed at once only when nothing waits before it (its queue is empty and not paused);
//! such a claim is a claim like any other (fenced by its owner, invisible to other claims).
//! Runs against the backend under test (Redis with this test's own prefix, or the in-process
//! queue).

use std::time::Duration;

use chrono::Utc;
use llm_jobs::job::JobId;

use crate::flushes::Backend;

const LEASE: Duration = Duration::from_secs(30);
const QUEUE: &str = "openai-general";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_slot_takes_a_job_at_once_only_when_nothing_waits_before_it() -> anyhow::Result<()> {
    let b = Backend::new()?;
    let q = &b.queue;
    let queues = [QUEUE.to_owned()];

    // An empty queue: claimed at once, for the slot's owner only.
    let a = JobId::now_v7();
    let claim = q
        .enqueue_claimed(a, QUEUE, Utc::now(), "slot-1", LEASE)
        .await?
        .expect("an empty queue hands the job to the free slot");
    assert_eq!(
        (claim.job_id, claim.queue.as_str(), claim.deliveries),
        (a, QUEUE, 1)
    );
    assert!(
        q.claim(&queues, "other", LEASE, 8).await?.is_empty(),
        "nobody else gets it"
    );
    assert_eq!(q.heartbeat(&[(a, "other".into())], LEASE).await?, vec![a]);
    assert!(
        q.heartbeat(&[(a, "slot-1".into())], LEASE)
            .await?
            .is_empty()
    );
    assert!(!q.settle(a, "other", None).await?);
    assert!(q.settle(a, "slot-1", None).await?);

    // A job already waits: the new one queues behind it, and workers claim both in order.
    let (waiting, behind) = (JobId::now_v7(), JobId::now_v7());
    q.enqueue(waiting, QUEUE, Utc::now()).await?;
    assert!(
        q.enqueue_claimed(behind, QUEUE, Utc::now(), "slot-2", LEASE)
            .await?
            .is_none()
    );
    let claimed: Vec<JobId> = q
        .claim(&queues, "worker", LEASE, 8)
        .await?
        .into_iter()
        .map(|c| c.job_id)
        .collect();
    assert_eq!(claimed, [waiting, behind]);

    // A paused queue keeps the job until it is resumed.
    let paused = JobId::now_v7();
    q.set_paused(QUEUE, true).await?;
    assert!(
        q.enqueue_claimed(paused, QUEUE, Utc::now(), "slot-3", LEASE)
            .await?
            .is_none()
    );
    assert!(q.claim(&queues, "worker", LEASE, 8).await?.is_empty());
    q.set_paused(QUEUE, false).await?;
    let resumed = q.claim(&queues, "worker", LEASE, 8).await?;
    assert_eq!(
        resumed.iter().map(|c| c.job_id).collect::<Vec<_>>(),
        [paused]
    );
    b.clean().await
}
