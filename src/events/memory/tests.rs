//! The in-process event log against the rules of `append.lua`, `read.lua` and `restart.lua`.

use super::*;
use crate::{
    events::event,
    proto::v1::{JobCancelled, JobCompleted, JobQueued, JobStarted, TokenDelta},
};

fn delta(text: &str, output_tokens: u64) -> JobEvent {
    event(Kind::TokenDelta(TokenDelta {
        text: text.into(),
        output_tokens,
        ..Default::default()
    }))
}

fn started(attempt: u32) -> JobEvent {
    event(Kind::Started(JobStarted {
        attempt,
        ..Default::default()
    }))
}

fn completed() -> JobEvent {
    event(Kind::Completed(JobCompleted::default()))
}

fn sequences(read: &LogRead) -> Vec<u64> {
    read.events.iter().map(|e| e.sequence).collect()
}

#[tokio::test]
async fn sequences_rise_by_one_and_resume_after_any_point() -> Result<(), Error> {
    let log = MemoryEventLog::new(60, 60);
    let id = JobId::now_v7();
    assert!(log.read_after(id, 0).await?.is_none(), "no log yet");
    let queued = event(Kind::Queued(JobQueued::default()));
    assert_eq!(log.append(id, &queued, Fence::None).await?, Some(1));
    assert_eq!(log.append(id, &started(1), Fence::Start(1)).await?, Some(2));
    let batch = [delta("a", 1), delta("b", 2), delta("c", 3)];
    assert_eq!(
        log.append_tracked(id, &batch, Fence::Attempt(1), None)
            .await?,
        Some(5)
    );
    let all = log.read_after(id, 0).await?.expect("a log");
    assert_eq!(sequences(&all), vec![1, 2, 3, 4, 5]);
    assert!(all.events.iter().all(|e| e.job_id == id.to_string()));
    assert_eq!(all.terminal_sequence, None);
    let rest = log.read_after(id, 3).await?.expect("a log");
    assert_eq!(sequences(&rest), vec![4, 5]);
    // Pages: at most the count asked for, and at least one.
    let page = log.read_page(id, 1, 2).await?.expect("a log");
    assert_eq!(sequences(&page), vec![2, 3]);
    let page = log.read_page(id, 3, 0).await?.expect("a log");
    assert_eq!(sequences(&page), vec![4]);
    assert!(
        log.read_after(id, 9)
            .await?
            .expect("a log")
            .events
            .is_empty()
    );
    assert_eq!(log.output_tokens(id).await?, Some(3));
    Ok(())
}

#[tokio::test]
async fn the_terminal_event_closes_the_log() -> Result<(), Error> {
    let log = MemoryEventLog::new(60, 60);
    let id = JobId::now_v7();
    log.append(id, &started(1), Fence::Start(1)).await?;
    assert_eq!(
        log.append(id, &completed(), Fence::Attempt(1)).await?,
        Some(2)
    );
    assert_eq!(
        log.append(id, &delta("late", 9), Fence::Attempt(1)).await?,
        None
    );
    let cancelled = event(Kind::Cancelled(JobCancelled::default()));
    assert_eq!(log.append(id, &cancelled, Fence::None).await?, None);
    let read = log.read_after(id, 0).await?.expect("a log");
    assert_eq!(read.terminal_sequence, Some(2));
    assert_eq!(read.events.len(), 2);
    Ok(())
}

#[tokio::test]
async fn only_the_last_event_of_an_append_may_be_terminal() {
    let log = MemoryEventLog::new(60, 60);
    let events = [completed(), delta("x", 1)];
    let r = log
        .append_tracked(JobId::now_v7(), &events, Fence::None, None)
        .await;
    assert!(matches!(r, Err(Error::Corrupt(_))));
}

