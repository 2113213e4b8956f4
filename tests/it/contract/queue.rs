//! The queue's contract (`src/queue/*.lua`): claim order by priority then time, delayed
//! retries, paused queues, leases (heartbeat, expiry, reclaim), settle, remove, drain, the
//! stats figures, the worker registry and the workers' signals.
//!
//! Enqueue times are fixed points in the past ([`at`]), so that orders and figures do not
//! depend on the clock; leases and retries run on the clock, since both implementations read it.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use chrono::{DateTime, Utc};
use llm_jobs::{
    events::{CancelRequest, EventLog},
    job::JobId,
    queue::{Beat, Claim, Counts, Held, MAX_CLAIM, Queue, Removal, Settle, Signal, WorkerInfo},
};

use super::{contract, eventually};
use crate::support::PATIENCE;

contract! {
    claims_follow_queue_order_then_time_then_id(queue);
    enqueue_is_idempotent_and_keeps_the_first_time(queue);
    a_free_slot_takes_a_job_at_once_only_when_nothing_waits_before_it(queue);
    paused_queues_are_skipped_not_emptied(queue);
    a_retry_waits_in_the_delayed_set_until_due(queue);
    an_expired_lease_goes_back_to_the_front_and_its_owner_loses_it(queue);
    a_heartbeat_keeps_a_lease_past_its_first_deadline(queue);
    a_claim_the_queue_lost_goes_back_to_its_owner_only_if_nobody_has_the_job(queue);
    a_claim_is_settled_by_its_owner_only_also_within_the_next_claim(queue);
    remove_takes_waiting_and_delayed_jobs_but_not_leased_ones(queue);
    drain_takes_pending_jobs_only(queue);
    counts_give_each_queue_its_figures_in_the_order_asked(queue);
    workers_that_stop_reporting_drop_out(queue);
    workers_are_woken_by_enqueues_and_told_of_cancels(queue, events);
}

/// A long lease: no check waits for it to end.
const LEASE: Duration = Duration::from_secs(30);

/// A fixed enqueue time `ms` milliseconds after a point in the past.
fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_700_000_000_000 + ms).expect("a valid time")
}

/// `ms` milliseconds from now, to the millisecond (what the queue stores).
fn from_now(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis() + ms).expect("a valid time")
}

