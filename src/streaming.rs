//! Serving one job's events to one watcher: replay after a sequence, follow live, repair gaps,
//! replay the stored log when the live one has expired (a snapshot from the store for jobs
//! that ended before logs were stored), and end after the terminal event.
//!
//! Guarantees: events arrive in sequence order with no gaps and no duplicates; the stream ends
//! after the terminal event; it never hangs on a lost message: within [`IDLE_CHECK`] of silence
//! it re-reads the log and consults the store. Following a whole batch is [`batch`].

pub mod batch;
pub mod outbox;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{debug, warn};

use crate::{
    api::convert,
    events::{EventLog, Fence, Live, LogRead, archive::Archive, is_terminal},
    job::{Job, JobId, JobStatus},
    proto::v1::{self, job_event::Kind},
    reconciler::EPOCH,
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
pub type EventStream = outbox::Drain<Bytes>;

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
    let (tx, rx) = outbox::outbox(WATCHER_BUFFER_BYTES);
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
async fn terminal_kind(store: &dyn Store, job: &Job) -> Result<Kind, crate::store::Error> {
    Ok(match job.status {
        JobStatus::Completed => {
            let stored = store.get_result(job.id).await?;
            let outcome = stored.and_then(|s| s.outcome).unwrap_or_default();
            Kind::Completed(v1::JobCompleted {
                finish_reason: outcome.finish_reason,
                usage: Some(convert::usage(&outcome.usage)),
            })
        }
        JobStatus::Failed => Kind::Failed(v1::JobFailed {
            error: job.error.as_ref().map(convert::job_error),
            attempts: job.attempts,
        }),
        _ => Kind::Cancelled(v1::JobCancelled {
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
    tx: outbox::Outbox<Bytes>,
    /// When the client last got anything (heartbeats included).
    last_sent: tokio::time::Instant,
    /// Longest silence towards the client before a heartbeat event.
    heartbeat: Duration,
    /// See [`Pace::stall_patience`].
    stall_patience: Duration,
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
        let mut live = self
            .events
            .subscribe(self.job_id)
            .await
            .map_err(unavailable)?;
        if self.catch_up().await? == Done::Yes {
            return Ok(());
        }
        // One timer for the watcher's life, re-armed on its ticks only: a timer made and
        // dropped for every event was a lock of the runtime's timer wheel per event per
        // watcher. The log is re-read after two ticks without a live item (a silence of
        // between one and two ticks, at most `IDLE_CHECK`); a heartbeat goes out once the
        // client has had nothing for `heartbeat`.
        let tick = IDLE_CHECK.min(self.heartbeat) / 2;
        let wake = tokio::time::sleep(tick);
        tokio::pin!(wake);
        let mut quiet_ticks = 0u8;
        let closed = self.tx.gone().cancelled_owned();
        tokio::pin!(closed);
        loop {
            let item = tokio::select! {
                item = live.recv() => item,
                () = &mut wake => {
                    quiet_ticks += 1;
                    if quiet_ticks >= 2 {
                        quiet_ticks = 0;
                        if self.catch_up().await? == Done::Yes {
                            return Ok(());
                        }
                    }
                    if self.last_sent.elapsed() >= self.heartbeat {
                        self.heartbeat().await?;
                    }
                    let next = (tokio::time::Instant::now() + tick).min(self.last_sent + self.heartbeat);
                    wake.as_mut().reset(next);
                    continue;
                }
                () = &mut closed => return Err(Stop::Gone),
            };
            quiet_ticks = 0;
            match item {
                Some(Live::Event(p)) if p.event().sequence <= self.last => {}
                Some(Live::Event(p)) if p.event().sequence == self.last + 1 => {
                    let (sequence, terminal) = (p.event().sequence, is_terminal(p.event()));
                    if self.send_encoded(sequence, terminal, p.encoded()).await? == Done::Yes {
                        return Ok(());
                    }
                }
                // A gap (a missed message) or a resync request: the log has everything.
                Some(_) => {
                    if self.catch_up().await? == Done::Yes {
                        return Ok(());
                    }
                }
                None => return Err(unavailable("live feed closed")),
            }
        }
    }

    /// Sends an event read from a log or made here (encoded for this watcher alone).
    async fn send(&mut self, ev: v1::JobEvent) -> Result<Done, Stop> {
        let (sequence, terminal) = (ev.sequence, is_terminal(&ev));
        self.send_encoded(sequence, terminal, Bytes::from(ev.encode_to_vec()))
            .await
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
            Ok(Some(job)) => convert::status(job.status),
            // The store is down: the heartbeat still keeps the stream open.
            _ => v1::JobStatus::Unspecified,
        };
        let ev = v1::JobEvent {
            sequence: self.last,
            time: Some(convert::timestamp(chrono::Utc::now())),
            job_id: self.job_id.to_string(),
            kind: Some(Kind::Heartbeat(v1::JobHeartbeat {
                status: status.into(),
            })),
        };
        self.deliver(Bytes::from(ev.encode_to_vec())).await
    }

    /// Sends everything the log has after `last`; when the log is gone, falls back to the
    /// store; when the store says the job ended but the log never got its terminal event (a
    /// worker died in between), writes that event from the store.
    async fn catch_up(&mut self) -> Result<Done, Stop> {
        let mut read = self.next_page().await?;
        // A full page: send it and read on from where it ended.
        while read
            .as_ref()
            .is_some_and(|r| r.events.len() >= CATCH_UP_PAGE)
        {
            for ev in read.take().map(|r| r.events).unwrap_or_default() {
                if self.send(ev).await? == Done::Yes {
                    return Ok(Done::Yes);
                }
            }
            read = self.next_page().await?;
        }
        match read {
            Some(read) => {
                for ev in read.events {
                    if self.send(ev).await? == Done::Yes {
                        return Ok(Done::Yes);
                    }
                }
                // Resumed at the terminal event: nothing more will come. Past it: the client's
                // bookmark is wrong, and ending quietly would hide that.
                if let Some(t) = read.terminal_sequence {
                    if self.last > t {
                        return Err(past_the_end(self.last, t));
                    }
                    if self.last == t {
                        return Ok(Done::Yes);
                    }
                }
                // The store is only consulted to repair a lost terminal event: while it is
                // down, the live log keeps flowing.
                let job = match self.store.get_job(self.job_id).await {
                    Ok(Some(job)) => job,
                    Ok(None) | Err(_) => return Ok(Done::No),
                };
                if job.status.is_terminal() && self.repair_terminal(&job).await? {
                    return Box::pin(self.catch_up()).await;
                }
                Ok(Done::No)
            }
            None => {
                let job = self.job().await?;
                if job.status.is_terminal() {
                    match self.store.event_log(job.id).await.map_err(unavailable)? {
                        Some(log) => self.replay_stored(&job, &log).await,
                        // Ended before logs were stored, or its log was not known.
                        None => self.snapshot(&job).await,
                    }
                } else {
                    // Redis lost the log of an unfinished job; the reconciler re-enqueues it
                    // and a new log starts. Keep watching.
                    debug!(job_id = %self.job_id, "no event log yet");
                    Ok(Done::No)
                }
            }
        }
    }

    /// Up to [`CATCH_UP_PAGE`] events of the log after `last`; `None` when there is no log.
    async fn next_page(&self) -> Result<Option<LogRead>, Stop> {
        self.events
            .read_page(self.job_id, self.last, CATCH_UP_PAGE)
            .await
            .map_err(unavailable)
    }

    async fn job(&self) -> Result<Job, Stop> {
        self.store
            .get_job(self.job_id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                Stop::Status(Status::not_found(format!("job {} not found", self.job_id)))
            })
    }

    async fn terminal_kind(&self, job: &Job) -> Result<Kind, Stop> {
        terminal_kind(self.store.as_ref(), job)
            .await
            .map_err(unavailable)
    }

    /// Appends the terminal event from the store when the job ended long enough ago that its
    /// writer should have published it. Returns whether something was appended.
    async fn repair_terminal(&self, job: &Job) -> Result<bool, Stop> {
        let ended_long_ago = job.finished_at.is_some_and(|t| {
            chrono::Utc::now() - t > chrono::Duration::from_std(IDLE_CHECK).unwrap_or_default()
        });
        if !ended_long_ago {
            return Ok(false);
        }
        // The worker stores the log with the result, so the events that end it are usually
        // there; else the terminal event is made from the job's row.
        let (events, expected) = match self.stored_tail(job).await {
            Some(tail) => {
                let last = tail.last().map(|e| e.sequence);
                (tail, last)
            }
            None => {
                let ev = v1::JobEvent {
                    time: job.finished_at.map(convert::timestamp),
                    kind: Some(self.terminal_kind(job).await?),
                    ..Default::default()
                };
                (vec![ev], None)
            }
        };
        let closed = self
            .events
            .close(job.id, &events, Fence::None, None, expected)
            .await
            .map_err(unavailable)?;
        if let Some(seq) = closed.sequence {
            warn!(job_id = %job.id, seq, "repaired a missing terminal event from the store");
        }
        // Unless it is the stored one, the log as it now is replaces it.
        match crate::events::archive::of_events(&closed.log) {
            Some(log) => {
                let _ = self.store.store_event_logs(&[(job.id, log)]).await;
            }
            None => {
                if let Some(seq) = closed.sequence
                    && Some(seq) != expected
                {
                    let _ = self.store.set_last_sequence(job.id, seq).await;
                }
            }
        }
        Ok(closed.sequence.is_some())
    }

    /// The events of the stored log after `last`, when it has them and they carry on from
    /// it to its terminal event.
    async fn stored_tail(&self, job: &Job) -> Option<Vec<v1::JobEvent>> {
        let log = self.store.event_log(job.id).await.ok()??;
        let tail: Vec<v1::JobEvent> = log
            .events(job.id)
            .ok()?
            .into_iter()
            .filter(|e| e.sequence > self.last)
            .collect();
        let carries_on = tail.first()?.sequence == self.last + 1;
        (carries_on && tail.last().is_some_and(is_terminal)).then_some(tail)
    }

    /// The live log expired: replay the stored one after `last`, every event as live
    /// watchers saw it, ending with the terminal event.
    async fn replay_stored(&mut self, job: &Job, log: &Archive) -> Result<Done, Stop> {
        let terminal = log.last_sequence().unwrap_or(0);
        if self.last > terminal {
            return Err(past_the_end(self.last, terminal));
        }
        if self.last == terminal {
            return Ok(Done::Yes);
        }
        let events = log.events(job.id).map_err(unavailable)?;
        for ev in events {
            if ev.sequence > self.last && self.send(ev).await? == Done::Yes {
                return Ok(Done::Yes);
            }
        }
        // A stored log always ends with its terminal event; one that does not is damaged.
        Err(unavailable(format!(
            "job {} stored log has no terminal event",
            job.id
        )))
    }

    /// The log expired or was lost and none is stored (the job ended before logs were
    /// stored, or Redis lost its log while it ran): send the stored content as one snapshot,
    /// then the terminal event, at fixed sequences, so that every resume sees the same ones
    /// and one past the end is OUT_OF_RANGE: the terminal event at the job's terminal
    /// sequence (its original one, or for a lost log, the one its worker stored two after
    /// the last the log may have published) and the snapshot just before it. When the store
    /// has no terminal sequence (its worker died before storing it), only 0 or the base of a
    /// log the reconciler restarted (a multiple of [`EPOCH`]), the end sits at the start of
    /// the next epoch, as a log restarted after a Redis loss does: above anything a watcher
    /// can have seen.
    async fn snapshot(&mut self, job: &Job) -> Result<Done, Stop> {
        let terminal_seq = if !job.last_sequence.is_multiple_of(EPOCH) {
            job.last_sequence
        } else {
            (job.last_sequence / EPOCH + 1) * EPOCH + 2
        };
        if self.last > terminal_seq {
            return Err(past_the_end(self.last, terminal_seq));
        }
        if self.last == terminal_seq {
            return Ok(Done::Yes);
        }
        let stored = self.store.get_result(job.id).await.map_err(unavailable)?;
        let outcome = stored.and_then(|s| s.outcome).unwrap_or_default();
        let time = job.finished_at.map(convert::timestamp);
        if self.last + 1 < terminal_seq {
            let snap = v1::JobEvent {
                sequence: terminal_seq - 1,
                time,
                job_id: job.id.to_string(),
                kind: Some(Kind::Snapshot(v1::JobSnapshot {
                    status: convert::status(job.status).into(),
                    content: outcome.content,
                    reasoning_content: outcome.reasoning_content,
                })),
            };
            self.send(snap).await?;
        }
        let terminal = v1::JobEvent {
            sequence: terminal_seq,
            time,
            job_id: job.id.to_string(),
            kind: Some(self.terminal_kind(job).await?),
        };
        self.send(terminal).await
    }
}
