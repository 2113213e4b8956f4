//! The event log's contract (`src/events/*.lua`): sequences that rise by one with no gaps,
//! the attempt fences, reads and pages, the terminal event, restarts, the cancel flag and its
//! order with an attempt's claim on the job's end, live delivery to watchers, and the expiry
//! of finished logs.

use llm_jobs::{
    api::event_codec::{GRPC_PREFIX, ProtoCodec},
    events::{
        Appended, CancelCheck, CancelRequest, Closed, Codec, Error, Event as JobEvent, EventKind,
        EventLog, Fence, Live, LogRead, Subscription, event,
        event::{
            Cancelled as JobCancelled, Completed as JobCompleted, Queued as JobQueued,
            Started as JobStarted, TokenDelta,
        },
        is_terminal,
    },
    job::JobId,
    progress::JobProgress,
    queue::Queue,
};

use super::{Kind, contract, eventually, next_live};

contract! {
    sequences_rise_by_one_and_reads_resume_after_any_point(events);
    an_append_larger_than_one_redis_command_takes_is_kept_whole(events);
    the_terminal_event_closes_the_log(events);
    only_the_last_event_of_an_append_may_be_terminal(events);
    a_stale_attempt_cannot_write_or_overwrite_progress(events);
    an_attempts_append_to_a_log_that_holds_no_attempt_is_refused_as_lost(events);
    a_retried_append_goes_in_once(events);
    a_restart_continues_above_its_base_and_a_replace_drops_the_old_run(events, queue);
    a_start_returns_the_log_before_it_and_a_close_the_log_it_did_not_expect(events);
    an_append_that_asks_reports_the_jobs_cancel_flag(events, queue);
    a_cancel_and_an_attempts_end_are_ordered_in_the_log(events, queue);
    every_watcher_gets_every_event_in_order(events);
    watchers_that_arrive_together_are_each_subscribed_and_marked(events);
    many_events_of_one_append_reach_a_live_watcher_in_order_and_gap_free(events);
    a_watcher_that_falls_behind_is_told_to_resync(events);
    an_append_says_whether_anyone_watches_the_job(events, kind);
    a_job_followed_from_its_opening_append_counts_as_watched(events);
    a_finished_jobs_live_keys_expire_after_the_window(events, queue) window 1;
}

fn queued() -> JobEvent {
    event(EventKind::Queued(JobQueued::default()))
}

fn started(attempt: u32) -> JobEvent {
    event(EventKind::Started(JobStarted {
        attempt,
        ..Default::default()
    }))
}

fn delta(text: &str, output_tokens: u64) -> JobEvent {
    event(EventKind::TokenDelta(TokenDelta {
        text: text.into(),
        output_tokens,
        ..Default::default()
    }))
}

/// Delta number `i`, as a worker's flush carries them.
fn nth_delta(i: usize) -> JobEvent {
    delta(&format!("t{i} "), i as u64 + 1)
}

fn completed() -> JobEvent {
    event(EventKind::Completed(JobCompleted::default()))
}

fn cancelled(reason: &str) -> JobEvent {
    event(EventKind::Cancelled(JobCancelled {
        reason: reason.into(),
    }))
}

fn progress(output_tokens: u64) -> JobProgress {
    JobProgress {
        output_tokens,
        ..Default::default()
    }
}

fn sequences(events: &[JobEvent]) -> Vec<u64> {
    events.iter().map(|e| e.sequence).collect()
}

/// The job's whole log; fails when it has none.
async fn whole(log: &dyn EventLog, id: JobId) -> anyhow::Result<LogRead> {
    log.read_after(id, 0)
        .await?
        .ok_or_else(|| anyhow::anyhow!("job {id} has no log"))
}

/// Appends `events` under `fence`, reading or claiming as `cancel` says.
async fn append(
    log: &dyn EventLog,
    id: JobId,
    events: &[JobEvent],
    fence: Fence,
    cancel: CancelCheck,
) -> anyhow::Result<Appended> {
    Ok(log.append_events(id, events, fence, None, cancel).await?)
}

