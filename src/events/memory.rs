//! [`EventLog`] in process, for a single `serve` process without Redis: per job a vector of
//! events with the state `src/events/append.lua` keeps (attempt fence, terminal sequence,
//! base), the output token count (which Redis reads from the log's tail), the progress
//! snapshot, and one broadcast channel per watched job.
//!
//! Every operation takes one mutex, so appends are atomic and live events go out in sequence
//! order. Expiry follows the Redis TTLs (unfinished logs after a week, finished ones and their
//! cancel flags after `LLMJOBS_EVENT_LOG_TTL_SECS`, default 120 s, once the store has them;
//! snapshots after `LLMJOBS_PROGRESS_TTL_SECS`, at most that): an expired entry
//! is dropped when next touched, and a sweep of all entries runs at most every
//! 10 s along with an append. Nothing survives the process.
//!
//! The cancel flags live with the in-process queue (whose signals reach the workers): this
//! log reads and sets them through [`CancelFlags`], handed over by whoever wires the two
//! together, always while holding its own lock (and never the other way round), so that a
//! cancel request and an attempt's claim on the job's end are ordered as in Redis.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{
    Appended, CancelCheck, CancelRequest, Closed, Codec, Error, Event, EventLog, Extras, Fence,
    JobTurn, Live, LogRead, Subscription, check_close,
};
use crate::{job::JobId, progress::JobProgress};

mod append;

/// Buffered live items per job before a slow watcher is told to resync from the log.
const LIVE_BUFFER: usize = 1024;
/// Unfinished logs are dropped after this long without a terminal event (a lost job).
const UNFINISHED_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Least time between two sweeps for expired entries.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// How long an opening append's mark counts the job as watched (as a watch mark in Redis).
const FOLLOWED_FOR: Duration = Duration::from_secs(60);

/// One job's log: `P:{id}:events` and `P:{id}:state` of the Redis layout.
#[derive(Debug, Default)]
struct Log {
    /// Events in order; event i has sequence `base + i + 1`.
    events: Vec<Event>,
    /// Sequences continue above this (a log restarted after a loss).
    base: Option<u64>,
    /// The current attempt, once a fence or a restart set it.
    attempt: Option<u32>,
    /// Sequence of the terminal event.
    done: Option<u64>,
    /// The attempt that claimed the job's end (`CancelCheck::Seal`).
    sealed: Option<u32>,
    /// Output tokens of the current attempt.
    output_tokens: Option<u64>,
    /// When the log goes; `None` until its first append or restart.
    expires: Option<Instant>,
    /// Until when appends count as watched without a watcher: the job's submitter follows
    /// it from its opening append (`watch.lua`'s mark, set by [`EventLog::open`]).
    followed_until: Option<Instant>,
}

/// A progress snapshot and when it goes.
#[derive(Debug)]
struct Snapshot {
    progress: JobProgress,
    expires: Instant,
}

/// Live watchers of one job.
struct Watched {
    tx: broadcast::Sender<Live>,
    turn: Arc<JobTurn>,
    watchers: usize,
}

#[derive(Default)]
struct State {
    logs: HashMap<JobId, Log>,
    progress: HashMap<JobId, Snapshot>,
    watched: HashMap<JobId, Watched>,
    next_sweep: Option<Instant>,
}

impl State {
    /// The job's log, unless it has expired (then it is dropped).
    fn log(&mut self, job_id: JobId, now: Instant) -> Option<&mut Log> {
        if self
            .logs
            .get(&job_id)
            .is_some_and(|l| l.expires.is_some_and(|t| t <= now))
        {
            self.logs.remove(&job_id);
        }
        self.logs.get_mut(&job_id)
    }

    fn sweep(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|t| t > now) {
            return;
        }
        self.next_sweep = Some(now + SWEEP_EVERY);
        self.logs.retain(|_, l| l.expires.is_none_or(|t| t > now));
        self.progress.retain(|_, s| s.expires > now);
    }
}

