//! The per-job event log and its fan-out to watchers.
//!
//! Every job has an ordered log of [`JobEvent`]s (the wire type is also the stored form):
//! sequences start at 1 and rise by 1 with no gaps, and exactly one terminal event ends it.
//! [`EventLog`] is the narrow interface; [`redis`] keeps the log in a Redis list, assigns
//! sequences in a Lua script, and multiplexes all live watchers of a gateway over one pub/sub
//! connection; [`memory`] keeps the same log in process, for one `serve` without Redis.
//! Serving one watcher (replay, follow, repair) is in [`crate::streaming`]. Once a job ends,
//! its whole log goes to the store in [`archive`] form and the live log expires soon after.

pub mod archive;
pub mod memory;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use prost::Message;
use tokio::sync::broadcast;

use crate::{
    job::{JobId, Priority},
    proto::v1::{JobEvent, JobProgress, JobQueued, job_event::Kind},
};

/// An event log failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis cannot be reached or refused the command.
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    /// Stored events do not decode.
    #[error("corrupt event log: {0}")]
    Corrupt(String),
}

/// Which writer may append, so a stale attempt cannot write into a newer one's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fence {
    /// Anyone (the gateway: queued, cancelled while queued).
    None,
    /// Only attempt N, which must be the current one.
    Attempt(u32),
    /// Attempt N starts now: from here on older attempts are refused.
    Start(u32),
    /// Only attempt N, which must be the current one, and only while the log's last sequence
    /// is `head`: the attempt is the log's one writer and knows where it ends. When the log
    /// ends at `head` plus these events instead, an earlier try of this same append (whose
    /// answer was lost to a timeout, and which Redis ran after all) put them in: the append
    /// answers with that sequence and adds nothing. Any other end refuses. So resending an
    /// append never duplicates events, whichever of the tries Redis runs first.
    At {
        /// The attempt, which must be the current one.
        attempt: u32,
        /// The log's last sequence before the append.
        head: u64,
    },
}

/// What a live subscription delivers.
#[derive(Clone, Debug)]
pub enum Live {
    /// An event as published, with its sequence set.
    Event(Published),
    /// Events may have been missed (lag, reconnect): re-read the log from the last sequence.
    Resync,
}

/// An event as published, shared by every watcher of its job in this process: a clone copies
/// one pointer, and its protobuf encoding (what each watcher's client is sent) is made once,
/// not once per watcher (issue 14, item 5).
#[derive(Clone, Debug)]
pub struct Published(Arc<(JobEvent, Bytes)>);

impl Published {
    /// `event` (its sequence and job id set) with its encoding.
    pub fn new(event: JobEvent) -> Published {
        let encoded = Bytes::from(event.encode_to_vec());
        Published(Arc::new((event, encoded)))
    }

    /// The event.
    pub fn event(&self) -> &JobEvent {
        &self.0.0
    }

    /// The event's protobuf encoding (`llmjobs.v1.JobEvent`), shared, not copied.
    pub fn encoded(&self) -> Bytes {
        self.0.1.clone()
    }
}

/// What [`EventLog::read_after`] found.
#[derive(Clone, Debug, Default)]
pub struct LogRead {
    /// The events after the requested sequence, in order.
    pub events: Vec<JobEvent>,
    /// Sequence of the terminal event, once the log has one.
    pub terminal_sequence: Option<u64>,
}

/// A new event of `kind` stamped now (sequence and job id are set by the log).
pub fn event(kind: Kind) -> JobEvent {
    JobEvent {
        time: Some(crate::api::convert::timestamp(chrono::Utc::now())),
        kind: Some(kind),
        ..Default::default()
    }
}

/// A new `queued` event for a job of `job_type` and `priority` in `queue`, submitted by
/// `tenant`: what a job's log starts with, and starts again with when the job is queued anew.
pub fn queued(queue: &str, priority: Priority, job_type: &str, tenant: &str) -> JobEvent {
    event(Kind::Queued(JobQueued {
        queue: queue.to_owned(),
        priority: crate::api::convert::priority(priority).into(),
        job_type: job_type.to_owned(),
        tenant: tenant.to_owned(),
    }))
}