async fn sequences_rise_by_one_and_reads_resume_after_any_point(
    log: &dyn EventLog,
) -> anyhow::Result<()> {
    let id = JobId::now_v7();
    assert!(log.read_after(id, 0).await?.is_none(), "no log yet");
    assert_eq!(log.output_tokens(id).await?, None);
    assert_eq!(log.append(id, &queued(), Fence::None).await?, Some(1));
    assert_eq!(log.append(id, &started(1), Fence::Start(1)).await?, Some(2));
    assert_eq!(log.output_tokens(id).await?, Some(0), "a start counts 0");
    let batch = [delta("a", 1), delta("b", 2), delta("c", 3)];
    assert_eq!(
        log.append_tracked(id, &batch, Fence::Attempt(1), None)
            .await?,
        Some(5)
    );
    // An empty append appends nothing and is not refused for it.
    let nothing = append(log, id, &[], Fence::Attempt(1), CancelCheck::Skip).await?;
    assert_eq!(nothing, Appended::default());
    let all = whole(log, id).await?;
    assert_eq!(sequences(&all.events), [1, 2, 3, 4, 5]);
    assert!(all.events.iter().all(|e| e.job_id == id));
    assert!(matches!(&all.events[3].kind, EventKind::TokenDelta(d) if d.text == "b"));
    assert_eq!(all.terminal_sequence, None);
    let rest = log.read_after(id, 3).await?.expect("a log");
    assert_eq!(sequences(&rest.events), [4, 5]);
    // Pages: at most the count asked for, and at least one.
    let page = log.read_page(id, 1, 2).await?.expect("a log");
    assert_eq!(sequences(&page.events), [2, 3]);
    let page = log.read_page(id, 3, 0).await?.expect("a log");
    assert_eq!(sequences(&page.events), [4]);
    let page = log.read_page(id, 4, 10).await?.expect("a log");
    assert_eq!(sequences(&page.events), [5]);
    // Past the end: a log with nothing more in it, not a missing log.
    let past = log.read_after(id, 9).await?.expect("a log");
    assert!(past.events.is_empty());
    // The newest delta's count. (Redis reads it from the log's last 32 events and, when
    // neither a delta nor a start is among them, falls back to the progress snapshot, so that
    // a flush writes no counter; in process the count is kept as each append goes in. The two
    // agree whenever an attempt's deltas are recent, which is what is asserted.)
    assert_eq!(log.output_tokens(id).await?, Some(3));
    assert_eq!(log.terminal_sequence(id).await?, None);
    // Another job's log is its own.
    let other = JobId::now_v7();
    assert_eq!(log.append(other, &queued(), Fence::None).await?, Some(1));
    assert_eq!(whole(log, id).await?.events.len(), 5);
    Ok(())
}

/// `append.lua` pushes a long append in chunks, since Lua's `unpack` takes only so many
/// values; the in-process log takes the same append whole.
async fn an_append_larger_than_one_redis_command_takes_is_kept_whole(
    log: &dyn EventLog,
) -> anyhow::Result<()> {
    let id = JobId::now_v7();
    let deltas: Vec<JobEvent> = (0..10_000).map(nth_delta).collect();
    assert_eq!(
        log.append_tracked(id, &deltas, Fence::None, None).await?,
        Some(10_000)
    );
    let read = log.read_after(id, 9_990).await?.expect("a log");
    assert_eq!(
        sequences(&read.events),
        (9_991..=10_000).collect::<Vec<u64>>()
    );
    assert!(matches!(
        &read.events[9].kind,
        EventKind::TokenDelta(d) if d.text == "t9999 "
    ));
    assert_eq!(whole(log, id).await?.events.len(), 10_000);
    let page = log.read_page(id, 100, 256).await?.expect("a log");
    assert_eq!(sequences(&page.events), (101..=356).collect::<Vec<u64>>());
    assert_eq!(log.output_tokens(id).await?, Some(10_000));
    Ok(())
}

/// Exactly one terminal event ends a log: after it, every append is refused, whoever writes.
async fn the_terminal_event_closes_the_log(log: &dyn EventLog) -> anyhow::Result<()> {
    let id = JobId::now_v7();
    log.append(id, &started(1), Fence::Start(1)).await?;
    assert_eq!(log.terminal_sequence(id).await?, None);
    assert_eq!(
        log.append(id, &completed(), Fence::Attempt(1)).await?,
        Some(2)
    );
    assert_eq!(log.terminal_sequence(id).await?, Some(2));
    assert_eq!(
        log.append(id, &delta("late", 9), Fence::Attempt(1)).await?,
        None
    );
    assert_eq!(log.append(id, &cancelled(""), Fence::None).await?, None);
    assert_eq!(log.append(id, &started(2), Fence::Start(2)).await?, None);
    let read = whole(log, id).await?;
    assert_eq!(read.terminal_sequence, Some(2));
    assert_eq!(sequences(&read.events), [1, 2]);
    assert!(is_terminal(&read.events[1]));
    assert_eq!(
        log.read_after(id, 2)
            .await?
            .expect("a log")
            .terminal_sequence,
        Some(2)
    );
    Ok(())
}

async fn only_the_last_event_of_an_append_may_be_terminal(
    log: &dyn EventLog,
) -> anyhow::Result<()> {
    let id = JobId::now_v7();
    let events = [completed(), delta("x", 1)];
    let appended = log.append_tracked(id, &events, Fence::None, None).await;
    assert!(matches!(appended, Err(Error::Corrupt(_))), "{appended:?}");
    // A close must end with one.
    let closed = log
        .close(id, &[delta("x", 1)], Fence::None, None, None)
        .await;
    assert!(matches!(closed, Err(Error::Corrupt(_))), "{closed:?}");
    assert!(
        log.read_after(id, 0).await?.is_none(),
        "nothing was written"
    );
    Ok(())
}

