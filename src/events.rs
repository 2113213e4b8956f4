//! The per-job event log and its fan-out to watchers.
//!
//! Every job has an ordered log of [`Event`]s, stored and published in the one encoding of
//! a [`Codec`] (see [`event`]): sequences start at 1 and rise by 1 with no gaps, and exactly
//! one terminal event ends it.
//! [`EventLog`] is the narrow interface; [`redis`] keeps the log in a Redis list, assigns
//! sequences in a Lua script, and multiplexes all live watchers of a gateway over one pub/sub
//! connection; [`memory`] keeps the same log in process, for one `serve` without Redis.
//! Serving one watcher (replay, follow, repair) is in [`crate::streaming`]. Once a job ends,
//! its whole log goes to the store in [`archive`] form and the live log expires soon after.

mod append;
pub mod archive;
pub mod event;
mod live;
pub mod memory;
pub mod redis;

use async_trait::async_trait;

pub(crate) use append::Extras;
pub use append::{Appended, CancelCheck, CancelRequest, Closed};
pub use event::{Codec, DecodeError, Event, EventKind};
pub use live::{JobTurn, Live, Published, Subscription};

use crate::{
    job::{JobId, Priority},
    progress::JobProgress,
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

/// What [`EventLog::read_after`] found.
#[derive(Clone, Debug, Default)]
pub struct LogRead {
    /// The events after the requested sequence, in order.
    pub events: Vec<Event>,
    /// Sequence of the terminal event, once the log has one.
    pub terminal_sequence: Option<u64>,
}

/// A new event of `kind` stamped now (sequence and job id are set by the log).
pub fn event(kind: EventKind) -> Event {
    Event::new(kind)
}

/// A new `queued` event for a job of `job_type` and `priority` in `queue`, submitted by
/// `tenant`: what a job's log starts with, and starts again with when the job is queued anew.
pub fn queued(queue: &str, priority: Priority, job_type: &str, tenant: &str) -> Event {
    event(EventKind::Queued(event::Queued {
        queue: queue.to_owned(),
        priority,
        job_type: job_type.to_owned(),
        tenant: tenant.to_owned(),
    }))
}

/// The last event of one append (`None` when there is nothing to append), after checking that
/// no other event of it is terminal. Errors: `Corrupt` when one is (a writer bug).
pub fn last_of_append(events: &[Event]) -> Result<Option<&Event>, Error> {
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
pub fn check_close(events: &[Event]) -> Result<(), Error> {
    if !events.last().is_some_and(is_terminal) {
        return Err(Error::Corrupt(
            "a close must end with a terminal event".into(),
        ));
    }
    Ok(())
}

/// True for completed, failed and cancelled events.
pub fn is_terminal(event: &Event) -> bool {
    event.is_terminal()
}

/// Event log operations.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// The encoding this log stores and publishes events in (what watchers are sent, and what
    /// archives of its logs hold).
    fn codec(&self) -> &dyn Codec;

    /// Appends `event` (its `sequence` is ignored) and publishes it to live watchers. Returns
    /// the assigned sequence, or `None` when refused: the log already has its terminal event,
    /// or `fence` names a stale attempt.
    async fn append(
        &self,
        job_id: JobId,
        event: &Event,
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
        event: &Event,
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
        events: &[Event],
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
        events: &[Event],
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
        events: &[Event],
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
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{event::TokenDelta, testing::TextCodec};

    #[test]
    fn a_published_event_is_encoded_once_and_shared_by_its_clones() {
        let mut ev = event(EventKind::TokenDelta(TokenDelta {
            text: "héllo".into(),
            ..Default::default()
        }));
        ev.sequence = 42;
        let published = Published::new(&TextCodec, ev.clone());
        let watcher = published.clone();
        let (a, b) = (published.encoded(), watcher.encoded());
        assert_eq!(a.as_ptr(), b.as_ptr(), "one encoding for every watcher");
        assert_eq!(&a[..], "héllo".as_bytes());
        assert_eq!(watcher.event(), &ev);
    }
}