#[tokio::test]
async fn a_stale_attempt_cannot_write_or_overwrite_progress() -> Result<(), Error> {
    let log = MemoryEventLog::new(60, 60);
    let id = JobId::now_v7();
    let p = |tokens: u64| JobProgress {
        output_tokens: tokens,
        ..Default::default()
    };
    // A fence on a job no attempt has started is refused and leaves nothing behind.
    assert_eq!(
        log.append(id, &delta("x", 1), Fence::Attempt(1)).await?,
        None
    );
    assert!(log.restart(id, 0, 1, false).await?, "still no log or state");
    log.append(id, &started(1), Fence::Start(1)).await?;
    log.append_tracked(id, &[delta("one", 1)], Fence::Attempt(1), Some(&p(1)))
        .await?;
    assert_eq!(log.append(id, &started(2), Fence::Start(2)).await?, Some(3));
    assert_eq!(
        log.output_tokens(id).await?,
        Some(0),
        "reset by the new attempt"
    );
    let stale = log
        .append_tracked(id, &[delta("old", 2)], Fence::Attempt(1), Some(&p(99)))
        .await?;
    assert_eq!(stale, None);
    assert_eq!(log.append(id, &started(1), Fence::Start(1)).await?, None);
    assert_eq!(log.progress(id).await?.map(|p| p.output_tokens), Some(1));
    assert_eq!(
        log.append_tracked(id, &[delta("new", 5)], Fence::Attempt(2), Some(&p(5)))
            .await?,
        Some(4)
    );
    assert_eq!(log.progress(id).await?.map(|p| p.output_tokens), Some(5));
    Ok(())
}

#[tokio::test]
async fn restart_continues_above_the_base_and_replace_drops_the_old_log() -> Result<(), Error> {
    let log = MemoryEventLog::new(60, 60);
    let id = JobId::now_v7();
    assert!(log.restart(id, 7, 2, false).await?);
    assert!(!log.restart(id, 9, 3, false).await?, "a log exists");
    assert!(log.read_after(id, 0).await?.is_none(), "no events yet");
    assert_eq!(log.append(id, &started(1), Fence::Start(1)).await?, None);
    assert_eq!(log.append(id, &started(2), Fence::Start(2)).await?, Some(8));
    assert_eq!(
        log.append(id, &completed(), Fence::Attempt(2)).await?,
        Some(9)
    );
    assert_eq!(
        sequences(&log.read_after(id, 7).await?.expect("a log")),
        vec![8, 9]
    );
    assert_eq!(
        sequences(&log.read_after(id, 8).await?.expect("a log")),
        vec![9]
    );
    // An operator's retry of the finished job.
    assert!(log.restart(id, 9, 3, true).await?);
    let read = log.read_after(id, 0).await?;
    assert!(read.is_none(), "the old log is gone");
    assert_eq!(
        log.append(id, &started(3), Fence::Start(3)).await?,
        Some(10)
    );
    Ok(())
}

#[tokio::test]
async fn every_watcher_gets_every_event_in_order() -> Result<(), Error> {
    let log = MemoryEventLog::new(60, 60);
    let id = JobId::now_v7();
    let other = JobId::now_v7();
    let mut watchers = Vec::new();
    for _ in 0..5 {
        watchers.push(log.subscribe(id).await?);
    }
    log.append(other, &started(1), Fence::Start(1)).await?;
    log.append(id, &started(1), Fence::Start(1)).await?;
    log.append_tracked(id, &[delta("a", 1), delta("b", 2)], Fence::Attempt(1), None)
        .await?;
    log.append(id, &completed(), Fence::Attempt(1)).await?;
    for w in &mut watchers {
        let mut seen = Vec::new();
        for _ in 0..4 {
            match w.recv().await {
                Some(Live::Event(e)) => seen.push((e.sequence, e.job_id)),
                other => panic!("expected an event, got {other:?}"),
            }
        }
        let want: Vec<(u64, String)> = (1..=4).map(|s| (s, id.to_string())).collect();
        assert_eq!(seen, want);
    }
    drop(watchers);
    assert!(
        log.state().watched.is_empty(),
        "the last watcher unsubscribes"
    );
    Ok(())
}

#[tokio::test]
async fn a_watcher_that_falls_behind_is_told_to_resync() -> Result<(), Error> {
    let log = MemoryEventLog::new(60, 60);
    let id = JobId::now_v7();
    let mut slow = log.subscribe(id).await?;
    log.append(id, &started(1), Fence::Start(1)).await?;
    for i in 0..LIVE_BUFFER as u64 + 10 {
        log.append(id, &delta("x", i), Fence::Attempt(1)).await?;
    }
    assert!(matches!(slow.recv().await, Some(Live::Resync)));
    Ok(())
}