/// A heartbeat's answer that lost `ids` to another owner or the queue.
fn lost(ids: &[JobId]) -> Beat {
    Beat {
        lost: ids.to_vec(),
        vanished: vec![],
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Fresh job ids, in creation (and text) order.
fn ids<const N: usize>() -> [JobId; N] {
    std::array::from_fn(|_| JobId::now_v7())
}

fn claimed(claims: &[Claim]) -> Vec<(JobId, &str, u64)> {
    claims
        .iter()
        .map(|c| (c.job_id, c.queue.as_str(), c.deliveries))
        .collect()
}

/// One claim from `queues` for `owner`, if any.
async fn claim_one(
    queue: &dyn Queue,
    queues: &[&str],
    owner: &str,
    lease: Duration,
) -> anyhow::Result<Option<Claim>> {
    Ok(queue
        .claim(&names(queues), owner, lease, 1, &[])
        .await?
        .pop())
}

/// A claim on a queue that nothing is ever enqueued to: it moves due retries and reclaims
/// expired leases (when the Redis queue sweeps; see [`eventually_swept`]) and takes nothing.
async fn sweep(queue: &dyn Queue) -> anyhow::Result<()> {
    let taken = queue
        .claim(&names(&["idle"]), "sweeper", LEASE, 1, &[])
        .await?;
    assert!(taken.is_empty(), "nothing waits in `idle`");
    Ok(())
}

/// Claims on an idle queue until `done` holds. The in-process queue sweeps on every claim;
/// the Redis queue on a process's first claim and then at most every 100 ms (it saves two
/// commands on most claims of a busy worker), so a check waits for a sweep instead of
/// expecting one from a given claim.
async fn eventually_swept<F, Fut>(queue: &dyn Queue, what: &str, mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    eventually(what, || {
        let swept = sweep(queue);
        let done = done();
        async move {
            swept.await?;
            Ok(done.await?.then_some(()))
        }
    })
    .await
}

/// Order within a claim: the caller's queue order first (it encodes priority and balancing),
/// then enqueue time, then the id (as Redis orders members of equal score).
async fn claims_follow_queue_order_then_time_then_id(queue: &dyn Queue) -> anyhow::Result<()> {
    let [a, b, c] = ids();
    let tie = JobId::nil();
    queue.enqueue(c, "normal", at(5)).await?;
    queue.enqueue(b, "normal", at(1)).await?;
    queue.enqueue(a, "high", at(9)).await?;
    // Enqueued at the same time as `b`: the id decides.
    queue.enqueue(tie, "normal", at(1)).await?;
    let order = names(&["high", "normal"]);
    let first = queue.claim(&order, "w", LEASE, 1, &[]).await?;
    assert_eq!(claimed(&first), [(a, "high", 1)]);
    let rest = queue.claim(&order, "w", LEASE, MAX_CLAIM, &[]).await?;
    assert_eq!(
        claimed(&rest),
        [(tie, "normal", 1), (b, "normal", 1), (c, "normal", 1)]
    );
    assert!(queue.claim(&order, "w", LEASE, 1, &[]).await?.is_empty());

    // The list's order, not the time: a queue is emptied before the next is tried. A claim
    // asks for at least one job.
    let [d, e] = ids();
    queue.enqueue(d, "high", at(0)).await?;
    queue.enqueue(e, "normal", at(9)).await?;
    let reversed = names(&["normal", "high"]);
    let one = queue.claim(&reversed, "w", LEASE, 0, &[]).await?;
    assert_eq!(claimed(&one), [(e, "normal", 1)]);
    let next = queue.claim(&reversed, "w", LEASE, 5, &[]).await?;
    assert_eq!(claimed(&next), [(d, "high", 1)]);
    Ok(())
}

async fn enqueue_is_idempotent_and_keeps_the_first_time(queue: &dyn Queue) -> anyhow::Result<()> {
    let [a, b] = ids();
    queue.enqueue(a, "q", at(1)).await?;
    queue.enqueue(b, "q", at(2)).await?;
    queue.enqueue(a, "q", at(3)).await?;
    let counts = queue.counts(&names(&["q"])).await?;
    assert_eq!(
        (counts[0].pending, counts[0].oldest_enqueued),
        (2, Some(at(1)))
    );
    let claims = queue.claim(&names(&["q"]), "w", LEASE, 5, &[]).await?;
    assert_eq!(claimed(&claims), [(a, "q", 1), (b, "q", 1)]);
    assert_eq!(queue.known(&[a, b]).await?, [true, true]);
    Ok(())
}

/// In-process dispatch at the queue (`enqueue_claim.lua`): a job enqueued for a free slot of
/// the enqueuing process is claimed at once only when nothing waits before it (its queue is
/// empty and not paused); such a claim is a claim like any other (fenced by its owner,
/// invisible to other claims). Otherwise the job is enqueued as usual.
async fn a_free_slot_takes_a_job_at_once_only_when_nothing_waits_before_it(
    queue: &dyn Queue,
) -> anyhow::Result<()> {
    let [a, b, waiting, behind, paused] = ids();
    let q = ["q"];
    let first = queue
        .enqueue_claimed(a, "q", at(0), "slot-1", LEASE)
        .await?;
    assert_eq!(
        first,
        Some(Claim {
            job_id: a,
            queue: "q".into(),
            deliveries: 1
        })
    );
    assert_eq!(queue.leased(&[a]).await?, [true]);
    assert_eq!(
        claim_one(queue, &q, "other", LEASE).await?,
        None,
        "nobody else gets it"
    );
    assert_eq!(
        queue.heartbeat(&[(a, "other".into())], LEASE).await?,
        lost(&[a])
    );
    assert_eq!(
        queue.heartbeat(&[(a, "slot-1".into())], LEASE).await?,
        Beat::default()
    );
    // A claimed job does not wait in the queue: the next one is claimed at once too.
    let second = queue
        .enqueue_claimed(b, "q", at(1), "slot-2", LEASE)
        .await?;
    assert_eq!(second.map(|c| c.job_id), Some(b));
    let counts = queue.counts(&names(&q)).await?;
    assert_eq!((counts[0].pending, counts[0].running), (0, 2));
    assert!(!queue.settle(a, "other", None).await?);
    assert!(queue.settle(a, "slot-1", None).await?);
    assert_eq!(queue.known(&[a, b]).await?, [false, true]);

    // A job already waits: the new one queues behind it, and workers claim both in order.
    queue.enqueue(waiting, "q", at(2)).await?;
    assert_eq!(
        queue
            .enqueue_claimed(behind, "q", at(3), "slot-3", LEASE)
            .await?,
        None
    );
    let counts = queue.counts(&names(&q)).await?;
    assert_eq!((counts[0].pending, counts[0].running), (2, 1));
    let claims = queue.claim(&names(&q), "worker", LEASE, 8, &[]).await?;
    assert_eq!(claimed(&claims), [(waiting, "q", 1), (behind, "q", 1)]);

    // A paused queue keeps the job until it is resumed, empty as it is.
    queue.set_paused("q", true).await?;
    assert_eq!(
        queue
            .enqueue_claimed(paused, "q", at(4), "slot-4", LEASE)
            .await?,
        None
    );
    assert_eq!(claim_one(queue, &q, "worker", LEASE).await?, None);
    queue.set_paused("q", false).await?;
    let resumed = claim_one(queue, &q, "worker", LEASE).await?;
    assert_eq!(resumed.map(|c| c.job_id), Some(paused));
    Ok(())
}

async fn paused_queues_are_skipped_not_emptied(queue: &dyn Queue) -> anyhow::Result<()> {
    let [a, b] = ids();
    queue.enqueue(a, "high", at(0)).await?;
    queue.enqueue(b, "low", at(0)).await?;
    queue.set_paused("high", true).await?;
    let order = ["high", "low"];
    let got = claim_one(queue, &order, "w", LEASE).await?;
    assert_eq!(got.map(|c| c.job_id), Some(b));
    assert_eq!(claim_one(queue, &order, "w", LEASE).await?, None);
    let counts = queue.counts(&names(&order)).await?;
    assert_eq!((counts[0].paused, counts[0].pending), (true, 1));
    assert!(!counts[1].paused);
    // Pausing twice, or resuming a queue that is not paused, is harmless.
    queue.set_paused("high", true).await?;
    queue.set_paused("low", false).await?;
    queue.set_paused("high", false).await?;
    assert!(!queue.counts(&names(&["high"])).await?[0].paused);
    let got = claim_one(queue, &order, "w", LEASE).await?;
    assert_eq!(got.map(|c| c.job_id), Some(a));
    Ok(())
}

/// A retry (`settle` with a time) waits in the delayed set, is never claimed before its time,
/// and once due goes back to its queue and is delivered again.
async fn a_retry_waits_in_the_delayed_set_until_due(queue: &dyn Queue) -> anyhow::Result<()> {
    let [a] = ids();
    queue.enqueue(a, "q", at(0)).await?;
    let first = claim_one(queue, &["q"], "w1", LEASE).await?;
    assert_eq!(first.map(|c| c.deliveries), Some(1));
    let due = from_now(300);
    assert!(queue.settle(a, "w1", Some(due)).await?);
    let counts = queue.counts(&names(&["q"])).await?;
    assert_eq!(
        (counts[0].pending, counts[0].delayed, counts[0].running),
        (0, 1, 0)
    );
    assert_eq!(queue.known(&[a]).await?, [true]);
    assert_eq!(queue.leased(&[a]).await?, [false]);
    // A job that waits meanwhile, since long before the retry's time.
    let [b] = ids();
    queue.enqueue(b, "q", at(1)).await?;
    eventually_swept(
        queue,
        "the retry goes back to its queue once due",
        || async { Ok(queue.counts(&names(&["q"])).await?[0].delayed == 0) },
    )
    .await?;
    assert!(Utc::now() >= due, "moved before it was due");
    // Back in its queue as of its due time: behind what waited before then.
    let again = queue.claim(&names(&["q"]), "w2", LEASE, 2, &[]).await?;
    assert_eq!(claimed(&again), [(b, "q", 1), (a, "q", 2)]);
    let counts = queue.counts(&names(&["q"])).await?;
    assert_eq!((counts[0].delayed, counts[0].running), (0, 2));
    Ok(())
}

/// An expired lease returns the job to the front of its queue (it has waited already), to be
/// delivered again; its old owner can neither settle it nor keep it alive.
async fn an_expired_lease_goes_back_to_the_front_and_its_owner_loses_it(
    queue: &dyn Queue,
) -> anyhow::Result<()> {
    let [a, b] = ids();
    queue.enqueue(a, "q", at(0)).await?;
    queue.enqueue(b, "q", at(1)).await?;
    let first = claim_one(queue, &["q"], "w1", Duration::from_millis(50)).await?;
    assert_eq!(first.map(|c| c.job_id), Some(a));
    eventually_swept(queue, "the expired lease is reclaimed", || async {
        Ok(queue.leased(&[a]).await? == [false])
    })
    .await?;
    let counts = queue.counts(&names(&["q"])).await?;
    assert_eq!((counts[0].pending, counts[0].running), (2, 0));
    assert_eq!(queue.known(&[a]).await?, [true]);
    let next = queue.claim(&names(&["q"]), "w2", LEASE, 2, &[]).await?;
    assert_eq!(
        claimed(&next),
        [(a, "q", 2), (b, "q", 1)],
        "reclaimed ahead of b, which waited less"
    );
    assert!(!queue.settle(a, "w1", None).await?, "w1's claim is gone");
    assert_eq!(
        queue.heartbeat(&[(a, "w1".into())], LEASE).await?,
        lost(&[a])
    );
    assert!(queue.settle(a, "w2", None).await?);
    assert_eq!(queue.known(&[a, b]).await?, [false, true]);
    Ok(())
}

async fn a_heartbeat_keeps_a_lease_past_its_first_deadline(
    queue: &dyn Queue,
) -> anyhow::Result<()> {
    let [a, b] = ids();
    queue.enqueue(a, "q", at(0)).await?;
    let lease = Duration::from_millis(100);
    let claimed_at = Instant::now();
    claim_one(queue, &["q"], "w1", lease)
        .await?
        .expect("a claim");
    assert_eq!(queue.heartbeat(&[], LEASE).await?, Beat::default());
    let beat = queue
        .heartbeat(&[(a, "w1".into()), (b, "w1".into())], LEASE)
        .await?;
    assert_eq!(
        beat,
        Beat {
            lost: vec![],
            vanished: vec![b]
        },
        "only claims still held are kept; b was never in the queue"
    );
    // Sweeps long after the first deadline (every sweep the Redis queue makes in that time).
    while claimed_at.elapsed() < lease * 3 {
        sweep(queue).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(queue.leased(&[a]).await?, [true]);
    assert_eq!(claim_one(queue, &["q"], "w2", LEASE).await?, None);
    assert_eq!(queue.counts(&names(&["q"])).await?[0].running, 1);
    // Another owner's heartbeat is told the claim is not its own.
    assert_eq!(
        queue.heartbeat(&[(a, "w2".into())], LEASE).await?,
        lost(&[a])
    );
    assert!(queue.settle(a, "w1", None).await?);
    assert_eq!(
        queue.heartbeat(&[(a, "w1".into())], LEASE).await?,
        Beat {
            lost: vec![],
            vanished: vec![a]
        },
        "a job settled for good is unknown to the queue"
    );
    Ok(())
}

/// `settle.lua`, and the same step at the start of `claim.lua`, with which a worker ends
/// its finished claims as it refills their slots: only the owner's claim ends; a finished job
/// leaves the queue for good, a retried one waits in the delayed set until its time and then
/// comes back (a new delivery), and a claim that is no longer the caller's is left to its new
/// owner.
/// What a worker does when Redis lost its data under a running attempt: the job is unknown
/// to the queue (here: one never enqueued stands for it), its heartbeat says so, and a
/// restore claims it again. A job the queue knows (waiting, delayed, claimed by another)
/// is never taken by a restore.
async fn a_claim_the_queue_lost_goes_back_to_its_owner_only_if_nobody_has_the_job(
    queue: &dyn Queue,
) -> anyhow::Result<()> {
    let [gone, waiting, taken, retried] = ids();
    let held = |id: JobId, owner: &str| Held {
        job_id: id,
        owner: owner.into(),
        queue: "q".into(),
    };
    let beat = queue.heartbeat(&[(gone, "w1".into())], LEASE).await?;
    assert_eq!(
        beat,
        Beat {
            lost: vec![],
            vanished: vec![gone]
        }
    );
    assert_eq!(queue.restore(&[held(gone, "w1")], LEASE).await?, [gone]);
    assert_eq!(queue.known(&[gone]).await?, [true]);
    assert_eq!(queue.leased(&[gone]).await?, [true]);
    assert_eq!(
        queue.heartbeat(&[(gone, "w1".into())], LEASE).await?,
        Beat::default(),
        "the restored claim is w1's again"
    );
    assert_eq!(
        queue.counts(&names(&["q"])).await?[0].running,
        1,
        "counted as running in its queue"
    );
    assert!(
        queue.restore(&[held(gone, "w2")], LEASE).await?.is_empty(),
        "a second restore by another owner takes nothing"
    );

    queue.enqueue(waiting, "q", at(0)).await?;
    queue.enqueue(taken, "q", at(1)).await?;
    queue.enqueue(retried, "q", at(2)).await?;
    assert!(
        queue
            .restore(&[held(waiting, "w1")], LEASE)
            .await?
            .is_empty()
    );
    assert_eq!(
        claimed(&queue.claim(&names(&["q"]), "w2", LEASE, 3, &[]).await?),
        [(waiting, "q", 1), (taken, "q", 1), (retried, "q", 1)],
        "a restore left the waiting job in its queue"
    );
    assert!(queue.settle(retried, "w2", Some(from_now(60_000))).await?);
    assert!(
        queue
            .restore(&[held(taken, "w1"), held(retried, "w1")], LEASE)
            .await?
            .is_empty(),
        "neither a job another worker holds nor one waiting to be retried"
    );
    assert_eq!(
        queue
            .heartbeat(&[(taken, "w1".into()), (retried, "w2".into())], LEASE)
            .await?,
        lost(&[taken, retried])
    );
    assert!(queue.settle(gone, "w1", None).await?);
    assert!(queue.settle(taken, "w2", None).await?);
    assert!(queue.settle(waiting, "w2", None).await?);
    Ok(())
}

async fn a_claim_is_settled_by_its_owner_only_also_within_the_next_claim(
    queue: &dyn Queue,
) -> anyhow::Result<()> {
    let [a, done, retried, taken, next, unknown] = ids();
    let q = names(&["q"]);
    queue.enqueue(a, "q", at(0)).await?;
    claim_one(queue, &["q"], "w1", LEASE)
        .await?
        .expect("a claim");
    assert!(!queue.settle(a, "w2", None).await?);
    assert_eq!(queue.leased(&[a]).await?, [true]);
    assert!(queue.settle(a, "w1", None).await?);
    assert_eq!(queue.known(&[a]).await?, [false]);
    assert_eq!(queue.leased(&[a]).await?, [false]);
    assert!(!queue.settle(a, "w1", None).await?, "settled already");

    for (i, id) in [done, retried, taken].into_iter().enumerate() {
        queue.enqueue(id, "q", at(i as i64)).await?;
    }
    assert_eq!(queue.claim(&q, "first", LEASE, 8, &[]).await?.len(), 3);
    // `taken` has another owner now (as when its lease expired and another worker took it).
    assert!(queue.settle(taken, "first", None).await?);
    queue.enqueue(taken, "q", at(3)).await?;
    let again = claim_one(queue, &["q"], "second", LEASE).await?;
    assert_eq!(again.map(|c| c.job_id), Some(taken));
    queue.enqueue(next, "q", at(4)).await?;

    let soon = from_now(300);
    let settle = |job_id, retry_at| Settle {
        job_id,
        owner: "first".into(),
        retry_at,
    };
    let ended = [
        settle(done, None),
        settle(retried, Some(soon)),
        settle(taken, None),
        settle(unknown, None),
    ];
    let refill = queue.claim(&q, "third", LEASE, 8, &ended).await?;
    assert_eq!(claimed(&refill), [(next, "q", 1)]);
    assert_eq!(
        queue.leased(&[done, retried, taken]).await?,
        [false, false, true],
        "ended claims lose their lease; the other owner's stays"
    );
    assert_eq!(
        queue.known(&[done, retried, unknown]).await?,
        [false, true, false],
        "a finished job is gone, a retried one waits"
    );
    let counts = queue.counts(&q).await?;
    assert_eq!(
        (counts[0].pending, counts[0].delayed, counts[0].running),
        (0, 1, 2)
    );
    assert_eq!(
        queue.heartbeat(&[(taken, "second".into())], LEASE).await?,
        Beat::default()
    );

    // The retry comes back once due.
    let back = eventually("the retry comes back once due", || async {
        Ok(Some(queue.claim(&q, "fourth", LEASE, 8, &[]).await?).filter(|c| !c.is_empty()))
    })
    .await?;
    assert!(Utc::now() >= soon, "back before it was due");
    assert_eq!(claimed(&back), [(retried, "q", 2)]);
    let ends = [
        Settle {
            job_id: taken,
            owner: "second".into(),
            retry_at: None,
        },
        Settle {
            job_id: next,
            owner: "third".into(),
            retry_at: None,
        },
    ];
    assert!(queue.claim(&q, "fifth", LEASE, 8, &ends).await?.is_empty());
    assert_eq!(
        queue.known(&[taken, next, retried]).await?,
        [false, false, true]
    );
    assert_eq!(queue.counts(&q).await?[0].running, 1);
    Ok(())
}

/// `remove.lua` (a cancel of a job that is not running).
async fn remove_takes_waiting_and_delayed_jobs_but_not_leased_ones(
    queue: &dyn Queue,
) -> anyhow::Result<()> {
    let [waiting, delayed, leased] = ids();
    queue.enqueue(leased, "q", at(0)).await?;
    queue.enqueue(delayed, "q", at(1)).await?;
    let claims = queue.claim(&names(&["q"]), "w", LEASE, 2, &[]).await?;
    assert_eq!(claims.len(), 2);
    assert!(queue.settle(delayed, "w", Some(from_now(60_000))).await?);
    queue.enqueue(waiting, "q", at(3)).await?;
    assert_eq!(queue.remove(waiting).await?, Removal::Removed);
    assert_eq!(queue.remove(delayed).await?, Removal::Removed);
    assert_eq!(queue.remove(leased).await?, Removal::Leased);
    assert_eq!(queue.remove(waiting).await?, Removal::Absent);
    assert_eq!(queue.remove(JobId::now_v7()).await?, Removal::Absent);
    assert_eq!(
        queue.known(&[waiting, delayed, leased]).await?,
        [false, false, true]
    );
    let counts = queue.counts(&names(&["q"])).await?;
    assert_eq!(
        (counts[0].pending, counts[0].delayed, counts[0].running),
        (0, 0, 1)
    );
    // A removed job is forgotten, deliveries and all.
    queue.enqueue(delayed, "q", at(4)).await?;
    let again = claim_one(queue, &["q"], "w", LEASE).await?;
    assert_eq!(again.map(|c| (c.job_id, c.deliveries)), Some((delayed, 1)));
    Ok(())
}

/// `drain.lua` (purge): every pending job of one queue, oldest first; delayed and claimed
/// jobs and other queues stay.
async fn drain_takes_pending_jobs_only(queue: &dyn Queue) -> anyhow::Result<()> {
    let [running, delayed, retried, waiting, other] = ids();
    for (i, id) in [running, delayed, retried, waiting].into_iter().enumerate() {
        queue.enqueue(id, "q", at(i as i64)).await?;
    }
    queue.enqueue(other, "r", at(0)).await?;
    let claims = queue.claim(&names(&["q"]), "w", LEASE, 3, &[]).await?;
    assert_eq!(claims.len(), 3);
    assert!(queue.settle(delayed, "w", Some(from_now(60_000))).await?);
    // `retried` is due at once: back in its queue (as of now), delivered once already.
    assert!(queue.settle(retried, "w", Some(at(0))).await?);
    eventually_swept(queue, "the due retry goes back to its queue", || async {
        Ok(queue.counts(&names(&["q"])).await?[0].pending == 2)
    })
    .await?;
    assert_eq!(queue.drain("q").await?, [waiting, retried]);
    assert!(queue.drain("q").await?.is_empty());
    let counts = queue.counts(&names(&["q", "r"])).await?;
    assert_eq!(
        (counts[0].pending, counts[0].delayed, counts[0].running),
        (0, 1, 1)
    );
    assert_eq!(counts[1].pending, 1);
    assert_eq!(
        queue
            .known(&[running, delayed, retried, waiting, other])
            .await?,
        [true, true, false, false, true]
    );
    // A drained job is forgotten, deliveries and all.
    queue.enqueue(retried, "q", at(0)).await?;
    let again = claim_one(queue, &["q"], "w", LEASE).await?;
    assert_eq!(again.map(|c| (c.job_id, c.deliveries)), Some((retried, 1)));
    Ok(())
}

/// `stats.lua`: one row per queue asked for, in that order, a queue never used included.
async fn counts_give_each_queue_its_figures_in_the_order_asked(
    queue: &dyn Queue,
) -> anyhow::Result<()> {
    let [a1, a2, a3, a4, b1] = ids();
    for (i, id) in [a1, a2, a3, a4].into_iter().enumerate() {
        queue.enqueue(id, "a", at(3 + i as i64)).await?;
    }
    let claims = queue.claim(&names(&["a"]), "w", LEASE, 2, &[]).await?;
    assert_eq!(claimed(&claims), [(a1, "a", 1), (a2, "a", 1)]);
    assert!(queue.settle(a2, "w", Some(from_now(60_000))).await?);
    queue.set_paused("a", true).await?;
    queue.enqueue(b1, "b", at(7)).await?;
    let counts = queue.counts(&names(&["b", "a", "never"])).await?;
    assert_eq!(
        counts,
        [
            Counts {
                pending: 1,
                oldest_enqueued: Some(at(7)),
                delayed: 0,
                running: 0,
                paused: false,
            },
            Counts {
                pending: 2,
                oldest_enqueued: Some(at(5)),
                delayed: 1,
                running: 1,
                paused: true,
            },
            Counts::default(),
        ]
    );
    assert!(queue.counts(&[]).await?.is_empty());
    Ok(())
}

async fn workers_that_stop_reporting_drop_out(queue: &dyn Queue) -> anyhow::Result<()> {
    let now = Utc::now();
    let info = |id: &str, age_secs: i64| WorkerInfo {
        id: id.into(),
        host: "host".into(),
        pid: 42,
        started_at: at(0),
        version: "1.2.3".into(),
        job_types: vec!["general".into()],
        busy_slots: 1,
        total_slots: 4,
        job_ids: vec![JobId::nil().to_string()],
        resident_memory_mib: Some(12.5),
        cpu_percent: None,
        heartbeat_at: now - chrono::Duration::seconds(age_secs),
    };
    let window = Duration::from_secs(60);
    queue.register_worker(&info("b", 0)).await?;
    queue.register_worker(&info("a", 0)).await?;
    queue.register_worker(&info("old", 600)).await?;
    let listed = queue.workers(window).await?;
    assert_eq!(
        listed.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(
        listed[1],
        info("b", 0),
        "an entry reads back as it was reported"
    );
    // A refreshed entry replaces the old one; an old entry reported anew is back.
    let mut busier = info("a", 0);
    busier.busy_slots = 4;
    queue.register_worker(&busier).await?;
    queue.register_worker(&info("old", 0)).await?;
    queue.deregister_worker("b").await?;
    queue.deregister_worker("never registered").await?;
    let listed = queue.workers(window).await?;
    assert_eq!(
        listed
            .iter()
            .map(|w| (w.id.as_str(), w.busy_slots))
            .collect::<Vec<_>>(),
        [("a", 4), ("old", 1)]
    );
    Ok(())
}

/// Workers hear of new work (`P:wake`) and of cancels (`P:cancel`, sent by the event log's
/// cancel request), in the order they happened; a job claimed as it is enqueued wakes nobody.
async fn workers_are_woken_by_enqueues_and_told_of_cancels(
    queue: &dyn Queue,
    events: &dyn EventLog,
) -> anyhow::Result<()> {
    let mut first = queue.signals().await?;
    let mut second = queue.signals().await?;
    let [a, b, c] = ids();
    queue.enqueue(a, "q", at(0)).await?;
    let direct = queue
        .enqueue_claimed(b, "empty", at(0), "slot", LEASE)
        .await?;
    assert!(direct.is_some(), "claimed at once");
    assert_eq!(
        events.request_cancel(c, "changed my mind").await?,
        CancelRequest::Flagged
    );
    for rx in [&mut first, &mut second] {
        assert_eq!(next_signal(rx).await?, Signal::Wake);
        assert_eq!(
            next_signal(rx).await?,
            Signal::Cancel(c),
            "and no wake-up for b"
        );
    }
    assert_eq!(
        queue.cancel_requested(c).await?.as_deref(),
        Some("changed my mind")
    );
    assert_eq!(queue.cancel_requested(a).await?, None);
    Ok(())
}

/// The next signal of `rx`, within [`PATIENCE`].
async fn next_signal(rx: &mut mpsc::Receiver<Signal>) -> anyhow::Result<Signal> {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .map_err(|_| anyhow::anyhow!("no signal"))?
        .ok_or_else(|| anyhow::anyhow!("the signals ended"))
}