/// The fences: `Start(n)` makes attempt n current and refuses older starts; `Attempt(n)`
/// writes only while n is current; a refused append changes nothing, the progress snapshot
/// included.
async fn a_stale_attempt_cannot_write_or_overwrite_progress(
    log: &dyn EventLog,
) -> anyhow::Result<()> {
    let id = JobId::now_v7();
    // A fence on a job no attempt has started is refused and leaves nothing behind.
    assert_eq!(
        log.append(id, &delta("x", 1), Fence::Attempt(1)).await?,
        None
    );
    assert!(log.read_after(id, 0).await?.is_none());
    assert!(log.restart(id, 0, 1, false).await?, "still no log or state");
    log.append(id, &started(1), Fence::Start(1)).await?;
    log.append_tracked(
        id,
        &[delta("one", 1)],
        Fence::Attempt(1),
        Some(&progress(1)),
    )
    .await?;
    assert_eq!(log.append(id, &started(2), Fence::Start(2)).await?, Some(3));
    assert_eq!(
        log.output_tokens(id).await?,
        Some(0),
        "reset by the new attempt"
    );
    let stale = log
        .append_tracked(
            id,
            &[delta("old", 2)],
            Fence::Attempt(1),
            Some(&progress(99)),
        )
        .await?;
    assert_eq!(stale, None);
    assert_eq!(log.append(id, &started(1), Fence::Start(1)).await?, None);
    assert_eq!(log.progress(id).await?.map(|p| p.output_tokens), Some(1));
    let stale_close = log
        .close(id, &[completed()], Fence::Attempt(1), None, None)
        .await?;
    assert_eq!(
        stale_close,
        Closed::default(),
        "refused, and no log returned"
    );
    assert_eq!(
        log.append_tracked(
            id,
            &[delta("new", 5)],
            Fence::Attempt(2),
            Some(&progress(5))
        )
        .await?,
        Some(4)
    );
    assert_eq!(log.progress(id).await?.map(|p| p.output_tokens), Some(5));
    // Starting the current attempt again is allowed (its own start, resent).
    assert_eq!(log.append(id, &started(2), Fence::Start(2)).await?, Some(5));
    assert_eq!(sequences(&whole(log, id).await?.events), [1, 2, 3, 4, 5]);
    Ok(())
}

/// An attempt's append to a log that holds no attempt (its keys lost with Redis after the
/// attempt started, or none ever started) is refused and says the log is lost, and so is a
/// close; a refusal for any other reason (a newer attempt, a closed log) does not.
async fn an_attempts_append_to_a_log_that_holds_no_attempt_is_refused_as_lost(
    log: &dyn EventLog,
) -> anyhow::Result<()> {
    let id = JobId::now_v7();
    for fence in [
        Fence::Attempt(1),
        Fence::At {
            attempt: 1,
            head: 3,
        },
    ] {
        let refused = append(log, id, &[delta("x", 1)], fence, CancelCheck::Read).await?;
        assert_eq!((refused.sequence, refused.lost), (None, true), "{fence:?}");
    }
    let closed = log
        .close(id, &[completed()], Fence::Attempt(1), None, Some(3))
        .await?;
    assert_eq!(
        closed,
        Closed {
            lost: true,
            ..Closed::default()
        }
    );
    // The gateway's `queued` event makes a log, which still holds no attempt.
    assert_eq!(log.append(id, &queued(), Fence::None).await?, Some(1));
    let refused = append(
        log,
        id,
        &[delta("x", 1)],
        Fence::Attempt(1),
        CancelCheck::Skip,
    )
    .await?;
    assert_eq!((refused.sequence, refused.lost), (None, true));

    let started = append(log, id, &[started(2)], Fence::Start(2), CancelCheck::Skip).await?;
    assert_eq!((started.sequence, started.lost), (Some(2), false));
    let stale = append(
        log,
        id,
        &[delta("old", 1)],
        Fence::Attempt(1),
        CancelCheck::Skip,
    )
    .await?;
    assert_eq!(
        (stale.sequence, stale.lost),
        (None, false),
        "a newer attempt"
    );
    let stale_close = log
        .close(id, &[completed()], Fence::Attempt(1), None, None)
        .await?;
    assert_eq!(stale_close, Closed::default(), "a newer attempt");
    let closed = log
        .close(id, &[completed()], Fence::Attempt(2), None, Some(3))
        .await?;
    assert_eq!((closed.sequence, closed.lost), (Some(3), false));
    let after = append(
        log,
        id,
        &[delta("late", 2)],
        Fence::Attempt(2),
        CancelCheck::Skip,
    )
    .await?;
    assert_eq!((after.sequence, after.lost), (None, false), "a closed log");
    assert_eq!(sequences(&whole(log, id).await?.events), [1, 2, 3]);
    Ok(())
}

