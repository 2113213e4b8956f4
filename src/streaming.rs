//! Serving one job's events to one watcher: replay after a sequence, follow live, repair gaps,
//! replay the stored log when the live one has expired (a snapshot from the store for jobs
//! that ended before logs were stored), and end after the terminal event.
//!
//! Guarantees: events arrive in sequence order with no gaps and no duplicates; the stream ends
//! after the terminal event; it never hangs on a lost message: within [`IDLE_CHECK`] of silence
//! it re-reads the log and consults the store. Following a whole batch is [`batch`].

pub mod batch;
pub mod outbox;
mod replay;
mod tail;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{debug, warn};

use tail::Tail;

use crate::{
    events::{
        Event, EventKind, EventLog, JobTurn,
        event::{Cancelled, Completed, Failed, Heartbeat},
        is_terminal,
    },
    job::{Job, JobId, JobStatus},
    store::Store,
};

/// Longest silence of the live feed before a watcher re-reads the log and checks the store.
pub const IDLE_CHECK: Duration = Duration::from_secs(3);
/// Bytes of events (encoded size plus their in-memory footprint) a watcher may have queued
/// for its client before it waits for the client to read. With the client's HTTP/2 window
/// (64 KiB unless the client raises it) and tonic's encode buffer, this bounds what a client
/// that never reads can pin.
pub const WATCHER_BUFFER_BYTES: usize = 64 * 1024;

/// How a watcher paces its client.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Longest silence towards the client before a heartbeat event (at least 100 ms).
    pub heartbeat: Duration,
    /// How long a watcher waits for a client that reads nothing while
    /// [`WATCHER_BUFFER_BYTES`] wait for it, before it ends the stream with
    /// RESOURCE_EXHAUSTED (the client resumes with its last sequence).
    pub stall_patience: Duration,
}
/// Events read from the log at a time while catching up, so that a long log is never held
/// whole for one watcher.
pub const CATCH_UP_PAGE: usize = 256;

/// What a watcher stream yields: the job's events, each as its protobuf encoding
/// (`llmjobs.v1.JobEvent`; a live event's is shared with every other watcher of the job in
/// this process), then the status that ended it, if any. `api::frames` sends them as they
/// are.
pub type EventStream = outbox::Drain<Bytes, Tail>;

/// How a watcher's stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// After the terminal event.
    Terminal,
    /// The client went away first.
    ClientGone,
    /// With an error status (dependency down, shutdown, unknown job).
    Error,
}

/// Starts following `job_id` after `after` and returns the stream at once, with a handle that
/// tells how it ended. The stream ends after the terminal event, with UNAVAILABLE when a
/// dependency fails or the server shuts down (clients reconnect with their last sequence),
/// with RESOURCE_EXHAUSTED when the client stops reading (see [`Pace::stall_patience`]), or
/// when the client goes away (within one scheduling round: the forwarding task watches the
/// channel's closing). `keep` (a key's open-stream slot) is held until the watcher ends,
/// which for a client that stopped reading is before its stream does. The watcher counts in
/// `metrics` while it runs.
#[allow(clippy::too_many_arguments)]
pub fn follow<K: Send + 'static>(
    store: Arc<dyn Store>,
    events: Arc<dyn EventLog>,
    job_id: JobId,
    after: u64,
    pace: Pace,
    shutdown: CancellationToken,
    keep: K,
    metrics: &crate::metrics::Metrics,
) -> (EventStream, tokio::task::JoinHandle<Ended>) {
    let (tx, rx) = outbox::with_source(WATCHER_BUFFER_BYTES);
    // A token of its own: waiting on the server's shared one locked that token's one mutex
    // every time any watcher woke.
    let shutdown = shutdown.child_token();
    let watching = metrics.watching();
    let metrics = metrics.clone();
    let handle = tokio::spawn(async move {
        let _keep = keep;
        let _watching = watching;
        let mut w = Watcher {
            store,
            events,
            job_id,
            last: after,
            tx,
            last_sent: tokio::time::Instant::now(),
            heartbeat: pace.heartbeat.max(Duration::from_millis(100)),
            stall_patience: pace.stall_patience,
            turn: Arc::default(),
            newest_read: None,
        };
        let result = tokio::select! {
            r = w.run() => r,
            _ = shutdown.cancelled() => Err(Stop::Status(Status::unavailable(
                "the server is shutting down; reconnect with after_sequence set to the last sequence received",
            ))),
        };
        match result {
            Ok(()) => Ended::Terminal,
            Err(Stop::Gone) => Ended::ClientGone,
            Err(Stop::Status(status)) => {
                w.tx.end(status);
                Ended::Error
            }
            Err(Stop::Stalled(status)) => {
                metrics.fell_behind();
                w.tx.abandon(status);
                Ended::Error
            }
        }
    });
    (rx, handle)
}

