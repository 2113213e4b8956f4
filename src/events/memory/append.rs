//! `append.lua` in process: what an append admits, writes and answers, under the log's lock.

use std::time::Instant;

use super::{FOLLOWED_FOR, Log, MemoryEventLog, Snapshot, State, UNFINISHED_TTL, Watched};
use crate::{
    events::{
        Appended, CancelCheck, Error, Event, EventKind, Extras, Fence, Live, Published,
        is_terminal, last_of_append,
    },
    job::JobId,
    progress::JobProgress,
};

impl MemoryEventLog {
    /// `append.lua`: returns what the append did (`earlier` holds the events the script
    /// would return: for an accepted start, those before it; with `log` (`Some(expected)`),
    /// the whole log unless the last sequence is `expected`). The cancel flag is read under
    /// the log's lock.
    pub(super) fn append_with(
        &self,
        job_id: JobId,
        events: &[Event],
        fence: Fence,
        progress: Option<&JobProgress>,
        cancel: CancelCheck,
        extras: Extras,
    ) -> Result<Appended, Error> {
        let Some(last) = last_of_append(events)? else {
            return Ok(Appended::default());
        };
        let step = Step {
            job_id,
            events,
            fence,
            seal: match (cancel, fence) {
                (CancelCheck::Seal, Fence::Attempt(n) | Fence::At { attempt: n, .. }) => Some(n),
                _ => None,
            },
            extras,
            now: Instant::now(),
        };
        let mut guard = self.state();
        let state = &mut *guard;
        state.sweep(step.now);
        state.log(job_id, step.now);
        let mut appended = self.first_answer(state, &step, cancel);
        if ends_unwritten(state, &step, &mut appended) {
            return Ok(appended);
        }
        let terminal = is_terminal(last);
        self.write(state, &step, terminal, &mut appended);
        if let Some(p) = progress {
            state.progress.insert(
                job_id,
                Snapshot {
                    progress: p.clone(),
                    expires: step.now + UNFINISHED_TTL,
                },
            );
        }
        if terminal && let Some(s) = state.progress.get_mut(&job_id) {
            s.expires = step.now + self.progress_ttl;
        }
        Ok(appended)
    }

    /// What an append answers before it writes: the cancel flag (when it asks and its
    /// attempt has not claimed the end already) and whether someone watches the job.
    fn first_answer(&self, state: &State, step: &Step<'_>, cancel: CancelCheck) -> Appended {
        let log = state.logs.get(&step.job_id);
        let sealed = log.and_then(|l| l.sealed);
        let cancel_requested = cancel != CancelCheck::Skip
            && !(step.seal.is_some() && step.seal == sealed)
            && self.cancel_requested(step.job_id);
        Appended {
            cancel_requested,
            watched: state.watched.contains_key(&step.job_id)
                || log.is_some_and(|l| l.followed_until.is_some_and(|t| t > step.now)),
            ..Appended::default()
        }
    }

    /// Writes an admitted append: its events (published to live watchers), the attempt it
    /// starts or the end it claims, its token count, and for a `terminal` one the log's end.
    fn write(&self, state: &mut State, step: &Step<'_>, terminal: bool, appended: &mut Appended) {
        let (now, fence) = (step.now, step.fence);
        let log = state.logs.entry(step.job_id).or_default();
        if step.extras.followed {
            log.followed_until = Some(now + FOLLOWED_FOR);
        }
        appended.watched |= log.followed_until.is_some_and(|t| t > now);
        if let Some(n) = step.seal
            && !appended.cancel_requested
        {
            log.sealed = Some(n);
            appended.sealed = true;
        }
        if let Fence::Start(n) = fence {
            appended.earlier = log.events.clone();
            log.attempt = Some(n);
            log.output_tokens = Some(0);
        }
        let first = log.events.is_empty();
        let seq = self.push(log, state.watched.get(&step.job_id), step);
        if terminal {
            log.done = Some(seq);
            log.expires = Some(now + self.terminal_ttl);
            if let Some(flags) = &self.cancel_flags {
                flags.expire(step.job_id, self.terminal_ttl);
            }
            if let Some(expected) = step.extras.log {
                appended.earlier = if expected == Some(seq) {
                    Vec::new()
                } else {
                    log.events.clone()
                };
            }
        } else if first || matches!(fence, Fence::Start(_)) {
            log.expires = Some(now + UNFINISHED_TTL);
        }
        appended.sequence = Some(seq);
    }

    /// Adds the append's events to `log`, each with its sequence and the job's id, and sends
    /// them to the job's live watchers. Returns the last sequence.
    fn push(&self, log: &mut Log, watched: Option<&Watched>, step: &Step<'_>) -> u64 {
        let base = log.base.unwrap_or(0);
        for event in step.events {
            let stored = Event {
                sequence: base + log.events.len() as u64 + 1,
                job_id: step.job_id,
                ..event.clone()
            };
            if let Some(w) = watched {
                // No receiver left is fine: watchers come and go.
                let published = Published::new(&*self.codec, stored.clone());
                let _ = w.tx.send(Live::Event(published));
            }
            log.events.push(stored);
        }
        if let Some(tokens) = step.events.iter().rev().find_map(|e| match &e.kind {
            EventKind::TokenDelta(d) => Some(d.output_tokens),
            _ => None,
        }) {
            log.output_tokens = Some(tokens);
        }
        base + log.events.len() as u64
    }
}

/// One append's parameters, as [`MemoryEventLog::append_with`] works through them.
struct Step<'a> {
    job_id: JobId,
    events: &'a [Event],
    fence: Fence,
    /// The attempt whose end the append claims ([`CancelCheck::Seal`] under an attempt's
    /// fence).
    seal: Option<u32>,
    extras: Extras,
    now: Instant,
}

/// Whether the append ends without writing, as `append.lua` decides: the log already has its
/// terminal event (the whole log back when asked), the fence names a stale attempt (or one on
/// a log that holds none: lost), or under [`Fence::At`] the log does not end at its head
/// (an earlier try put the events in: its sequence is answered).
fn ends_unwritten(state: &State, step: &Step<'_>, appended: &mut Appended) -> bool {
    let log = state.logs.get(&step.job_id);
    let attempt = log.and_then(|l| l.attempt);
    if let Some(l) = log.filter(|l| l.done.is_some()) {
        if step.extras.log.is_some() {
            appended.earlier = l.events.clone();
        }
        return true;
    }
    let current = attempt.unwrap_or(0);
    let refused = match step.fence {
        Fence::None => false,
        Fence::Attempt(n) | Fence::At { attempt: n, .. } => n != current,
        Fence::Start(n) => n < current,
    };
    if refused {
        // As append.lua: an attempt's fence on a log that holds no attempt.
        appended.lost =
            attempt.is_none() && matches!(step.fence, Fence::Attempt(_) | Fence::At { .. });
        return true;
    }
    let Fence::At { head, .. } = step.fence else {
        return false;
    };
    let end = log.map_or(0, |l| l.base.unwrap_or(0) + l.events.len() as u64);
    if end == head + step.events.len() as u64 {
        // An earlier try of this append put the events in.
        appended.sequence = Some(end);
        appended.sealed = step.seal.is_some() && step.seal == log.and_then(|l| l.sealed);
        return true;
    }
    end != head
}