#[tokio::test]
async fn finished_logs_and_snapshots_expire_after_their_ttl() -> Result<(), Error> {
    let log = MemoryEventLog::new(60, 60);
    let id = JobId::now_v7();
    log.append(id, &started(1), Fence::Start(1)).await?;
    log.append_tracked(
        id,
        &[completed()],
        Fence::Attempt(1),
        Some(&JobProgress::default()),
    )
    .await?;
    // Move the clock instead of sleeping: pretend the TTL has passed.
    let later = Instant::now() + Duration::from_secs(61);
    {
        let mut state = log.state();
        assert!(state.log(id, Instant::now()).is_some());
        state.next_sweep = None;
        state.sweep(later);
        assert!(state.logs.is_empty() && state.progress.is_empty());
    }
    assert!(log.read_after(id, 0).await?.is_none());
    assert!(log.restart(id, 2, 2, false).await?, "nothing left to keep");
    Ok(())
}

#[tokio::test]
async fn unfinished_logs_outlive_the_finished_ttl() -> Result<(), Error> {
    let log = MemoryEventLog::new(60, 60);
    let id = JobId::now_v7();
    log.append(id, &started(1), Fence::Start(1)).await?;
    let later = Instant::now() + Duration::from_secs(3600);
    let mut state = log.state();
    state.next_sweep = None;
    state.sweep(later);
    assert!(state.log(id, later).is_some());
    Ok(())
}

#[tokio::test]
async fn appends_that_ask_report_the_queues_cancel_flag() -> Result<(), Box<dyn std::error::Error>>
{
    use crate::queue::memory::MemoryQueue;
    let queue = Arc::new(MemoryQueue::new());
    let log = MemoryEventLog::new(60, 60).with_cancel_flags(queue.clone());
    let id = JobId::now_v7();
    let opened = log
        .append_events(id, &[started(1)], Fence::Start(1), None, CancelCheck::Read)
        .await?;
    assert_eq!((opened.sequence, opened.cancel_requested), (Some(1), false));
    assert_eq!(
        log.request_cancel(id, "stop").await?,
        CancelRequest::Flagged
    );
    let asked = log
        .append_events(
            id,
            &[delta("a", 1)],
            Fence::Attempt(1),
            None,
            CancelCheck::Read,
        )
        .await?;
    assert_eq!((asked.sequence, asked.cancel_requested), (Some(2), true));
    let unasked = log
        .append_events(
            id,
            &[delta("b", 2)],
            Fence::Attempt(1),
            None,
            CancelCheck::Skip,
        )
        .await?;
    assert!(!unasked.cancel_requested);
    // Without the queue's flags nothing is reported.
    let alone = MemoryEventLog::new(60, 60)
        .append_events(id, &[delta("a", 1)], Fence::None, None, CancelCheck::Read)
        .await?;
    assert_eq!((alone.sequence, alone.cancel_requested), (Some(1), false));
    Ok(())
}