/// The terminal event of an ended job as the store has it (for logs that lost it or expired);
/// a cancel's reason is not stored, so it reads "cancelled by a client".
async fn terminal_kind(store: &dyn Store, job: &Job) -> Result<EventKind, crate::store::Error> {
    Ok(match job.status {
        JobStatus::Completed => {
            let stored = store.get_result(job.id).await?;
            let outcome = stored.and_then(|s| s.outcome).unwrap_or_default();
            EventKind::Completed(Completed {
                finish_reason: outcome.finish_reason,
                usage: Some(outcome.usage),
            })
        }
        JobStatus::Failed => EventKind::Failed(Failed {
            error: job.error.clone(),
            attempts: job.attempts,
        }),
        _ => EventKind::Cancelled(Cancelled {
            reason: "cancelled by a client".into(),
        }),
    })
}

enum Stop {
    /// The client went away.
    Gone,
    /// End the stream with this status.
    Status(Status),
    /// The client stopped reading: drop what waits for it and end with this status.
    Stalled(Status),
}

impl From<Status> for Stop {
    fn from(s: Status) -> Self {
        Stop::Status(s)
    }
}

/// `OUT_OF_RANGE`: a resume asked for events after `after`, but the job's log ended at
/// `terminal`.
fn past_the_end(after: u64, terminal: u64) -> Stop {
    Stop::Status(Status::out_of_range(format!(
        "after_sequence {after} is past the job's last event ({terminal}); resume with at most {terminal}"
    )))
}

fn unavailable(e: impl std::fmt::Display) -> Stop {
    warn!(error = %e, "watcher: dependency failed");
    Stop::Status(Status::unavailable(
        "a dependency of the event stream is unavailable; reconnect with after_sequence",
    ))
}

struct Watcher {
    store: Arc<dyn Store>,
    events: Arc<dyn EventLog>,
    job_id: JobId,
    last: u64,
    tx: outbox::Outbox<Bytes, Tail>,
    /// When the client last got anything (heartbeats included; for events its stream pulled
    /// from the lent tail, as of the tick that saw them pulled).
    last_sent: tokio::time::Instant,
    /// Longest silence towards the client before a heartbeat event.
    heartbeat: Duration,
    /// See [`Pace::stall_patience`].
    stall_patience: Duration,
    /// The job's turn to consult the store, shared with its other watchers here once
    /// subscribed.
    turn: Arc<JobTurn>,
    /// The time of the newest event this watcher read from the log itself.
    newest_read: Option<chrono::DateTime<chrono::Utc>>,
}

/// Whether the watcher is done.
#[derive(PartialEq)]
enum Done {
    Yes,
    No,
}

impl Watcher {
    async fn run(&mut self) -> Result<(), Stop> {
        // Subscribe before reading so nothing falls between the replay and the live feed.
        let live = self
            .events
            .subscribe(self.job_id)
            .await
            .map_err(unavailable)?;
        self.turn = live.turn();
        if self.catch_up().await? == Done::Yes {
            return Ok(());
        }
        // From here the stream pulls live events from the tail itself; this task wakes only
        // when the tail hands itself back, on its ticks, and when the client leaves.
        self.tx.lend(Tail::new(live, self.last));
        let back = self.tx.handed_back();
        // One timer for the watcher's life, re-armed on its ticks only. The log is re-read
        // after two ticks in which the stream pulled nothing (a silence of between one and
        // two ticks, at most `IDLE_CHECK`; for a client that stopped reading, this is what
        // queues the events it missed, and so what ends it once its queue stays full); a
        // heartbeat goes out once the client has had nothing for `heartbeat`.
        let tick = IDLE_CHECK.min(self.heartbeat) / 2;
        let wake = tokio::time::sleep(tick);
        tokio::pin!(wake);
        let mut quiet_ticks = 0u8;
        let mut pulled = self.tx.pulled();
        let closed = self.tx.gone().cancelled_owned();
        tokio::pin!(closed);
        loop {
            tokio::select! {
                () = back.notified() => {
                    if self.resume(false).await? == Done::Yes {
                        return Ok(());
                    }
                }
                () = &mut wake => {
                    let now = self.tx.pulled();
                    if now != pulled {
                        pulled = now;
                        quiet_ticks = 0;
                        self.last_sent = tokio::time::Instant::now();
                    } else {
                        quiet_ticks += 1;
                    }
                    if quiet_ticks >= 2 {
                        quiet_ticks = 0;
                        if self.resume(true).await? == Done::Yes {
                            return Ok(());
                        }
                    }
                    if self.last_sent.elapsed() >= self.heartbeat {
                        let tail = self.take_tail()?;
                        self.heartbeat().await?;
                        self.tx.lend(tail);
                    }
                    let next = (tokio::time::Instant::now() + tick).min(self.last_sent + self.heartbeat);
                    wake.as_mut().reset(next);
                }
                () = &mut closed => return Err(Stop::Gone),
            }
        }
    }