/// An append at a known end of the log (`Fence::At`), resent because its answer was lost:
/// added when the log is where it was, answered without adding when an earlier try already
/// put it in (a claim on the job's end made by that try is reported again), refused otherwise.
async fn a_retried_append_goes_in_once(log: &dyn EventLog) -> anyhow::Result<()> {
    let id = JobId::now_v7();
    assert_eq!(log.append(id, &started(1), Fence::Start(1)).await?, Some(1));
    let batch = [nth_delta(0), nth_delta(1)];
    let again = Fence::At {
        attempt: 1,
        head: 1,
    };
    // The first try never ran: the retry adds the batch.
    assert_eq!(log.append_tracked(id, &batch, again, None).await?, Some(3));
    // The first try ran after all (or the retry is retried): nothing is added twice.
    assert_eq!(log.append_tracked(id, &batch, again, None).await?, Some(3));
    // The log moved on in some other way: refused.
    assert_eq!(
        log.append_tracked(id, &[nth_delta(2)], again, None).await?,
        None
    );
    // Only the current attempt may retry.
    let stale = Fence::At {
        attempt: 0,
        head: 3,
    };
    assert_eq!(
        log.append_tracked(id, &[nth_delta(2)], stale, None).await?,
        None
    );
    assert_eq!(sequences(&whole(log, id).await?.events), [1, 2, 3]);

    // The flush that claims the job's end, resent: the claim is kept and reported again.
    let at_end = Fence::At {
        attempt: 1,
        head: 3,
    };
    let sealed = append(log, id, &[nth_delta(2)], at_end, CancelCheck::Seal).await?;
    assert_eq!((sealed.sequence, sealed.sealed), (Some(4), true));
    let resent = append(log, id, &[nth_delta(2)], at_end, CancelCheck::Seal).await?;
    assert_eq!(
        (resent.sequence, resent.sealed, resent.cancel_requested),
        (Some(4), true, false)
    );
    assert_eq!(sequences(&whole(log, id).await?.events), [1, 2, 3, 4]);
    Ok(())
}

/// `restart.lua`: a log started anew continues above its base and fences out older attempts;
/// without `replace` it never overwrites a log; with it (an operator's retry of a finished
/// job) the old run goes, its cancel flag with it.
async fn a_restart_continues_above_its_base_and_a_replace_drops_the_old_run(
    log: &dyn EventLog,
    queue: &dyn Queue,
) -> anyhow::Result<()> {
    let id = JobId::now_v7();
    assert!(log.restart(id, 7, 2, false).await?);
    assert!(
        !log.restart(id, 9, 3, false).await?,
        "a restarted log is kept"
    );
    assert!(log.read_after(id, 0).await?.is_none(), "no events yet");
    assert_eq!(log.terminal_sequence(id).await?, None);
    assert_eq!(log.append(id, &started(1), Fence::Start(1)).await?, None);
    assert_eq!(log.append(id, &started(2), Fence::Start(2)).await?, Some(8));
    // The attempt claims the job's end; a cancel after that leaves a flag behind.
    let sealed = append(
        log,
        id,
        &[delta("a", 1)],
        Fence::Attempt(2),
        CancelCheck::Seal,
    )
    .await?;
    assert_eq!((sealed.sequence, sealed.sealed), (Some(9), true));
    assert_eq!(log.request_cancel(id, "late").await?, CancelRequest::Ending);
    assert_eq!(
        log.append(id, &completed(), Fence::Attempt(2)).await?,
        Some(10)
    );
    assert_eq!(sequences(&whole(log, id).await?.events), [8, 9, 10]);
    assert_eq!(
        sequences(&log.read_after(id, 8).await?.expect("a log").events),
        [9, 10]
    );
    assert_eq!(queue.cancel_requested(id).await?.as_deref(), Some("late"));
    assert!(
        !log.restart(id, 10, 3, false).await?,
        "a finished log is kept for its window"
    );

    // An operator's retry of the finished job.
    assert!(log.restart(id, 10, 3, true).await?);
    assert!(
        log.read_after(id, 0).await?.is_none(),
        "the old log is gone"
    );
    assert_eq!(log.terminal_sequence(id).await?, None);
    assert_eq!(
        queue.cancel_requested(id).await?,
        None,
        "the old run's flag is gone"
    );
    assert_eq!(
        log.append(id, &delta("x", 1), Fence::Attempt(2)).await?,
        None
    );
    let opened = append(log, id, &[started(3)], Fence::Start(3), CancelCheck::Read).await?;
    assert_eq!(
        (opened.sequence, opened.cancel_requested),
        (Some(11), false)
    );
    assert!(opened.earlier.is_empty());
    Ok(())
}

