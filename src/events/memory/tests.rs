//! What the event-log contract (`tests/it/contract/events.rs`, run on Redis and on this log)
//! cannot show: expiry on a clock moved by hours, the sweep that frees expired entries nobody
//! touches again, and a log used without the queue's cancel flags.

use super::*;
use crate::events::{
    EventKind, event,
    event::{Completed, Started, TokenDelta},
    testing::TextCodec,
};

fn log() -> MemoryEventLog {
    MemoryEventLog::new(Arc::new(TextCodec), 60, 60)
}

fn delta(text: &str, output_tokens: u64) -> Event {
    event(EventKind::TokenDelta(TokenDelta {
        text: text.into(),
        output_tokens,
        ..Default::default()
    }))
}

fn started(attempt: u32) -> Event {
    event(EventKind::Started(Started {
        attempt,
        ..Started::default()
    }))
}

fn completed() -> Event {
    event(EventKind::Completed(Completed::default()))
}

#[tokio::test]
async fn the_sweep_frees_expired_logs_and_snapshots_nobody_touches() -> Result<(), Error> {
    let log = log();
    let id = JobId::now_v7();
    log.append(id, &started(1), Fence::Start(1)).await?;
    log.append_tracked(
        id,
        &[completed()],
        Fence::Attempt(1),
        Some(&JobProgress::default()),
    )
    .await?;
    // Move the clock instead of sleeping: pretend the window has passed.
    let later = Instant::now() + Duration::from_secs(61);
    let mut state = log.state();
    state.next_sweep = None;
    state.sweep(later);
    assert!(state.logs.is_empty() && state.progress.is_empty());
    Ok(())
}

#[tokio::test]
async fn unfinished_logs_outlive_the_finished_ttl() -> Result<(), Error> {
    let log = log();
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
async fn without_the_queues_flags_appends_report_no_cancel_and_cancels_set_none()
-> Result<(), Error> {
    let log = log();
    let id = JobId::now_v7();
    assert_eq!(
        log.request_cancel(id, "stop").await?,
        CancelRequest::Flagged
    );
    let read = log
        .append_events(id, &[delta("a", 1)], Fence::None, None, CancelCheck::Read)
        .await?;
    assert_eq!((read.sequence, read.cancel_requested), (Some(1), false));
    Ok(())
}