/// The jobs' cancel flags (the in-process queue's `P:{id}:cancel`), read and set by this log
/// while it holds its lock; implementations must not call back into the log.
pub trait CancelFlags: Send + Sync + 'static {
    /// Whether a cancel was requested for the job and has not expired.
    fn is_set(&self, job_id: JobId) -> bool;
    /// Sets the job's flag with the client's reason and signals the workers.
    fn set(&self, job_id: JobId, reason: &str);
    /// Removes the job's flag (a new run of a finished job).
    fn clear(&self, job_id: JobId);
    /// The job ended: its flag, when set, goes `after` from now, with its log (as
    /// `append.lua` expires `P:{id}:cancel` with the terminal event).
    fn expire(&self, job_id: JobId, after: Duration);
}

/// The in-process event log.
#[derive(Clone)]
pub struct MemoryEventLog {
    state: Arc<Mutex<State>>,
    codec: Arc<dyn Codec>,
    terminal_ttl: Duration,
    progress_ttl: Duration,
    cancel_flags: Option<Arc<dyn CancelFlags>>,
}

impl MemoryEventLog {
    /// An event log whose finished logs stay `terminal_ttl_secs` for replay, and whose
    /// progress snapshots stay `progress_ttl_secs` after the end (each at least a second, as
    /// in Redis); live events are encoded by `codec` for their watchers.
    pub fn new(
        codec: Arc<dyn Codec>,
        terminal_ttl_secs: u64,
        progress_ttl_secs: u64,
    ) -> MemoryEventLog {
        MemoryEventLog {
            state: Arc::default(),
            codec,
            terminal_ttl: Duration::from_secs(terminal_ttl_secs.max(1)),
            progress_ttl: Duration::from_secs(progress_ttl_secs.max(1)),
            cancel_flags: None,
        }
    }

    /// This log, reading the jobs' cancel flags through `flags` when an append asks for them
    /// and setting them on cancel requests (without it, appends report no cancel and
    /// requests set nothing).
    pub fn with_cancel_flags(mut self, flags: Arc<dyn CancelFlags>) -> MemoryEventLog {
        self.cancel_flags = Some(flags);
        self
    }

    /// Whether the job's cancel flag is set.
    fn cancel_requested(&self, job_id: JobId) -> bool {
        self.cancel_flags.as_ref().is_some_and(|f| f.is_set(job_id))
    }

    /// The state; each step completes before the lock is released, so a poisoned lock still
    /// holds consistent data.
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Leaves a job's watcher count when a [`Subscription`] is dropped.
struct Unwatch {
    state: Arc<Mutex<State>>,
    job_id: JobId,
}

impl Drop for Unwatch {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        if let Some(w) = state.watched.get_mut(&self.job_id) {
            w.watchers -= 1;
            if w.watchers == 0 {
                state.watched.remove(&self.job_id);
            }
        }
    }
}

#[async_trait]
impl EventLog for MemoryEventLog {
    fn codec(&self) -> &dyn Codec {
        &*self.codec
    }

    async fn append_events(
        &self,
        job_id: JobId,
        events: &[Event],
        fence: Fence,
        progress: Option<&JobProgress>,
        cancel: CancelCheck,
    ) -> Result<Appended, Error> {
        self.append_with(job_id, events, fence, progress, cancel, Extras::default())
    }

    async fn open(
        &self,
        job_id: JobId,
        event: &Event,
        followed: bool,
    ) -> Result<Option<u64>, Error> {
        let appended = self.append_with(
            job_id,
            std::slice::from_ref(event),
            Fence::None,
            None,
            CancelCheck::Skip,
            Extras {
                followed,
                ..Extras::default()
            },
        )?;
        Ok(appended.sequence)
    }