/// What an append returns besides its sequence: an accepted start gets the log before it
/// (for the attempt to store whole at its end); a close gets the whole log unless its
/// terminal event landed where the caller expected.
async fn a_start_returns_the_log_before_it_and_a_close_the_log_it_did_not_expect(
    log: &dyn EventLog,
) -> anyhow::Result<()> {
    let id = JobId::now_v7();
    log.append(id, &queued(), Fence::None).await?;
    let opened = append(log, id, &[started(1)], Fence::Start(1), CancelCheck::Skip).await?;
    assert_eq!(opened.sequence, Some(2));
    assert_eq!(sequences(&opened.earlier), [1]);
    assert!(matches!(opened.earlier[0].kind, EventKind::Queued(_)));
    assert_eq!(opened.earlier[0].job_id, id);
    let flushed = append(
        log,
        id,
        &[delta("a", 1)],
        Fence::Attempt(1),
        CancelCheck::Skip,
    )
    .await?;
    assert!(
        flushed.earlier.is_empty(),
        "only a start returns the log before it"
    );
    let refused = append(log, id, &[started(0)], Fence::Start(0), CancelCheck::Skip).await?;
    assert_eq!(
        refused,
        Appended::default(),
        "a refused start returns nothing"
    );

    // Expected: nothing comes back.
    let closed = log
        .close(id, &[completed()], Fence::Attempt(1), None, Some(4))
        .await?;
    assert_eq!(
        closed,
        Closed {
            sequence: Some(4),
            ..Closed::default()
        }
    );
    // Already closed (another writer came first): refused, with the log as it is.
    let again = log
        .close(id, &[cancelled("")], Fence::None, None, Some(5))
        .await?;
    assert_eq!(again.sequence, None);
    assert_eq!(sequences(&again.log), [1, 2, 3, 4]);
    assert!(matches!(again.log[3].kind, EventKind::Completed(_)));

    // Not what was expected, or nothing was: the whole log, terminal event included.
    for expected in [Some(9), None] {
        let other = JobId::now_v7();
        log.append(other, &started(1), Fence::Start(1)).await?;
        let closed = log
            .close(
                other,
                &[delta("b", 2), completed()],
                Fence::Attempt(1),
                None,
                expected,
            )
            .await?;
        assert_eq!(closed.sequence, Some(3));
        assert_eq!(sequences(&closed.log), [1, 2, 3]);
        assert!(is_terminal(&closed.log[2]));
        assert!(closed.log.iter().all(|e| e.job_id == other));
    }
    Ok(())
}

/// An append that asks reads the job's cancel flag in the same step; one that does not is
/// told nothing. A cancel of a job without a log (still queued) sets the flag, which the
/// first attempt's start then reads.
async fn an_append_that_asks_reports_the_jobs_cancel_flag(
    log: &dyn EventLog,
    queue: &dyn Queue,
) -> anyhow::Result<()> {
    let id = JobId::now_v7();
    let opened = append(log, id, &[started(1)], Fence::Start(1), CancelCheck::Read).await?;
    assert_eq!((opened.sequence, opened.cancel_requested), (Some(1), false));
    assert_eq!(
        log.request_cancel(id, "changed my mind").await?,
        CancelRequest::Flagged
    );
    let flushed = append(
        log,
        id,
        &[nth_delta(0)],
        Fence::Attempt(1),
        CancelCheck::Read,
    )
    .await?;
    assert_eq!(
        (flushed.sequence, flushed.cancel_requested),
        (Some(2), true)
    );
    let unasked = append(
        log,
        id,
        &[nth_delta(1)],
        Fence::Attempt(1),
        CancelCheck::Skip,
    )
    .await?;
    assert_eq!(
        (unasked.sequence, unasked.cancel_requested),
        (Some(3), false)
    );
    // A refused append still reads the flag.
    let stale = append(
        log,
        id,
        &[nth_delta(1)],
        Fence::Attempt(0),
        CancelCheck::Read,
    )
    .await?;
    assert_eq!((stale.sequence, stale.cancel_requested), (None, true));
    // Another job's flag is its own.
    let other = append(
        log,
        JobId::now_v7(),
        &[nth_delta(0)],
        Fence::None,
        CancelCheck::Read,
    )
    .await?;
    assert!(!other.cancel_requested);

    let waiting = JobId::now_v7();
    assert_eq!(
        log.request_cancel(waiting, "never mind").await?,
        CancelRequest::Flagged
    );
    assert!(
        log.read_after(waiting, 0).await?.is_none(),
        "the flag is not a log"
    );
    assert_eq!(
        queue.cancel_requested(waiting).await?.as_deref(),
        Some("never mind")
    );
    let start = append(
        log,
        waiting,
        &[started(1)],
        Fence::Start(1),
        CancelCheck::Read,
    )
    .await?;
    assert_eq!((start.sequence, start.cancel_requested), (Some(1), true));
    Ok(())
}

