//! What the queue contract (`tests/it/contract/queue.rs`, run on Redis and on this queue)
//! cannot pin down on the clock it shares with Redis: the very millisecond at which a lease
//! ends and a retry comes due. Times here are explicit (`claim_at`).

use super::*;

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_700_000_000_000 + ms).expect("a valid time")
}

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_lease_ends_and_a_retry_comes_due_at_their_millisecond() -> Result<(), Error> {
    let q = MemoryQueue::new();
    let (leased, retried) = (JobId::now_v7(), JobId::now_v7());
    let queues = vec!["q".to_owned()];
    q.enqueue(leased, "q", at(0)).await?;
    q.enqueue(retried, "q", at(1)).await?;
    let first = q.claim_at(&queues, "w1", Duration::from_millis(100), at(2));
    assert_eq!(first.map(|c| c.job_id), Some(leased));
    let second = q.claim_at(&queues, "w1", LEASE, at(2));
    assert_eq!(second.map(|c| c.job_id), Some(retried));
    assert!(q.settle(retried, "w1", Some(at(1_000))).await?);
    // The lease ends at 102 ms: held at 101, back in the queue (and claimed) at 102.
    assert_eq!(q.claim_at(&queues, "w2", LEASE, at(101)), None);
    let reclaimed = q.claim_at(&queues, "w2", LEASE, at(102)).expect("expired");
    assert_eq!((reclaimed.job_id, reclaimed.deliveries), (leased, 2));
    // The retry is due at 1,000 ms: still delayed at 999.
    assert_eq!(q.claim_at(&queues, "w2", LEASE, at(999)), None);
    let due = q.claim_at(&queues, "w2", LEASE, at(1_000)).expect("due");
    assert_eq!((due.job_id, due.deliveries), (retried, 2));
    Ok(())
}