    /// Takes the tail back from the stream, with the sequence it reached.
    fn take_tail(&mut self) -> Result<Tail, Stop> {
        let tail = self
            .tx
            .reclaim()
            .ok_or_else(|| unavailable("watcher: the live tail was not lent"))?;
        self.last = tail.last;
        Ok(tail)
    }

    /// Takes the tail back and acts on why it stopped (or on a quiet spell, with `reread`):
    /// ends after the terminal event, catches up from the log after a gap, then lends the
    /// tail again. A stale notice (the tail was taken back since) only lends it again.
    async fn resume(&mut self, reread: bool) -> Result<Done, Stop> {
        let mut tail = self.take_tail()?;
        match tail.stop.take() {
            Some(tail::Stop::Terminal) => return Ok(Done::Yes),
            Some(tail::Stop::Closed) => return Err(unavailable("live feed closed")),
            Some(tail::Stop::Behind) => {}
            None if reread => {}
            None => {
                self.tx.lend(tail);
                return Ok(Done::No);
            }
        }
        if self.catch_up().await? == Done::Yes {
            return Ok(Done::Yes);
        }
        tail.last = self.last;
        self.tx.lend(tail);
        Ok(Done::No)
    }

    /// Sends an event read from a log or made here (encoded for this watcher alone).
    async fn send(&mut self, ev: Event) -> Result<Done, Stop> {
        let (sequence, terminal) = (ev.sequence, is_terminal(&ev));
        if self.newest_read.is_none_or(|t| ev.time > t) {
            self.newest_read = Some(ev.time);
        }
        let encoded = self.events.codec().encode(&ev);
        self.send_encoded(sequence, terminal, encoded).await
    }

    /// Sends the event of `sequence`, already encoded.
    async fn send_encoded(
        &mut self,
        sequence: u64,
        terminal: bool,
        encoded: Bytes,
    ) -> Result<Done, Stop> {
        self.deliver(encoded).await?;
        self.last = sequence;
        Ok(if terminal { Done::Yes } else { Done::No })
    }

    /// Queues an encoded event for the client. Errors: `Gone`; RESOURCE_EXHAUSTED when the
    /// client has not made room for [`Pace::stall_patience`], naming the sequence to resume
    /// from.
    async fn deliver(&mut self, encoded: Bytes) -> Result<(), Stop> {
        let bytes = encoded.len();
        match self.tx.send(encoded, bytes, self.stall_patience).await {
            Ok(()) => {
                self.last_sent = tokio::time::Instant::now();
                Ok(())
            }
            Err(outbox::Refused::Gone) => Err(Stop::Gone),
            Err(outbox::Refused::Stalled) => {
                debug!(job_id = %self.job_id, last = self.last, "watcher: the client stopped reading");
                Err(Stop::Stalled(Status::resource_exhausted(format!(
                    "the client read nothing for {} s while {} KiB of events waited for it; \
                     resume with after_sequence set to the last sequence received (at most {})",
                    self.stall_patience.as_secs(),
                    self.tx.budget() / 1024,
                    self.last
                ))))
            }
        }
    }

    /// Tells a quiet stream's client (and the proxies between) that the job is alive.
    async fn heartbeat(&mut self) -> Result<(), Stop> {
        let status = match self.store.get_job(self.job_id).await {
            Ok(Some(job)) => Some(job.status),
            // The store is down: the heartbeat still keeps the stream open.
            _ => None,
        };
        let ev = Event {
            sequence: self.last,
            time: chrono::Utc::now(),
            job_id: self.job_id,
            kind: EventKind::Heartbeat(Heartbeat { status }),
        };
        let encoded = self.events.codec().encode(&ev);
        self.deliver(encoded).await
    }
}