/// The last event of one append (`None` when there is nothing to append), after checking that
/// no other event of it is terminal. Errors: `Corrupt` when one is (a writer bug).
pub fn last_of_append(events: &[JobEvent]) -> Result<Option<&JobEvent>, Error> {
    let Some((last, before)) = events.split_last() else {
        return Ok(None);
    };
    if before.iter().any(is_terminal) {
        return Err(Error::Corrupt(
            "only the last event of an append may be terminal".into(),
        ));
    }
    Ok(Some(last))
}

/// Checks the events of one close (see [`EventLog::close`]): the last must be terminal.
/// Errors: `Corrupt` when there is none or it is not (a writer bug).
pub fn check_close(events: &[JobEvent]) -> Result<(), Error> {
    if !events.last().is_some_and(is_terminal) {
        return Err(Error::Corrupt(
            "a close must end with a terminal event".into(),
        ));
    }
    Ok(())
}

/// True for completed, failed and cancelled events.
pub fn is_terminal(event: &JobEvent) -> bool {
    matches!(
        event.kind,
        Some(Kind::Completed(_) | Kind::Failed(_) | Kind::Cancelled(_))
    )
}

/// A live feed of one job's events; unsubscribes when dropped.
pub struct Subscription {
    rx: broadcast::Receiver<Live>,
    _guard: Box<dyn Send + Sync>,
}

impl Subscription {
    /// A feed from a broadcast receiver; `guard` is dropped with it.
    pub fn new(rx: broadcast::Receiver<Live>, guard: Box<dyn Send + Sync>) -> Subscription {
        Subscription { rx, _guard: guard }
    }

    /// The next live item; `Resync` after a lag. `None` when the feed ended (shutdown).
    pub async fn recv(&mut self) -> Option<Live> {
        match self.rx.recv().await {
            Ok(live) => Some(live),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Live::Resync),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// Whether an append reads the job's cancel flag (the one [`EventLog::request_cancel`] sets),
/// in the same step, at no extra round trip.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CancelCheck {
    /// It does not read the flag.
    #[default]
    Skip,
    /// It reads the flag: a running attempt learns of a cancel on the path its tokens take,
    /// even when the cancel signal never reached it.
    Read,
    /// It reads the flag and, when it is not set and the append is accepted under
    /// [`Fence::Attempt`] or [`Fence::At`], claims the job's end for that attempt: from then on
    /// [`EventLog::request_cancel`] answers [`CancelRequest::Ending`], so the attempt may end
    /// the job as it decided (completed, failed). When the flag is set the end is not claimed
    /// (the events are still appended) and the attempt must end the job cancelled. Claiming
    /// again under the same attempt (a retried append whose answer was lost) keeps the claim
    /// and reports it.
    Seal,
}

/// What [`EventLog::request_cancel`] found, decided in one step with the appends (so a cancel
/// and an attempt's end are ordered in one place: whichever comes first wins).
#[derive(Clone, Debug, PartialEq)]
pub enum CancelRequest {
    /// The flag is set and no attempt had claimed the job's end: the job will end cancelled
    /// (its running attempt stops at its next read of the flag or at its end; an attempt
    /// that starts later stops at its start). Only losing the flag (Redis lost) undoes this.
    Flagged,
    /// The current attempt had already claimed the job's end ([`CancelCheck::Seal`]): it ends
    /// the job as it decided, within moments. The flag is set all the same, so that a later
    /// attempt (this one's lease lost) stops at its start.
    Ending,
    /// The log already has its terminal event (this one, with its sequence): the job ended;
    /// nothing was set.
    Ended(JobEvent),
}

/// What one append did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Appended {
    /// Sequence of the last event appended; `None` when the append was refused (the log
    /// already has its terminal event, or the fence names a stale attempt).
    pub sequence: Option<u64>,
    /// The job's cancel flag was set when the append ran (read in the same step, only when
    /// the append asked for it; otherwise false). Under [`CancelCheck::Seal`], false once the
    /// end was claimed by this attempt (now or by an earlier append of it).
    pub cancel_requested: bool,
    /// The append claimed the job's end, or found it claimed by its attempt already
    /// ([`CancelCheck::Seal`], accepted, flag not set before the claim).
    pub sealed: bool,
    /// The append was refused because the log holds no attempt, although the fence names
    /// one ([`Fence::Attempt`], [`Fence::At`]): its keys were lost (Redis data loss: FLUSHALL,
    /// a restart without persistence, eviction) after the attempt started, or the attempt
    /// never started one. Whatever the attempt appends from then on is refused, and watchers
    /// find no log: the attempt's end goes to the store alone (see `worker::generate`).
    pub lost: bool,
    /// Someone followed the job live when the append ran (a current watch mark in Redis, a
    /// subscriber in process): its events went out to watchers at once. A writer whose job
    /// nobody follows may gather its events into fewer appends (see `worker::generate`).
    pub watched: bool,
    /// For an accepted append under [`Fence::Start`]: every event the log held before it,
    /// with their sequences (read in the same step), so that the attempt can store the whole
    /// log when it ends. For the append that an [`EventLog::close`] makes: the log as
    /// [`Closed::log`] holds it. Empty otherwise.
    pub earlier: Vec<JobEvent>,
}