#[tokio::test]
async fn a_cancel_and_a_claim_on_the_end_are_ordered_in_one_place()
-> Result<(), Box<dyn std::error::Error>> {
    use crate::queue::{Queue, memory::MemoryQueue};
    let queue = Arc::new(MemoryQueue::new());
    let log = MemoryEventLog::new(60, 60).with_cancel_flags(queue.clone());

    // A cancel before the claim wins: the claim is refused and reports the flag.
    let first = JobId::now_v7();
    log.append_events(
        first,
        &[started(1)],
        Fence::Start(1),
        None,
        CancelCheck::Read,
    )
    .await?;
    assert_eq!(
        log.request_cancel(first, "stop").await?,
        CancelRequest::Flagged
    );
    let refused = log
        .append_events(
            first,
            &[delta("a", 1)],
            Fence::Attempt(1),
            None,
            CancelCheck::Seal,
        )
        .await?;
    assert_eq!(
        (refused.sequence, refused.cancel_requested, refused.sealed),
        (Some(2), true, false)
    );

    // A cancel after the claim is told the job is ending; the claim holds, also for the
    // attempt's later appends; a later attempt is no longer covered by it.
    let second = JobId::now_v7();
    log.append_events(
        second,
        &[started(1)],
        Fence::Start(1),
        None,
        CancelCheck::Read,
    )
    .await?;
    let claimed = log
        .append_events(
            second,
            &[delta("a", 1)],
            Fence::Attempt(1),
            None,
            CancelCheck::Seal,
        )
        .await?;
    assert_eq!((claimed.cancel_requested, claimed.sealed), (false, true));
    assert_eq!(
        log.request_cancel(second, "late").await?,
        CancelRequest::Ending
    );
    assert_eq!(
        queue.cancel_requested(second).await?.as_deref(),
        Some("late")
    );
    let again = log
        .append_events(
            second,
            &[delta("b", 2)],
            Fence::Attempt(1),
            None,
            CancelCheck::Seal,
        )
        .await?;
    assert_eq!((again.cancel_requested, again.sealed), (false, true));
    let next = log
        .append_events(
            second,
            &[started(2)],
            Fence::Start(2),
            None,
            CancelCheck::Read,
        )
        .await?;
    assert!(next.cancel_requested, "a later attempt stops at its start");
    assert_eq!(
        log.request_cancel(second, "late").await?,
        CancelRequest::Flagged
    );

    // After the terminal event nothing is set, and the answer is that event.
    let third = JobId::now_v7();
    log.append_events(
        third,
        &[started(1)],
        Fence::Start(1),
        None,
        CancelCheck::Read,
    )
    .await?;
    log.close(third, &[completed()], Fence::Attempt(1), None, None)
        .await?;
    match log.request_cancel(third, "too late").await? {
        CancelRequest::Ended(e) => {
            assert_eq!(e.sequence, 2);
            assert!(matches!(e.kind, Some(Kind::Completed(_))));
        }
        other => panic!("expected the terminal event, got {other:?}"),
    }
    assert_eq!(queue.cancel_requested(third).await?, None);
    Ok(())
}

#[tokio::test]
async fn a_start_returns_the_log_before_it_and_a_close_the_log_it_did_not_expect()
-> Result<(), Error> {
    let log = MemoryEventLog::new(60, 60);
    let id = JobId::now_v7();
    let queued = event(Kind::Queued(JobQueued::default()));
    log.append(id, &queued, Fence::None).await?;
    let opened = log
        .append_events(id, &[started(1)], Fence::Start(1), None, CancelCheck::Skip)
        .await?;
    assert_eq!(opened.sequence, Some(2));
    assert_eq!(
        opened
            .earlier
            .iter()
            .map(|e| e.sequence)
            .collect::<Vec<_>>(),
        [1]
    );
    let flushed = log
        .append_events(
            id,
            &[delta("a", 1)],
            Fence::Attempt(1),
            None,
            CancelCheck::Skip,
        )
        .await?;
    assert!(
        flushed.earlier.is_empty(),
        "only a start returns the log before it"
    );
    assert!(matches!(
        log.close(id, &[delta("b", 2)], Fence::Attempt(1), None, None)
            .await,
        Err(Error::Corrupt(_))
    ));

    // Expected: nothing comes back.
    let closed = log
        .close(id, &[completed()], Fence::Attempt(1), None, Some(4))
        .await?;
    assert_eq!((closed.sequence, closed.log.len()), (Some(4), 0));
    // Already closed (another writer came first): the log as it is.
    let again = log
        .close(id, &[completed()], Fence::None, None, Some(5))
        .await?;
    assert_eq!(again.sequence, None);
    assert_eq!(
        again.log.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );

    // Not what was expected (or nothing was): the whole log, terminal event included.
    let other = JobId::now_v7();
    log.append(other, &started(1), Fence::Start(1)).await?;
    let closed = log
        .close(other, &[completed()], Fence::Attempt(1), None, Some(9))
        .await?;
    assert_eq!(closed.sequence, Some(2));
    assert_eq!(closed.log.len(), 2);
    assert!(is_terminal(&closed.log[1]));
    Ok(())
}
