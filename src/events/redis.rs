//! [`EventLog`] on Redis: a list per job, sequences assigned by a Lua script, and a [`Hub`]
//! that multiplexes every live watcher of this process over one pub/sub connection.

mod hub;

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

use async_trait::async_trait;
use redis::{AsyncCommands, Script};

pub use hub::Hub;
use hub::watch_until;

use super::{
    Appended, CancelCheck, CancelRequest, Closed, Codec, Error, Event, EventKind, EventLog, Extras,
    Fence, LogRead, Subscription, check_close, is_terminal, last_of_append,
};
use crate::{job::JobId, progress::JobProgress, redis::Redis};

static APPEND: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("append.lua")));
static CANCEL: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("cancel.lua")));
static READ: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("read.lua")));
static RESTART: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("restart.lua")));
static WATCH: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("watch.lua")));

/// Buffered live items per job before a slow watcher is told to resync from the log.
const LIVE_BUFFER: usize = 1024;
/// How long a cancel request stays visible to an attempt that starts later (a job waiting in
/// its queue or to retry); a job's end shortens it to the finished log's window.
pub const CANCEL_FLAG_TTL_SECS: u64 = 24 * 3600;
/// Unfinished logs are dropped after this long without a terminal event (a lost job).
const UNFINISHED_TTL_SECS: u64 = 7 * 24 * 3600;
/// Newest events [`EventLog::output_tokens`] looks at for a token delta.
const TOKENS_TAIL: isize = 32;
/// How long a watch mark makes appends publish (see `watch.lua`). Long beside
/// [`WATCH_REFRESH`] and beside the clock skew between a gateway and a worker that it
/// tolerates; a stale mark only costs PUBLISHes, a missing one delays a watcher by up to
/// [`crate::streaming::IDLE_CHECK`].
const WATCH_LEASE: Duration = Duration::from_secs(60);
/// How often a process renews the watch marks of the jobs it follows.
const WATCH_REFRESH: Duration = Duration::from_secs(20);
/// Watch marks renewed per pipelined round trip.
const WATCH_CHUNK: usize = 500;

/// Milliseconds since the Unix epoch by this machine's clock.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The Redis event log.
#[derive(Clone)]
pub struct RedisEventLog {
    redis: Redis,
    codec: Arc<dyn Codec>,
    hub: Hub,
    terminal_ttl_secs: u64,
    progress_ttl_secs: u64,
}

impl RedisEventLog {
    /// An event log whose finished logs stay `terminal_ttl_secs` for replay, and whose
    /// progress snapshots stay `progress_ttl_secs` after the end; events are stored and
    /// published in `codec`'s encoding.
    pub fn new(
        redis: Redis,
        codec: Arc<dyn Codec>,
        terminal_ttl_secs: u64,
        progress_ttl_secs: u64,
    ) -> RedisEventLog {
        let hub = Hub::new(redis.clone(), codec.clone());
        RedisEventLog {
            redis,
            codec,
            hub,
            terminal_ttl_secs: terminal_ttl_secs.max(1),
            progress_ttl_secs: progress_ttl_secs.max(1),
        }
    }