/// The race the lifecycle decides in one place, the log: a cancel that reaches it before an
/// attempt claims its end wins; one after the claim is told the job is ending; one after the
/// terminal event gets that event and sets nothing.
async fn a_cancel_and_an_attempts_end_are_ordered_in_the_log(
    log: &dyn EventLog,
    queue: &dyn Queue,
) -> anyhow::Result<()> {
    let seal = |id, attempt, event: JobEvent| async move {
        append(
            log,
            id,
            &[event],
            Fence::Attempt(attempt),
            CancelCheck::Seal,
        )
        .await
    };

    // Between the last token and the end: the cancel lands first, so the claim is refused
    // (the events still go in) and the attempt learns of the cancel.
    let first = JobId::now_v7();
    append(
        log,
        first,
        &[started(1)],
        Fence::Start(1),
        CancelCheck::Read,
    )
    .await?;
    append(
        log,
        first,
        &[nth_delta(0)],
        Fence::Attempt(1),
        CancelCheck::Read,
    )
    .await?;
    assert_eq!(
        log.request_cancel(first, "stop").await?,
        CancelRequest::Flagged
    );
    let refused = seal(first, 1, nth_delta(1)).await?;
    assert_eq!(
        (refused.sequence, refused.cancel_requested, refused.sealed),
        (Some(3), true, false)
    );
    assert_eq!(
        log.request_cancel(first, "stop").await?,
        CancelRequest::Flagged,
        "still not claimed"
    );

    // The claim comes first: the cancel is answered that the job is ending, and the claim
    // holds for the attempt; the flag is still set for a later attempt, whose start reads it.
    let second = JobId::now_v7();
    append(
        log,
        second,
        &[started(1)],
        Fence::Start(1),
        CancelCheck::Read,
    )
    .await?;
    let claimed = seal(second, 1, nth_delta(0)).await?;
    assert_eq!((claimed.cancel_requested, claimed.sealed), (false, true));
    assert_eq!(
        log.request_cancel(second, "late").await?,
        CancelRequest::Ending
    );
    assert_eq!(
        queue.cancel_requested(second).await?.as_deref(),
        Some("late")
    );
    let kept = seal(second, 1, nth_delta(1)).await?;
    assert_eq!((kept.cancel_requested, kept.sealed), (false, true));
    // Read without claiming, the flag shows: only a claim keeps it from the attempt.
    let read = append(
        log,
        second,
        &[nth_delta(2)],
        Fence::Attempt(1),
        CancelCheck::Read,
    )
    .await?;
    assert!(read.cancel_requested);
    let stale = seal(second, 0, nth_delta(1)).await?;
    assert_eq!((stale.sequence, stale.sealed), (None, false));
    let next = append(
        log,
        second,
        &[started(2)],
        Fence::Start(2),
        CancelCheck::Read,
    )
    .await?;
    assert!(next.cancel_requested, "a later attempt stops at its start");
    assert_eq!(
        log.request_cancel(second, "late").await?,
        CancelRequest::Flagged,
        "the claim was the earlier attempt's"
    );
    let refused = seal(second, 2, nth_delta(3)).await?;
    assert_eq!((refused.cancel_requested, refused.sealed), (true, false));

    // After the terminal event: the answer is that event, and no flag is left behind.
    let third = JobId::now_v7();
    append(
        log,
        third,
        &[started(1)],
        Fence::Start(1),
        CancelCheck::Read,
    )
    .await?;
    log.close(
        third,
        &[nth_delta(0), completed()],
        Fence::Attempt(1),
        None,
        None,
    )
    .await?;
    match log.request_cancel(third, "too late").await? {
        CancelRequest::Ended(e) => {
            assert_eq!((e.sequence, e.job_id), (3, third));
            assert!(matches!(e.kind, EventKind::Completed(_)), "{e:?}");
        }
        other => anyhow::bail!("expected the terminal event, got {other:?}"),
    }
    assert_eq!(queue.cancel_requested(third).await?, None);
    let read = whole(log, third).await?;
    assert_eq!((read.events.len(), read.terminal_sequence), (3, Some(3)));
    Ok(())
}

async fn every_watcher_gets_every_event_in_order(log: &dyn EventLog) -> anyhow::Result<()> {
    let id = JobId::now_v7();
    let other = JobId::now_v7();
    let mut watchers = Vec::new();
    for _ in 0..5 {
        watchers.push(log.subscribe(id).await?);
    }
    let mut bystander = log.subscribe(other).await?;
    log.append(other, &started(1), Fence::Start(1)).await?;
    log.append(id, &started(1), Fence::Start(1)).await?;
    log.append_tracked(id, &[delta("a", 1), delta("b", 2)], Fence::Attempt(1), None)
        .await?;
    // A refused append goes out to nobody.
    log.append(id, &delta("stale", 3), Fence::Attempt(0))
        .await?;
    log.append(other, &completed(), Fence::Attempt(1)).await?;
    let want: Vec<(u64, String)> = (1..=3).map(|s| (s, id.to_string())).collect();
    for w in &mut watchers {
        assert_eq!(live_events(w, 3).await?, want);
    }
    // The other job's watcher got that job's events only.
    assert_eq!(
        live_events(&mut bystander, 2).await?,
        [(1, other.to_string()), (2, other.to_string())]
    );
    // Watchers leaving do not end the feed of those who stay.
    let mut last = watchers.pop().expect("five watchers");
    drop(watchers);
    log.append(id, &completed(), Fence::Attempt(1)).await?;
    assert_eq!(live_events(&mut last, 1).await?, [(4, id.to_string())]);
    Ok(())
}

