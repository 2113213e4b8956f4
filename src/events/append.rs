//! What an append asks beyond its events (a cancel check, [`Extras`]) and what it, a close
//! and a cancel request answer.

use super::Event;

/// Whether an append reads the job's cancel flag (the one
/// [`EventLog::request_cancel`](super::EventLog::request_cancel) sets), in the same step, at no
/// extra round trip.
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
    /// [`EventLog::request_cancel`](super::EventLog::request_cancel) answers
    /// [`CancelRequest::Ending`], so the attempt may end the job as it decided (completed, failed).
    /// When the flag is set the end is not claimed (the events are still appended) and the attempt
    /// must end the job cancelled. Claiming again under the same attempt (a retried append whose
    /// answer was lost) keeps the claim and reports it.
    Seal,
}

/// What [`EventLog::request_cancel`](super::EventLog::request_cancel) found, decided in one step
/// with the appends (so a cancel and an attempt's end are ordered in one place: whichever comes
/// first wins).
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
    Ended(Event),
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
    /// For an accepted append under [`Fence::Start`]: every event the log held before it, with
    /// their sequences (read in the same step), so that the attempt can store the whole log when it
    /// ends. For the append that an [`EventLog::close`](super::EventLog::close) makes: the log as
    /// [`Closed::log`] holds it. Empty otherwise.
    pub earlier: Vec<Event>,
}

/// What [`EventLog::close`](super::EventLog::close) did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Closed {
    /// Sequence of the terminal event appended; `None` when refused (as
    /// [`EventLog::append`](super::EventLog::append) is).
    pub sequence: Option<u64>,
    /// The whole log with sequences, read in the same step, when the sequence is not the one
    /// the caller expected (none expected, another writer came between, or the log already
    /// had its terminal event); empty when it is, or when a stale attempt was refused.
    pub log: Vec<Event>,
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
    /// The job counts as watched from this append on (see
    /// [`EventLog::open`](super::EventLog::open)).
    pub followed: bool,
}