    /// Runs `append.lua`; `log` asks for the whole log back unless the last sequence is the
    /// one given (`Some(None)`: always). Returns what the append did and the items the
    /// script returned, with their sequences.
    async fn append_with(
        &self,
        job_id: JobId,
        events: &[Event],
        fence: Fence,
        progress: Option<&JobProgress>,
        cancel: CancelCheck,
        extras: Extras,
    ) -> Result<Appended, Error> {
        let Extras { log, followed } = extras;
        let Some(last) = last_of_append(events)? else {
            return Ok(Appended::default());
        };
        let k = &self.redis.keys;
        let fence = match fence {
            Fence::None => String::new(),
            Fence::Attempt(n) => format!("a{n}"),
            Fence::Start(n) => format!("s{n}"),
            Fence::At { attempt, head } => format!("a{attempt}@{head}"),
        };
        let mut invocation = APPEND.prepare_invoke();
        invocation
            .key(k.job(&job_id, "events"))
            .key(k.job(&job_id, "state"))
            .key(k.job(&job_id, "progress"))
            .key(k.cancel_flag(&job_id))
            .arg(fence)
            .arg(if is_terminal(last) { "1" } else { "0" })
            .arg(k.events_channel(&job_id))
            .arg(match cancel {
                CancelCheck::Skip => "0",
                CancelCheck::Read => "1",
                CancelCheck::Seal => "2",
            })
            .arg(self.terminal_ttl_secs)
            .arg(UNFINISHED_TTL_SECS)
            .arg(
                progress
                    .map(|p| self.codec.encode_progress(p))
                    .unwrap_or_default(),
            )
            .arg(self.progress_ttl_secs)
            .arg(now_ms())
            .arg(match log {
                None => String::new(),
                Some(None) => "-".to_owned(),
                Some(Some(seq)) => seq.to_string(),
            })
            .arg(if followed {
                watch_until().to_string()
            } else {
                String::new()
            })
            .arg(WATCH_LEASE.as_secs());
        for event in events {
            // Stored without sequence and job id: the list index and the key carry them.
            let mut stored = Vec::new();
            self.codec.encode_stored(event, false, &mut stored);
            invocation.arg(stored);
        }
        let mut conn = self.redis.conn().await?;
        let (seq, cancel, sealed, watched, base, items, lost): AppendAnswer =
            invocation.invoke_async(&mut conn).await?;
        let earlier = items
            .iter()
            .zip(base + 1..)
            .map(|(bytes, seq)| decode(&*self.codec, job_id, seq, bytes))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Appended {
            sequence: (seq > 0).then_some(seq),
            cancel_requested: cancel == 1,
            sealed: sealed == 1,
            watched: watched == 1,
            earlier,
            lost: lost == 1,
        })
    }
}

/// What `append.lua` returns: sequence, cancel flag, sealed, watched, base, items, lost.
type AppendAnswer = (u64, u8, u8, u8, u64, Vec<Vec<u8>>, u8);

/// A stored event, with its sequence and job id set.
fn decode(codec: &dyn Codec, job_id: JobId, sequence: u64, bytes: &[u8]) -> Result<Event, Error> {
    let mut event = codec
        .decode(bytes)
        .map_err(|e| Error::Corrupt(format!("job {job_id} event {sequence}: {e}")))?;
    event.sequence = sequence;
    event.job_id = job_id;
    Ok(event)
}