/// A burst of new watchers (the Redis hub subscribes them together, one SUBSCRIBE and one
/// mark for all that waited) leaves each one subscribed to its own job, with its job marked
/// watched; a job whose watchers left and came back in the same burst still gets its events.
async fn watchers_that_arrive_together_are_each_subscribed_and_marked(
    log: &dyn EventLog,
) -> anyhow::Result<()> {
    let ids: Vec<JobId> = (0..40).map(|_| JobId::now_v7()).collect();
    // Two watchers for every fourth job, all asking at once.
    let asks = ids
        .iter()
        .chain(ids.iter().step_by(4))
        .map(|id| log.subscribe(*id));
    let mut watchers: Vec<Subscription> = futures::future::try_join_all(asks).await?;
    // A job watched, left, and watched again while the hub is busy with the others.
    let again = JobId::now_v7();
    drop(log.subscribe(again).await?);
    let rejoined = futures::future::try_join_all(
        std::iter::once(again)
            .chain((0..10).map(|_| JobId::now_v7()))
            .map(|id| log.subscribe(id)),
    )
    .await?;
    for id in &ids {
        let appended = append(log, *id, &[started(1)], Fence::Start(1), CancelCheck::Skip).await?;
        assert_eq!(
            (appended.sequence, appended.watched),
            (Some(1), true),
            "job {id}"
        );
    }
    let appended = append(
        log,
        again,
        &[started(1)],
        Fence::Start(1),
        CancelCheck::Skip,
    )
    .await?;
    assert_eq!((appended.sequence, appended.watched), (Some(1), true));
    let n = ids.len();
    for (i, w) in watchers.iter_mut().enumerate() {
        let id = ids[if i < n { i } else { (i - n) * 4 }];
        assert_eq!(
            live_events(w, 1).await?,
            [(1, id.to_string())],
            "watcher {i}"
        );
    }
    let mut rejoined = rejoined;
    assert_eq!(
        live_events(&mut rejoined[0], 1).await?,
        [(1, again.to_string())]
    );
    Ok(())
}

/// The next `n` live events of `live` (sequence and job id); fails on a resync.
async fn live_events(live: &mut Subscription, n: usize) -> anyhow::Result<Vec<(u64, String)>> {
    let mut seen = Vec::new();
    while seen.len() < n {
        match next_live(live).await? {
            Live::Event(e) => seen.push((e.event().sequence, e.event().job_id.to_string())),
            Live::Resync => anyhow::bail!("a resync after {seen:?}"),
        }
    }
    Ok(seen)
}

async fn many_events_of_one_append_reach_a_live_watcher_in_order_and_gap_free(
    log: &dyn EventLog,
) -> anyhow::Result<()> {
    let id = JobId::now_v7();
    let mut live = log.subscribe(id).await?;
    assert_eq!(log.append(id, &queued(), Fence::None).await?, Some(1));
    // As many events as a watcher's live buffer holds, less the few around them.
    let deltas: Vec<JobEvent> = (0..1000).map(nth_delta).collect();
    assert_eq!(
        log.append_tracked(id, &deltas, Fence::None, None).await?,
        Some(1001)
    );
    assert_eq!(log.append(id, &completed(), Fence::None).await?, Some(1002));

    let mut got = Vec::new();
    while got.len() < 1002 {
        match next_live(&mut live).await? {
            Live::Event(e) if e.event().sequence == got.len() as u64 + 1 => {
                // What watchers are sent is this event's encoding, made once.
                assert_eq!(&ProtoCodec.decode(&e.encoded()[GRPC_PREFIX..])?, e.event());
                got.push(e.event().clone())
            }
            Live::Event(e) => anyhow::bail!(
                "live event {} after {}: the live path lost some",
                e.event().sequence,
                got.len()
            ),
            Live::Resync => anyhow::bail!(
                "a resync after {} live events: the live path lost some",
                got.len()
            ),
        }
    }
    assert!(got.iter().all(|e| e.job_id == id));
    for (i, e) in got[1..1001].iter().enumerate() {
        match &e.kind {
            EventKind::TokenDelta(d) => {
                assert_eq!(
                    (d.text.as_str(), d.output_tokens),
                    (&*format!("t{i} "), i as u64 + 1)
                )
            }
            other => anyhow::bail!("event {}: {other:?}", e.sequence),
        }
    }
    assert!(matches!(got[0].kind, EventKind::Queued(_)));
    assert!(matches!(got[1001].kind, EventKind::Completed(_)));
    // The log agrees with what went out live.
    let read = whole(log, id).await?;
    assert_eq!(read.events, got);
    assert_eq!(read.terminal_sequence, Some(1002));
    Ok(())
}

/// A watcher whose live buffer (1,024 items in both) overflows is told to re-read the log,
/// which has everything. (The check runs on a one-thread runtime, so the watcher reads only
/// after the whole append went out, in Redis as in process.)
async fn a_watcher_that_falls_behind_is_told_to_resync(log: &dyn EventLog) -> anyhow::Result<()> {
    let id = JobId::now_v7();
    let mut slow = log.subscribe(id).await?;
    let deltas: Vec<JobEvent> = (0..2_000).map(nth_delta).collect();
    assert_eq!(
        log.append_tracked(id, &deltas, Fence::None, None).await?,
        Some(2_000)
    );
    assert!(matches!(next_live(&mut slow).await?, Live::Resync));
    assert_eq!(whole(log, id).await?.events.len(), 2_000);
    Ok(())
}

