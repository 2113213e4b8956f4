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
        q.claim(&queues, "other", LEASE, 8, &[]).await?.is_empty(),
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
        .claim(&queues, "worker", LEASE, 8, &[])
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
    assert!(q.claim(&queues, "worker", LEASE, 8, &[]).await?.is_empty());
    q.set_paused(QUEUE, false).await?;
    let resumed = q.claim(&queues, "worker", LEASE, 8, &[]).await?;
    assert_eq!(
        resumed.iter().map(|c| c.job_id).collect::<Vec<_>>(),
        [paused]
    );
    b.clean().await
}

/// A worker ends its finished claims with the claim that refills their slots: in one call,
/// a finished job leaves the queue for good, a retried one waits in the delayed set until
/// its time and then comes back (a new delivery), and a claim that is no longer the caller's
/// is left to its new owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_ends_the_finished_claims_it_is_given() -> anyhow::Result<()> {
    use llm_jobs::queue::Settle;
    let b = Backend::new()?;
    let q = &b.queue;
    let queues = [QUEUE.to_owned()];
    let (done, retried, taken, next) = (
        JobId::now_v7(),
        JobId::now_v7(),
        JobId::now_v7(),
        JobId::now_v7(),
    );
    for id in [done, retried, taken] {
        q.enqueue(id, QUEUE, Utc::now()).await?;
    }
    assert_eq!(q.claim(&queues, "first", LEASE, 8, &[]).await?.len(), 3);
    // `taken` has another owner now (its lease expired and was reclaimed).
    assert!(q.settle(taken, "first", Some(Utc::now())).await?);
    let again = claim_soon(q, &queues, "second").await?;
    assert_eq!(again.iter().map(|c| c.job_id).collect::<Vec<_>>(), [taken]);
    q.enqueue(next, QUEUE, Utc::now()).await?;

    let soon = Utc::now() + chrono::Duration::milliseconds(300);
    let ended = [
        Settle {
            job_id: done,
            owner: "first".into(),
            retry_at: None,
        },
        Settle {
            job_id: retried,
            owner: "first".into(),
            retry_at: Some(soon),
        },
        Settle {
            job_id: taken,
            owner: "first".into(),
            retry_at: None,
        },
    ];
    let claimed = q.claim(&queues, "third", LEASE, 8, &ended).await?;
    assert_eq!(claimed.iter().map(|c| c.job_id).collect::<Vec<_>>(), [next]);
    assert_eq!(
        q.leased(&[done, retried, taken]).await?,
        [false, false, true],
        "ended claims lose their lease; the other owner's stays"
    );
    assert_eq!(
        q.known(&[done, retried]).await?,
        [false, true],
        "a finished job is gone, a retried one waits"
    );
    assert!(
        q.heartbeat(&[(taken, "second".into())], LEASE)
            .await?
            .is_empty()
    );

    // The retry comes back once due.
    let back = claim_soon(q, &queues, "fourth").await?;
    assert_eq!(
        back.iter()
            .map(|c| (c.job_id, c.deliveries))
            .collect::<Vec<_>>(),
        [(retried, 2)]
    );
    b.clean().await
}

/// The next non-empty claim for `owner`: due retries come back to their queue at a claim's
/// sweep, which runs every so often rather than on every claim.
async fn claim_soon(
    q: &std::sync::Arc<dyn llm_jobs::queue::Queue>,
    queues: &[String],
    owner: &str,
) -> anyhow::Result<Vec<llm_jobs::queue::Claim>> {
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    loop {
        let claimed = q.claim(queues, owner, LEASE, 8, &[]).await?;
        if !claimed.is_empty() {
            return Ok(claimed);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "nothing came back to the queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