/// What [`EventLog::close`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Closed {
    /// Sequence of the terminal event appended; `None` when refused (as
    /// [`EventLog::append`] is).
    pub sequence: Option<u64>,
    /// The whole log with sequences, read in the same step, when the sequence is not the one
    /// the caller expected (none expected, another writer came between, or the log already
    /// had its terminal event); empty when it is, or when a stale attempt was refused.
    pub log: Vec<JobEvent>,
    /// Refused because the log was lost (see [`Appended::lost`]).
    pub lost: bool,
}

impl From<Appended> for Closed {
    /// What a close did, from the append that wrote its terminal event. Both backends close
    /// with an append that was asked for the whole log (`append.lua`'s last argument), and
    /// such an append returns that log in [`Appended::earlier`]; the rest (cancel flag, seal,
    /// watchers) does not concern a close; a refusal for a lost log does.
    fn from(appended: Appended) -> Self {
        Self {
            sequence: appended.sequence,
            log: appended.earlier,
            lost: appended.lost,
        }
    }
}

/// What an append asks of a backend beyond its events (see the backends' `append_with`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Extras {
    /// The whole log back, unless its last sequence is the one given (`Some(None)`: always).
    pub log: Option<Option<u64>>,
    /// The job counts as watched from this append on (see [`EventLog::open`]).
    pub followed: bool,
}

