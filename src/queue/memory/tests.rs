//! The in-process queue against the rules of the Lua scripts. Times are explicit (`claim_at`),
//! so lease expiry and due retries are tested without sleeping.

use super::*;

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_700_000_000_000 + ms).expect("a valid time")
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn claims_follow_queue_order_then_time_then_id() -> Result<(), Error> {
    let q = MemoryQueue::new();
    let (a, b, c) = (JobId::now_v7(), JobId::now_v7(), JobId::now_v7());
    q.enqueue(c, "openai-general", at(5)).await?;
    q.enqueue(b, "openai-general", at(1)).await?;
    q.enqueue(a, "openai-general-high", at(9)).await?;
    // Same score as `b`: ids break the tie, as Redis orders members.
    let tie = JobId::nil();
    q.enqueue(tie, "openai-general", at(1)).await?;
    let order = names(&["openai-general-high", "openai-general"]);
    let mut got = Vec::new();
    while let Some(claim) = q.claim_at(&order, "w", LEASE, at(10)) {
        got.push((claim.job_id, claim.queue, claim.deliveries));
    }
    assert_eq!(
        got,
        vec![
            (a, "openai-general-high".to_owned(), 1),
            (tie, "openai-general".to_owned(), 1),
            (b, "openai-general".to_owned(), 1),
            (c, "openai-general".to_owned(), 1),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn enqueue_is_idempotent_and_keeps_the_first_time() -> Result<(), Error> {
    let q = MemoryQueue::new();
    let (a, b) = (JobId::now_v7(), JobId::now_v7());
    q.enqueue(a, "q", at(1)).await?;
    q.enqueue(b, "q", at(2)).await?;
    q.enqueue(a, "q", at(3)).await?;
    let counts = q.counts(&names(&["q"])).await?;
    assert_eq!(counts[0].pending, 2);
    assert_eq!(counts[0].oldest_enqueued, Some(at(1)));
    let first = q.claim_at(&names(&["q"]), "w", LEASE, at(4));
    assert_eq!(first.map(|c| c.job_id), Some(a));
    Ok(())
}

#[tokio::test]
async fn an_expired_lease_goes_back_to_the_front_and_the_old_owner_loses_it() -> Result<(), Error> {
    let q = MemoryQueue::new();
    let (a, b) = (JobId::now_v7(), JobId::now_v7());
    q.enqueue(a, "q", at(0)).await?;
    q.enqueue(b, "q", at(1)).await?;
    let queues = names(&["q"]);
    let first = q.claim_at(&queues, "w1", Duration::from_millis(100), at(2));
    assert_eq!(first.as_ref().map(|c| c.job_id), Some(a));
    // The lease ended at 102 ms.
    let next = q.claim_at(&queues, "w2", LEASE, at(200)).expect("a claim");
    assert_eq!(next.job_id, a, "reclaimed ahead of b, which waited less");
    assert_eq!(next.deliveries, 2);
    assert!(!q.settle(a, "w1", None).await?, "w1's claim is gone");
    assert_eq!(
        q.state()
            .heartbeat(&[(a, "w1".into())], at(300).timestamp_millis()),
        vec![a]
    );
    assert!(q.settle(a, "w2", None).await?);
    assert_eq!(q.known(&[a, b]).await?, vec![false, true]);
    Ok(())
}

#[tokio::test]
async fn a_lease_kept_alive_is_not_reclaimed() -> Result<(), Error> {
    let q = MemoryQueue::new();
    let a = JobId::now_v7();
    q.enqueue(a, "q", at(0)).await?;
    let queues = names(&["q"]);
    assert!(
        q.claim_at(&queues, "w1", Duration::from_millis(100), at(1))
            .is_some()
    );
    let lost = q
        .state()
        .heartbeat(&[(a, "w1".into())], at(10_000).timestamp_millis());
    assert!(lost.is_empty());
    assert_eq!(q.claim_at(&queues, "w2", LEASE, at(5_000)), None);
    assert_eq!(q.leased(&[a]).await?, vec![true]);
    Ok(())
}

#[tokio::test]
async fn a_retry_waits_until_due_then_is_claimed_again() -> Result<(), Error> {
    let q = MemoryQueue::new();
    let a = JobId::now_v7();
    q.enqueue(a, "q", at(0)).await?;
    let queues = names(&["q"]);
    q.claim_at(&queues, "w1", LEASE, at(1)).expect("a claim");
    assert!(q.settle(a, "w1", Some(at(1_000))).await?);
    let counts = q.counts(&queues).await?;
    assert_eq!((counts[0].pending, counts[0].delayed), (0, 1));
    assert_eq!(q.claim_at(&queues, "w2", LEASE, at(999)), None);
    let again = q.claim_at(&queues, "w2", LEASE, at(1_000)).expect("due");
    assert_eq!((again.job_id, again.deliveries), (a, 2));
    assert_eq!(q.counts(&queues).await?[0].running, 1);
    Ok(())
}

#[tokio::test]
async fn paused_queues_are_skipped_not_emptied() -> Result<(), Error> {
    let q = MemoryQueue::new();
    let (a, b) = (JobId::now_v7(), JobId::now_v7());
    q.enqueue(a, "high", at(0)).await?;
    q.enqueue(b, "low", at(0)).await?;
    q.set_paused("high", true).await?;
    let queues = names(&["high", "low"]);
    assert_eq!(
        q.claim_at(&queues, "w", LEASE, at(1)).map(|c| c.job_id),
        Some(b)
    );
    assert_eq!(q.claim_at(&queues, "w", LEASE, at(1)), None);
    let counts = q.counts(&queues).await?;
    assert!(counts[0].paused && counts[0].pending == 1);
    q.set_paused("high", false).await?;
    assert_eq!(
        q.claim_at(&queues, "w", LEASE, at(2)).map(|c| c.job_id),
        Some(a)
    );
    Ok(())
}

#[tokio::test]
async fn remove_takes_waiting_and_delayed_jobs_but_not_leased_ones() -> Result<(), Error> {
    let q = MemoryQueue::new();
    let (waiting, delayed, leased) = (JobId::now_v7(), JobId::now_v7(), JobId::now_v7());
    q.enqueue(leased, "q", at(0)).await?;
    q.enqueue(delayed, "q", at(1)).await?;
    let queues = names(&["q"]);
    q.claim_at(&queues, "w", LEASE, at(2)).expect("leased");
    q.claim_at(&queues, "w", LEASE, at(2)).expect("delayed");
    assert!(q.settle(delayed, "w", Some(at(60_000))).await?);
    q.enqueue(waiting, "q", at(3)).await?;
    assert_eq!(q.remove(waiting).await?, Removal::Removed);
    assert_eq!(q.remove(delayed).await?, Removal::Removed);
    assert_eq!(q.remove(leased).await?, Removal::Leased);
    assert_eq!(q.remove(waiting).await?, Removal::Absent);
    assert_eq!(
        q.known(&[waiting, delayed, leased]).await?,
        vec![false, false, true]
    );
    Ok(())
}

#[tokio::test]
async fn drain_takes_pending_jobs_only() -> Result<(), Error> {
    let q = MemoryQueue::new();
    let (a, b, c) = (JobId::now_v7(), JobId::now_v7(), JobId::now_v7());
    for id in [a, b, c] {
        q.enqueue(id, "q", at(0)).await?;
    }
    let queues = names(&["q"]);
    let claimed = q.claim_at(&queues, "w", LEASE, at(1)).expect("a claim");
    let mut drained = q.drain("q").await?;
    drained.sort();
    let mut rest: Vec<JobId> = [a, b, c]
        .into_iter()
        .filter(|id| *id != claimed.job_id)
        .collect();
    rest.sort();
    assert_eq!(drained, rest);
    let counts = q.counts(&queues).await?;
    assert_eq!((counts[0].pending, counts[0].running), (0, 1));
    Ok(())
}

#[tokio::test]
async fn cancels_are_flagged_and_signalled_to_every_worker() -> Result<(), Error> {
    let q = MemoryQueue::new();
    let mut w1 = q.signals().await?;
    let mut w2 = q.signals().await?;
    let a = JobId::now_v7();
    assert_eq!(q.cancel_requested(a).await?, None);
    q.enqueue(a, "q", at(0)).await?;
    crate::events::memory::CancelFlags::set(&q, a, "changed my mind");
    assert_eq!(
        q.cancel_requested(a).await?.as_deref(),
        Some("changed my mind")
    );
    for rx in [&mut w1, &mut w2] {
        assert_eq!(rx.recv().await, Some(Signal::Wake));
        assert_eq!(rx.recv().await, Some(Signal::Cancel(a)));
    }
    Ok(())
}

#[tokio::test]
async fn workers_that_stop_reporting_drop_out() -> Result<(), Error> {
    let q = MemoryQueue::new();
    let info = |id: &str, age: i64| WorkerInfo {
        id: id.into(),
        heartbeat_at: Utc::now() - chrono::Duration::seconds(age),
        ..Default::default()
    };
    q.register_worker(&info("b", 0)).await?;
    q.register_worker(&info("a", 0)).await?;
    q.register_worker(&info("old", 600)).await?;
    let ids = |ws: Vec<WorkerInfo>| ws.into_iter().map(|w| w.id).collect::<Vec<_>>();
    assert_eq!(
        ids(q.workers(Duration::from_secs(60)).await?),
        vec!["a", "b"]
    );
    q.deregister_worker("a").await?;
    assert_eq!(ids(q.workers(Duration::from_secs(60)).await?), vec!["b"]);
    Ok(())
}