    async fn request_cancel(&self, job_id: JobId, reason: &str) -> Result<CancelRequest, Error> {
        let mut state = self.state();
        let log = state.log(job_id, Instant::now());
        if let Some(l) = &log
            && let Some(seq) = l.done
            && let Some(terminal) = l.events.last()
        {
            return Ok(CancelRequest::Ended(Event {
                sequence: seq,
                job_id,
                ..terminal.clone()
            }));
        }
        let ending = log.is_some_and(|l| l.sealed.is_some() && l.sealed == l.attempt);
        // Set (and signalled) under the log's lock, as cancel.lua does in one step.
        if let Some(flags) = &self.cancel_flags {
            flags.set(job_id, reason);
        }
        Ok(if ending {
            CancelRequest::Ending
        } else {
            CancelRequest::Flagged
        })
    }

    async fn close(
        &self,
        job_id: JobId,
        events: &[Event],
        fence: Fence,
        progress: Option<&JobProgress>,
        expected: Option<u64>,
    ) -> Result<Closed, Error> {
        check_close(events)?;
        let appended = self.append_with(
            job_id,
            events,
            fence,
            progress,
            CancelCheck::Skip,
            Extras {
                log: Some(expected),
                ..Extras::default()
            },
        )?;
        Ok(appended.into())
    }

    async fn progress(&self, job_id: JobId) -> Result<Option<JobProgress>, Error> {
        let now = Instant::now();
        let mut state = self.state();
        if state
            .progress
            .get(&job_id)
            .is_some_and(|s| s.expires <= now)
        {
            state.progress.remove(&job_id);
        }
        Ok(state.progress.get(&job_id).map(|s| s.progress.clone()))
    }

    async fn read_page(
        &self,
        job_id: JobId,
        after: u64,
        max_events: usize,
    ) -> Result<Option<LogRead>, Error> {
        let mut state = self.state();
        // As in Redis, a log is its list of events: a restart alone does not make one.
        let Some(log) = state
            .log(job_id, Instant::now())
            .filter(|l| !l.events.is_empty())
        else {
            return Ok(None);
        };
        let first = usize::try_from(after.saturating_sub(log.base.unwrap_or(0)))
            .unwrap_or(usize::MAX)
            .min(log.events.len());
        Ok(Some(LogRead {
            events: log.events[first..]
                .iter()
                .take(max_events.max(1))
                .cloned()
                .collect(),
            terminal_sequence: log.done,
        }))
    }

    async fn subscribe(&self, job_id: JobId) -> Result<Subscription, Error> {
        let (rx, turn) = {
            let mut state = self.state();
            let w = state.watched.entry(job_id).or_insert_with(|| Watched {
                tx: broadcast::channel(LIVE_BUFFER).0,
                turn: Arc::default(),
                watchers: 0,
            });
            w.watchers += 1;
            (w.tx.subscribe(), w.turn.clone())
        };
        let guard = Unwatch {
            state: self.state.clone(),
            job_id,
        };
        Ok(Subscription::new(rx, turn, Box::new(guard)))
    }

    async fn restart(
        &self,
        job_id: JobId,
        base: u64,
        attempt: u32,
        replace: bool,
    ) -> Result<bool, Error> {
        let now = Instant::now();
        let mut state = self.state();
        if replace {
            state.logs.remove(&job_id);
            // As restart.lua: the old run's cancel flag goes with its log.
            if let Some(flags) = &self.cancel_flags {
                flags.clear(job_id);
            }
        } else if state.log(job_id, now).is_some() {
            return Ok(false);
        }
        state.logs.insert(
            job_id,
            Log {
                base: Some(base),
                attempt: Some(attempt),
                expires: Some(now + UNFINISHED_TTL),
                ..Log::default()
            },
        );
        Ok(true)
    }

    async fn output_tokens(&self, job_id: JobId) -> Result<Option<u64>, Error> {
        let mut state = self.state();
        Ok(state
            .log(job_id, Instant::now())
            .and_then(|l| l.output_tokens))
    }

    async fn terminal_sequence(&self, job_id: JobId) -> Result<Option<u64>, Error> {
        let mut state = self.state();
        Ok(state.log(job_id, Instant::now()).and_then(|l| l.done))
    }
}

#[cfg(test)]
mod tests;