/// Event log operations.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends `event` (its `sequence` is ignored) and publishes it to live watchers. Returns
    /// the assigned sequence, or `None` when refused: the log already has its terminal event,
    /// or `fence` names a stale attempt.
    async fn append(
        &self,
        job_id: JobId,
        event: &JobEvent,
        fence: Fence,
    ) -> Result<Option<u64>, Error> {
        let appended = self
            .append_events(
                job_id,
                std::slice::from_ref(event),
                fence,
                None,
                CancelCheck::Skip,
            )
            .await?;
        Ok(appended.sequence)
    }

    /// Appends a job's opening event (`queued`) as [`EventLog::append`] with no fence does.
    /// With `followed` (its submitter streams it from the start: `SubmitAndStream`), the job
    /// counts as watched from this append on, for as long as a watcher's mark lasts (see
    /// `watch.lua`): its worker then publishes the first tokens as they come, instead of
    /// gathering them for a flush interval because its start came before the watcher's own
    /// subscription. Returns the assigned sequence, or `None` when refused.
    async fn open(
        &self,
        job_id: JobId,
        event: &JobEvent,
        followed: bool,
    ) -> Result<Option<u64>, Error>;

    /// Appends `events` in order in one step (all or none; only the last may be terminal) and,
    /// when given and only when the append is accepted, replaces the job's progress snapshot
    /// with `progress` (so a stale attempt cannot overwrite a newer one's progress either).
    /// Returns the last event's sequence, or `None` when refused as [`EventLog::append`] is.
    /// Errors: `Corrupt` when an event before the last is terminal.
    async fn append_tracked(
        &self,
        job_id: JobId,
        events: &[JobEvent],
        fence: Fence,
        progress: Option<&JobProgress>,
    ) -> Result<Option<u64>, Error> {
        let appended = self
            .append_events(job_id, events, fence, progress, CancelCheck::Skip)
            .await?;
        Ok(appended.sequence)
    }

    /// [`EventLog::append_tracked`], and it also reads the job's cancel flag, or claims the
    /// job's end, as `cancel` says (see [`CancelCheck`]), in the same step.
    /// Errors: as [`EventLog::append_tracked`].
    async fn append_events(
        &self,
        job_id: JobId,
        events: &[JobEvent],
        fence: Fence,
        progress: Option<&JobProgress>,
        cancel: CancelCheck,
    ) -> Result<Appended, Error>;

    /// Asks for the job to be cancelled, in one step with the appends: unless the log already
    /// has its terminal event, sets the job's cancel flag (with the client's `reason`; it
    /// stays a day, or the short window once the job ends) and tells the workers (a
    /// [`crate::queue::Signal::Cancel`], the fast path). Returns what it found: see
    /// [`CancelRequest`]. A job without a log (not started, or its log lost with Redis) is
    /// flagged. Errors: `Unavailable`, `Corrupt` (a terminal event that does not decode).
    async fn request_cancel(&self, job_id: JobId, reason: &str) -> Result<CancelRequest, Error>;

    /// Appends `events`, whose last must be terminal, as [`EventLog::append_tracked`] does,
    /// and starts the short expiry of the job's live keys (log, state, progress snapshot,
    /// cancel flag: `LLMJOBS_EVENT_LOG_TTL_SECS`); the store keeps the log from here on.
    /// Unless the terminal event's sequence is `expected`, it also returns the whole log in
    /// the same step (see [`Closed::log`]) for the caller to store.
    /// Errors: `Corrupt` when an event before the last is terminal or the last is not.
    async fn close(
        &self,
        job_id: JobId,
        events: &[JobEvent],
        fence: Fence,
        progress: Option<&JobProgress>,
        expected: Option<u64>,
    ) -> Result<Closed, Error>;

    /// The job's latest progress snapshot, written by its worker; `None` before the first
    /// attempt and some time (`LLMJOBS_PROGRESS_TTL_SECS`) after the end.
    async fn progress(&self, job_id: JobId) -> Result<Option<JobProgress>, Error>;

    /// Every event with a sequence greater than `after`, in order; `None` when the job has no
    /// log (expired, never written, or Redis lost it). For logs that may be long, read
    /// [`EventLog::read_page`]s instead.
    async fn read_after(&self, job_id: JobId, after: u64) -> Result<Option<LogRead>, Error> {
        self.read_page(job_id, after, usize::MAX).await
    }

    /// The first `max_events` events (at least one) with a sequence greater than `after`, in
    /// order, as [`EventLog::read_after`] reads them all.
    async fn read_page(
        &self,
        job_id: JobId,
        after: u64,
        max_events: usize,
    ) -> Result<Option<LogRead>, Error>;

    /// A live feed of the job's events from now on. Subscribe before reading the log so that
    /// nothing falls between the two.
    async fn subscribe(&self, job_id: JobId) -> Result<Subscription, Error>;

    /// Starts a new log for a job: sequences continue above `base`, and attempts before
    /// `attempt` may not write. Without `replace` (a log lost with Redis) it returns false and
    /// changes nothing when the job still has a log; with it (a failed job retried) the old
    /// log is dropped, and with it the old run's cancel flag.
    async fn restart(
        &self,
        job_id: JobId,
        base: u64,
        attempt: u32,
        replace: bool,
    ) -> Result<bool, Error>;

    /// Output tokens generated so far by the current attempt, when known.
    async fn output_tokens(&self, job_id: JobId) -> Result<Option<u64>, Error>;

    /// Sequence of the terminal event in the job's log; `None` while it has none, or has
    /// no log. (The worker stores it in `jobs.last_sequence` just after appending it.)
    async fn terminal_sequence(&self, job_id: JobId) -> Result<Option<u64>, Error>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::TokenDelta;

    #[test]
    fn a_published_event_is_encoded_once_and_shared_by_its_clones() {
        let mut ev = event(Kind::TokenDelta(TokenDelta {
            text: "héllo".into(),
            ..Default::default()
        }));
        ev.sequence = 42;
        ev.job_id = JobId::nil().to_string();
        let published = Published::new(ev.clone());
        let watcher = published.clone();
        let (a, b) = (published.encoded(), watcher.encoded());
        assert_eq!(a.as_ptr(), b.as_ptr(), "one encoding for every watcher");
        assert_eq!(JobEvent::decode(a).expect("decodes"), ev);
        assert_eq!(watcher.event(), &ev);
    }
}
