//! A watcher catching up: the live log after its last sequence page by page, the stored log
//! once the live one has expired, a snapshot from the store when neither is left, and the
//! repair of a terminal event the log never got.

use tonic::Status;
use tracing::{debug, warn};

use super::{
    CATCH_UP_PAGE, Done, IDLE_CHECK, Stop, Watcher, past_the_end, terminal_kind, unavailable,
};
use crate::{
    events::{Event, EventKind, Fence, LogRead, archive::Archive, event::Snapshot, is_terminal},
    job::Job,
    reconciler::EPOCH,
};

impl Watcher {
    /// Sends everything the log has after `last`; when the log is gone, falls back to the
    /// store; when the store says the job ended but the log never got its terminal event (a
    /// worker died in between), writes that event from the store.
    pub(super) async fn catch_up(&mut self) -> Result<Done, Stop> {
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
                // down, the live log keeps flowing. One of the job's watchers here consults it
                // at a time (twice per IDLE_CHECK at most), for all of them: a repair reaches
                // the others through the log.
                // Nor is it while the log's newest event is younger than IDLE_CHECK: a job
                // that ended after it cannot have ended long enough ago to be repaired (a
                // job just submitted, followed by `SubmitAndStream`, never asks the store).
                if self.log_is_recent() || !self.turn.take_turn(IDLE_CHECK / 2) {
                    return Ok(Done::No);
                }
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

    /// Whether an event this watcher read from the log is younger than [`IDLE_CHECK`]: every
    /// event a job's log holds was appended before the job ended, so such a job ended (if it
    /// did) too recently for [`Watcher::repair_terminal`] to act.
    fn log_is_recent(&self) -> bool {
        let recent = chrono::Duration::from_std(IDLE_CHECK).unwrap_or_default();
        self.newest_read
            .is_some_and(|t| chrono::Utc::now() - t < recent)
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

    async fn terminal_kind(&self, job: &Job) -> Result<EventKind, Stop> {
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
                let mut ev = Event::new(self.terminal_kind(job).await?);
                ev.time = job.finished_at.unwrap_or_default();
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
        match crate::events::archive::of_events(self.events.codec(), &closed.log) {
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
    async fn stored_tail(&self, job: &Job) -> Option<Vec<Event>> {
        let log = self.store.event_log(job.id).await.ok()??;
        let tail: Vec<Event> = log
            .events(self.events.codec(), job.id)
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
        let events = log
            .events(self.events.codec(), job.id)
            .map_err(unavailable)?;
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
        let time = job.finished_at.unwrap_or_default();
        if self.last + 1 < terminal_seq {
            let snap = Event {
                sequence: terminal_seq - 1,
                time,
                job_id: job.id,
                kind: EventKind::Snapshot(Snapshot {
                    status: job.status,
                    content: outcome.content,
                    reasoning_content: outcome.reasoning_content,
                }),
            };
            self.send(snap).await?;
        }
        let terminal = Event {
            sequence: terminal_seq,
            time,
            job_id: job.id,
            kind: self.terminal_kind(job).await?,
        };
        self.send(terminal).await
    }
}