/// The worker gathers a REALTIME job's deltas into timed flushes while nobody follows it, so
/// each append says whether someone does: no before the first watcher, yes while one is
/// subscribed. Once the last has gone the two differ on purpose: in process the append knows
/// at once; in Redis a watcher leaves a watch mark that lapses a minute later (`watch.lua`;
/// a stale mark costs only PUBLISHes, a missing one would delay a watcher), so appends until
/// then still say yes.
async fn an_append_says_whether_anyone_watches_the_job(
    log: &dyn EventLog,
    kind: Kind,
) -> anyhow::Result<()> {
    let id = JobId::now_v7();
    let alone = append(log, id, &[started(1)], Fence::Start(1), CancelCheck::Skip).await?;
    assert_eq!((alone.sequence, alone.watched), (Some(1), false));
    let watcher = log.subscribe(id).await?;
    let second = log.subscribe(id).await?;
    let followed = append(
        log,
        id,
        &[nth_delta(0)],
        Fence::Attempt(1),
        CancelCheck::Skip,
    )
    .await?;
    assert_eq!((followed.sequence, followed.watched), (Some(2), true));
    // Another job is not watched because this one is.
    let other = append(
        log,
        JobId::now_v7(),
        &[nth_delta(0)],
        Fence::None,
        CancelCheck::Skip,
    )
    .await?;
    assert!(!other.watched);
    drop(watcher);
    let one_left = append(
        log,
        id,
        &[nth_delta(1)],
        Fence::Attempt(1),
        CancelCheck::Skip,
    )
    .await?;
    assert_eq!((one_left.sequence, one_left.watched), (Some(3), true));
    drop(second);
    let left = append(
        log,
        id,
        &[nth_delta(2)],
        Fence::Attempt(1),
        CancelCheck::Skip,
    )
    .await?;
    assert_eq!(left.sequence, Some(4));
    assert_eq!(left.watched, kind == Kind::Redis, "{kind:?}");
    Ok(())
}

/// `SubmitAndStream` opens its job's log as followed: the worker's start (which may come
/// before the watcher has subscribed) and its flushes publish at once. A job opened without
/// it is not watched until someone subscribes.
async fn a_job_followed_from_its_opening_append_counts_as_watched(
    log: &dyn EventLog,
) -> anyhow::Result<()> {
    let [followed, alone] = [JobId::now_v7(), JobId::now_v7()];
    assert_eq!(log.open(followed, &queued(), true).await?, Some(1));
    assert_eq!(log.open(alone, &queued(), false).await?, Some(1));
    let start = append(
        log,
        followed,
        &[started(1)],
        Fence::Start(1),
        CancelCheck::Skip,
    )
    .await?;
    assert_eq!((start.sequence, start.watched), (Some(2), true));
    let start = append(
        log,
        alone,
        &[started(1)],
        Fence::Start(1),
        CancelCheck::Skip,
    )
    .await?;
    assert_eq!((start.sequence, start.watched), (Some(2), false));
    // A watcher that subscribes after the start still reads everything, live or from the log.
    let mut live = log.subscribe(followed).await?;
    let next = append(
        log,
        followed,
        &[nth_delta(0)],
        Fence::Attempt(1),
        CancelCheck::Skip,
    )
    .await?;
    assert_eq!((next.sequence, next.watched), (Some(3), true));
    assert_eq!(
        live_events(&mut live, 1).await?,
        [(3, followed.to_string())]
    );
    assert_eq!(sequences(&whole(log, followed).await?.events), [1, 2, 3]);
    Ok(())
}

/// A finished job's live keys go after the log's window (`LLMJOBS_EVENT_LOG_TTL_SECS`; here
/// one second): its log, its state (the terminal sequence, the fence), its progress snapshot
/// (`LLMJOBS_PROGRESS_TTL_SECS`, at most the window) and its cancel flag, whose day-long life
/// the end shortens to the window; the store keeps the log from then on. An unfinished log
/// stays, and so does its job's cancel flag.
async fn a_finished_jobs_live_keys_expire_after_the_window(
    log: &dyn EventLog,
    queue: &dyn Queue,
) -> anyhow::Result<()> {
    let [done, running] = [JobId::now_v7(), JobId::now_v7()];
    for id in [done, running] {
        log.append(id, &started(1), Fence::Start(1)).await?;
        log.append_tracked(id, &[delta("a", 1)], Fence::Attempt(1), Some(&progress(1)))
            .await?;
        assert_eq!(
            log.request_cancel(id, "stop").await?,
            CancelRequest::Flagged
        );
    }
    let closed = log
        .close(done, &[cancelled("stop")], Fence::Attempt(1), None, Some(3))
        .await?;
    assert_eq!(closed.sequence, Some(3));
    // Right after the end, all of it is there.
    assert_eq!(whole(log, done).await?.terminal_sequence, Some(3));
    assert!(log.progress(done).await?.is_some());
    assert_eq!(queue.cancel_requested(done).await?.as_deref(), Some("stop"));

    eventually("the finished log expires", || async {
        Ok(log.read_after(done, 0).await?.is_none().then_some(()))
    })
    .await?;
    assert_eq!(log.terminal_sequence(done).await?, None);
    assert_eq!(log.progress(done).await?, None);
    assert_eq!(
        queue.cancel_requested(done).await?,
        None,
        "the flag went with the log"
    );
    assert!(
        log.restart(done, 3, 2, false).await?,
        "nothing left to keep"
    );

    // The unfinished log, written at the same time, outlives the window.
    assert_eq!(sequences(&whole(log, running).await?.events), [1, 2]);
    assert_eq!(
        log.progress(running).await?.map(|p| p.output_tokens),
        Some(1)
    );
    assert_eq!(
        queue.cancel_requested(running).await?.as_deref(),
        Some("stop")
    );
    Ok(())
}