#[async_trait]
impl EventLog for RedisEventLog {
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
            .await
    }

    async fn open(
        &self,
        job_id: JobId,
        event: &Event,
        followed: bool,
    ) -> Result<Option<u64>, Error> {
        let appended = self
            .append_with(
                job_id,
                std::slice::from_ref(event),
                Fence::None,
                None,
                CancelCheck::Skip,
                Extras {
                    followed,
                    ..Extras::default()
                },
            )
            .await?;
        Ok(appended.sequence)
    }

    #[tracing::instrument(skip_all, fields(job_id = %job_id))]
    async fn request_cancel(&self, job_id: JobId, reason: &str) -> Result<CancelRequest, Error> {
        let k = &self.redis.keys;
        let mut conn = self.redis.conn().await?;
        let answer: Vec<Vec<u8>> = CANCEL
            .key(k.job(&job_id, "events"))
            .key(k.job(&job_id, "state"))
            .key(k.cancel_flag(&job_id))
            .arg(reason)
            .arg(CANCEL_FLAG_TTL_SECS)
            .arg(k.channel("cancel"))
            .arg(job_id.to_string())
            .invoke_async(&mut conn)
            .await?;
        match answer.as_slice() {
            [word] if word == b"flagged" => Ok(CancelRequest::Flagged),
            [word] if word == b"ending" => Ok(CancelRequest::Ending),
            [word, seq, event] if word == b"ended" => {
                let seq = std::str::from_utf8(seq)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| Error::Corrupt(format!("job {job_id}: terminal sequence")))?;
                Ok(CancelRequest::Ended(decode(
                    &*self.codec,
                    job_id,
                    seq,
                    event,
                )?))
            }
            _ => Err(Error::Corrupt(format!(
                "job {job_id}: the cancel script answered {} items",
                answer.len()
            ))),
        }
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
        let appended = self
            .append_with(
                job_id,
                events,
                fence,
                progress,
                CancelCheck::Skip,
                Extras {
                    log: Some(expected),
                    ..Extras::default()
                },
            )
            .await?;
        Ok(appended.into())
    }

    async fn progress(&self, job_id: JobId) -> Result<Option<JobProgress>, Error> {
        let mut conn = self.redis.conn().await?;
        let raw: Option<Vec<u8>> = conn.get(self.redis.keys.job(&job_id, "progress")).await?;
        raw.map(|bytes| {
            self.codec
                .decode_progress(&bytes)
                .map_err(|e| Error::Corrupt(format!("job {job_id} progress: {e}")))
        })
        .transpose()
    }

    async fn read_page(
        &self,
        job_id: JobId,
        after: u64,
        max_events: usize,
    ) -> Result<Option<LogRead>, Error> {
        let k = &self.redis.keys;
        let mut conn = self.redis.conn().await?;
        // 0 reads to the end.
        let count = u64::try_from(max_events.max(1))
            .ok()
            .filter(|&n| n < 1 << 53)
            .unwrap_or(0);
        let read: Option<(u64, String, u64, Vec<Vec<u8>>)> = READ
            .key(k.job(&job_id, "events"))
            .key(k.job(&job_id, "state"))
            .arg(after)
            .arg(count)
            .invoke_async(&mut conn)
            .await?;
        let Some((base, done, first, raw)) = read else {
            return Ok(None);
        };
        let events = raw
            .iter()
            .zip(base + first + 1..)
            .map(|(bytes, seq)| decode(&*self.codec, job_id, seq, bytes))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(LogRead {
            events,
            terminal_sequence: done.parse().ok(),
        }))
    }

    async fn subscribe(&self, job_id: JobId) -> Result<Subscription, Error> {
        self.hub.subscribe(job_id).await
    }

    async fn restart(
        &self,
        job_id: JobId,
        base: u64,
        attempt: u32,
        replace: bool,
    ) -> Result<bool, Error> {
        let k = &self.redis.keys;
        let mut conn = self.redis.conn().await?;
        let started: i64 = RESTART
            .key(k.job(&job_id, "events"))
            .key(k.job(&job_id, "state"))
            .key(k.cancel_flag(&job_id))
            .arg(base)
            .arg(attempt)
            .arg(UNFINISHED_TTL_SECS)
            .arg(if replace { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        Ok(started == 1)
    }

    /// The count of the newest token delta among the log's last [`TOKENS_TAIL`] events (0
    /// when the newest attempt's `started` comes first), else the progress snapshot's: the
    /// appends write no counter, so that a flush costs no extra command.
    async fn output_tokens(&self, job_id: JobId) -> Result<Option<u64>, Error> {
        let k = &self.redis.keys;
        let mut conn = self.redis.conn().await?;
        let (tail, snapshot): (Vec<Vec<u8>>, Option<Vec<u8>>) = redis::pipe()
            .lrange(k.job(&job_id, "events"), -TOKENS_TAIL, -1)
            .get(k.job(&job_id, "progress"))
            .query_async(&mut conn)
            .await?;
        for bytes in tail.iter().rev() {
            let event = self
                .codec
                .decode(bytes)
                .map_err(|e| Error::Corrupt(format!("job {job_id} event: {e}")))?;
            match event.kind {
                EventKind::TokenDelta(d) => return Ok(Some(d.output_tokens)),
                EventKind::Started(_) => return Ok(Some(0)),
                _ => {}
            }
        }
        snapshot
            .map(|bytes| {
                self.codec
                    .decode_progress(&bytes)
                    .map(|p| p.output_tokens)
                    .map_err(|e| Error::Corrupt(format!("job {job_id} progress: {e}")))
            })
            .transpose()
    }

    async fn terminal_sequence(&self, job_id: JobId) -> Result<Option<u64>, Error> {
        let mut conn = self.redis.conn().await?;
        let done: Option<String> = conn
            .hget(self.redis.keys.job(&job_id, "state"), "done")
            .await?;
        Ok(done.and_then(|d| d.parse().ok()))
    }
}
