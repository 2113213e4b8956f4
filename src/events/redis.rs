//! [`EventLog`] on Redis: a list per job, sequences assigned by a Lua script, and a [`Hub`]
//! that multiplexes every live watcher of this process over one pub/sub connection.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use futures::StreamExt;
use prost::Message;
use redis::{AsyncCommands, Script};
use tokio::sync::{broadcast, oneshot};
use tracing::{debug, warn};

use super::{
    Appended, CancelCheck, CancelRequest, Closed, Error, EventLog, Extras, Fence, Live, LogRead,
    Published, Subscription, check_close, is_terminal, last_of_append,
};
use crate::{
    backend::Redis,
    job::JobId,
    proto::v1::{JobEvent, JobProgress, job_event::Kind},
};

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

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Error::Unavailable(e.to_string())
    }
}

impl From<deadpool_redis::PoolError> for Error {
    fn from(e: deadpool_redis::PoolError) -> Self {
        Error::Unavailable(e.to_string())
    }
}

/// The Redis event log.
#[derive(Clone)]
pub struct RedisEventLog {
    redis: Redis,
    hub: Hub,
    terminal_ttl_secs: u64,
    progress_ttl_secs: u64,
}

impl RedisEventLog {
    /// An event log whose finished logs stay `terminal_ttl_secs` for replay, and whose
    /// progress snapshots stay `progress_ttl_secs` after the end.
    pub fn new(redis: Redis, terminal_ttl_secs: u64, progress_ttl_secs: u64) -> RedisEventLog {
        let hub = Hub::new(redis.clone());
        RedisEventLog {
            redis,
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
        events: &[JobEvent],
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
            .arg(progress.map(Message::encode_to_vec).unwrap_or_default())
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
            let stored = JobEvent {
                sequence: 0,
                job_id: String::new(),
                ..event.clone()
            };
            invocation.arg(stored.encode_to_vec());
        }
        let mut conn = self.redis.conn().await?;
        let (seq, cancel, sealed, watched, base, items, lost): AppendAnswer =
            invocation.invoke_async(&mut conn).await?;
        let earlier = items
            .iter()
            .zip(base + 1..)
            .map(|(bytes, seq)| decode(job_id, seq, bytes))
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

fn decode(job_id: JobId, sequence: u64, bytes: &[u8]) -> Result<JobEvent, Error> {
    let mut event = JobEvent::decode(bytes)
        .map_err(|e| Error::Corrupt(format!("job {job_id} event {sequence}: {e}")))?;
    event.sequence = sequence;
    event.job_id = job_id.to_string();
    Ok(event)
}

#[async_trait]
impl EventLog for RedisEventLog {
    async fn append_events(
        &self,
        job_id: JobId,
        events: &[JobEvent],
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
        event: &JobEvent,
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
                Ok(CancelRequest::Ended(decode(job_id, seq, event)?))
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
        events: &[JobEvent],
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
            JobProgress::decode(bytes.as_slice())
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
            .map(|(bytes, seq)| decode(job_id, seq, bytes))
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
            let event = JobEvent::decode(bytes.as_slice())
                .map_err(|e| Error::Corrupt(format!("job {job_id} event: {e}")))?;
            match event.kind {
                Some(Kind::TokenDelta(d)) => return Ok(Some(d.output_tokens)),
                Some(Kind::Started(_)) => return Ok(Some(0)),
                _ => {}
            }
        }
        snapshot
            .map(|bytes| {
                JobProgress::decode(bytes.as_slice())
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

/// Fan-out of live events: one pub/sub connection per process, one broadcast channel per
/// watched job, shared by every watcher of that job.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    redis: Redis,
    /// Jobs watched in this process.
    jobs: Mutex<HashMap<JobId, Watched>>,
    /// The connection's subscribe side; `None` until connected (or while reconnecting). Its
    /// holder applies every waiting (un)subscription at once (see [`Hub::apply`]).
    sink: tokio::sync::Mutex<Option<redis::aio::PubSubSink>>,
    /// (Un)subscriptions waiting for the holder of `sink`.
    waiting: Mutex<Waiting>,
    /// Whether the task renewing this process's watch marks runs.
    renewing: std::sync::atomic::AtomicBool,
}

struct Watched {
    tx: broadcast::Sender<Live>,
    watchers: usize,
    /// Whether the job's channel is subscribed and the job marked watched: until then a
    /// new watcher waits, so that no watcher reads the log before appends are published to it.
    ready: bool,
}

/// Work for the next holder of the hub's sink: one SUBSCRIBE, one mark and one UNSUBSCRIBE
/// for all of it, however many watchers came and went meanwhile.
#[derive(Default)]
struct Waiting {
    /// Jobs to subscribe, each with the watcher waiting for the answer.
    subscribe: Vec<(JobId, oneshot::Sender<Result<(), String>>)>,
    /// Jobs whose last watcher left.
    unsubscribe: Vec<JobId>,
}

impl Waiting {
    fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.unsubscribe.is_empty()
    }
}

struct Unwatch {
    hub: Arc<HubInner>,
    job_id: JobId,
}

impl Drop for Unwatch {
    fn drop(&mut self) {
        let last = {
            let mut jobs = self
                .hub
                .jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match jobs.get_mut(&self.job_id) {
                Some(w) if w.watchers > 1 => {
                    w.watchers -= 1;
                    false
                }
                Some(_) => {
                    jobs.remove(&self.job_id);
                    true
                }
                None => false,
            }
        };
        if last {
            self.hub
                .waiting
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .unsubscribe
                .push(self.job_id);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let hub = Hub {
                    inner: self.hub.clone(),
                };
                rt.spawn(async move { hub.apply().await });
            }
        }
    }
}

impl Hub {
    fn new(redis: Redis) -> Hub {
        Hub {
            inner: Arc::new(HubInner {
                redis,
                jobs: Mutex::new(HashMap::new()),
                sink: tokio::sync::Mutex::new(None),
                waiting: Mutex::new(Waiting::default()),
                renewing: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    async fn subscribe(&self, job_id: JobId) -> Result<Subscription, Error> {
        let inner = &self.inner;
        let (rx, ready) = {
            let mut jobs = inner
                .jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let w = jobs.entry(job_id).or_insert_with(|| Watched {
                tx: broadcast::channel(LIVE_BUFFER).0,
                watchers: 0,
                ready: false,
            });
            w.watchers += 1;
            (w.tx.subscribe(), w.ready)
        };
        let guard = Unwatch {
            hub: inner.clone(),
            job_id,
        };
        if !ready {
            let (tx, answer) = oneshot::channel();
            inner
                .waiting
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .subscribe
                .push((job_id, tx));
            // Whoever holds the sink next applies this one with all the others waiting; in a
            // task of its own, so that a watcher that goes away meanwhile cannot cut short a
            // round that answers the others.
            let hub = self.clone();
            tokio::spawn(async move { hub.apply().await });
            match answer.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Error::Unavailable(e)),
                Err(_) => return Err(Error::Unavailable("event hub: subscription lost".into())),
            }
        }
        Ok(Subscription::new(rx, Box::new(guard)))
    }

    /// Applies every waiting (un)subscription with one UNSUBSCRIBE, one SUBSCRIBE and one
    /// mark (see [`mark`]), under the sink, and answers each waiting watcher. Watchers that
    /// arrive meanwhile wait for the sink and go together in the next round: a burst of new
    /// streams costs a few round trips, not two per stream one after the other. A job is
    /// marked ready only once subscribed and marked, so every append after that is published
    /// to this process and every append before it is in the log its watchers read next.
    async fn apply(&self) {
        let inner = &self.inner;
        let mut sink = inner.sink.lock().await;
        let batch = std::mem::take(
            &mut *inner
                .waiting
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if batch.is_empty() {
            return;
        }
        // Jobs watched again since their last watcher left stay subscribed; jobs whose
        // watchers all left before their turn are not subscribed at all.
        let (gone, fresh): (Vec<String>, Vec<JobId>) = {
            let jobs = inner
                .jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let gone = batch
                .unsubscribe
                .iter()
                .filter(|id| !jobs.contains_key(id))
                .map(|id| inner.redis.keys.events_channel(id))
                .collect();
            let mut fresh: Vec<JobId> = batch
                .subscribe
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| jobs.get(id).is_some_and(|w| !w.ready))
                .collect();
            fresh.sort_unstable();
            fresh.dedup();
            (gone, fresh)
        };
        if !gone.is_empty()
            && let Some(s) = sink.as_mut()
            && let Err(e) = s.unsubscribe(&gone).await
        {
            debug!(error = %e, "unsubscribe failed");
        }
        let result = if fresh.is_empty() {
            Ok(())
        } else {
            self.subscribe_all(&mut sink, &fresh).await
        };
        if result.is_ok() {
            let mut jobs = inner
                .jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for id in &fresh {
                if let Some(w) = jobs.get_mut(id) {
                    w.ready = true;
                }
            }
        }
        drop(sink);
        let answer = result.map_err(|e| e.to_string());
        for (_, tx) in batch.subscribe {
            let _ = tx.send(answer.clone());
        }
    }

    /// Subscribes the channels of `ids` (connecting first when needed) and marks them
    /// watched. A failed SUBSCRIBE drops the connection, so the next round opens a new one.
    async fn subscribe_all(
        &self,
        sink: &mut Option<redis::aio::PubSubSink>,
        ids: &[JobId],
    ) -> Result<(), Error> {
        if sink.is_none() {
            *sink = Some(self.connect().await?);
        }
        let s = sink
            .as_mut()
            .ok_or_else(|| Error::Unavailable("no pub/sub".into()))?;
        let channels: Vec<String> = ids
            .iter()
            .map(|id| self.inner.redis.keys.events_channel(id))
            .collect();
        if let Err(e) = s.subscribe(&channels).await {
            *sink = None;
            return Err(e.into());
        }
        mark(&self.inner.redis, ids).await
    }

    /// Opens the pub/sub connection and spawns its reader. Called with the sink lock held.
    /// Boxed: the reader reconnects through this function again.
    fn connect(&self) -> futures::future::BoxFuture<'_, Result<redis::aio::PubSubSink, Error>> {
        Box::pin(self.connect_inner())
    }

    async fn connect_inner(&self) -> Result<redis::aio::PubSubSink, Error> {
        let (mut sink, mut stream) = self.inner.redis.client.get_async_pubsub().await?.split();
        let channels: Vec<String> = {
            let jobs = self
                .inner
                .jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            jobs.keys()
                .map(|id| self.inner.redis.keys.events_channel(id))
                .collect()
        };
        if !channels.is_empty() {
            sink.subscribe(&channels).await?;
        }
        if !self
            .inner
            .renewing
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tokio::spawn(renew_marks(Arc::downgrade(&self.inner)));
        }
        let hub = Arc::downgrade(&self.inner);
        let prefix = self.inner.redis.keys.events_channel(&JobId::nil());
        let prefix = prefix
            .trim_end_matches(&JobId::nil().to_string())
            .to_owned();
        tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                let Some(hub) = hub.upgrade() else { return };
                dispatch(&hub, &prefix, &msg);
            }
            // Connection lost: every watcher re-reads the log; the next subscribe (or the
            // reconnect below) opens a new connection.
            let Some(hub) = hub.upgrade() else { return };
            warn!("event hub: Redis pub/sub connection lost");
            *hub.sink.lock().await = None;
            broadcast_resync(&hub);
            let hub = Hub { inner: hub };
            reconnect(hub).await;
        });
        Ok(sink)
    }
}

fn broadcast_resync(hub: &HubInner) {
    let jobs = hub
        .jobs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for w in jobs.values() {
        let _ = w.tx.send(Live::Resync);
    }
}

async fn reconnect(hub: Hub) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut sink = hub.inner.sink.lock().await;
        if sink.is_some() {
            return;
        }
        match hub.connect().await {
            Ok(s) => {
                *sink = Some(s);
                drop(sink);
                // Redis may have lost the marks with everything else.
                if let Err(e) = mark(&hub.inner.redis, &watched(&hub.inner)).await {
                    debug!(error = %e, "event hub: cannot renew watch marks");
                }
                broadcast_resync(&hub.inner);
                return;
            }
            Err(e) => debug!(error = %e, "event hub: reconnect failed"),
        }
    }
}

/// The jobs this process watches.
fn watched(hub: &HubInner) -> Vec<JobId> {
    hub.jobs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .keys()
        .copied()
        .collect()
}

/// Marks `ids` as watched for [`WATCH_LEASE`] from now (see `watch.lua`): one script call,
/// or pipelined calls of [`WATCH_CHUNK`] per round trip.
async fn mark(redis: &Redis, ids: &[JobId]) -> Result<(), Error> {
    let until = watch_until();
    let mut conn = redis.conn().await?;
    if let [id] = ids {
        let () = WATCH
            .key(redis.keys.job(id, "state"))
            .arg(until)
            .arg(WATCH_LEASE.as_secs())
            .invoke_async(&mut conn)
            .await?;
        return Ok(());
    }
    for chunk in ids.chunks(WATCH_CHUNK) {
        let mut pipe = redis::pipe();
        pipe.load_script(&WATCH).ignore();
        for id in chunk {
            let mut call = WATCH.key(redis.keys.job(id, "state"));
            call.arg(until).arg(WATCH_LEASE.as_secs());
            pipe.invoke_script(&call).ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
    }
    Ok(())
}

/// When a watch mark made now lapses (ms since the epoch).
fn watch_until() -> u64 {
    now_ms().saturating_add(u64::try_from(WATCH_LEASE.as_millis()).unwrap_or(0))
}

/// Renews the marks of every job this process watches every [`WATCH_REFRESH`], until the hub
/// is gone.
async fn renew_marks(hub: std::sync::Weak<HubInner>) {
    loop {
        tokio::time::sleep(WATCH_REFRESH).await;
        let Some(hub) = hub.upgrade() else { return };
        let ids = watched(&hub);
        if let Err(e) = mark(&hub.redis, &ids).await {
            warn!(error = %e, jobs = ids.len(), "event hub: cannot renew watch marks");
        }
    }
}

/// Delivers one published message to the job's watchers: `<first sequence>/<count>:`
/// followed by the length-delimited events of one append, which become consecutive
/// [`Live::Event`]s. A message that does not decode as announced delivers what did and then a
/// [`Live::Resync`] (the log has it all).
fn dispatch(hub: &HubInner, prefix: &str, msg: &redis::Msg) {
    let Some(job_id) = msg
        .get_channel_name()
        .strip_prefix(prefix)
        .and_then(|id| JobId::parse_str(id).ok())
    else {
        return;
    };
    let lives = decode_message(job_id, msg.get_payload_bytes());
    let jobs = hub
        .jobs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(w) = jobs.get(&job_id) {
        for live in lives {
            let _ = w.tx.send(live);
        }
    }
}

/// The live items of one message on a job's channel (see [`dispatch`]).
fn decode_message(job_id: JobId, payload: &[u8]) -> Vec<Live> {
    let header = payload.iter().position(|b| *b == b':').and_then(|colon| {
        let (first, count) = std::str::from_utf8(&payload[..colon])
            .ok()?
            .split_once('/')?;
        Some((
            first.parse::<u64>().ok()?,
            count.parse::<usize>().ok()?,
            &payload[colon + 1..],
        ))
    });
    let Some((first, count, mut rest)) = header else {
        warn!(job_id = %job_id, "event hub: malformed message");
        return vec![Live::Resync];
    };
    let mut lives = Vec::with_capacity(count);
    for sequence in (first..).take(count) {
        match JobEvent::decode_length_delimited(&mut rest) {
            Ok(mut event) => {
                event.sequence = sequence;
                event.job_id = job_id.to_string();
                lives.push(Live::Event(Published::new(event)));
            }
            Err(e) => {
                warn!(job_id = %job_id, sequence, error = %e, "event hub: undecodable event");
                lives.push(Live::Resync);
                return lives;
            }
        }
    }
    if !rest.is_empty() {
        warn!(job_id = %job_id, "event hub: more in a message than it announced");
        lives.push(Live::Resync);
    }
    lives
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::TokenDelta;

    fn delta(text: &str) -> JobEvent {
        JobEvent {
            kind: Some(Kind::TokenDelta(TokenDelta {
                text: text.into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    /// The message `append.lua` publishes for `events` starting at `first`.
    fn message(first: u64, events: &[JobEvent]) -> Vec<u8> {
        let mut out = format!("{first}/{}:", events.len()).into_bytes();
        for e in events {
            e.encode_length_delimited(&mut out)
                .expect("a Vec grows as needed");
        }
        out
    }

    #[test]
    fn one_message_becomes_consecutive_events() {
        let id = JobId::now_v7();
        // A long text needs a two-byte length.
        let events = [delta("a"), delta(&"b".repeat(300)), delta("")];
        let lives = decode_message(id, &message(41, &events));
        let got: Vec<(u64, String)> = lives
            .iter()
            .map(|l| match l {
                Live::Event(e) => match &e.event().kind {
                    Some(Kind::TokenDelta(d)) => (e.event().sequence, d.text.clone()),
                    other => panic!("unexpected {other:?}"),
                },
                Live::Resync => panic!("unexpected resync"),
            })
            .collect();
        assert_eq!(
            got,
            [(41, "a".into()), (42, "b".repeat(300)), (43, String::new())]
        );
        assert!(
            lives
                .iter()
                .all(|l| matches!(l, Live::Event(e) if e.event().job_id == id.to_string()))
        );
    }

    #[test]
    fn a_damaged_message_delivers_what_decodes_then_a_resync() {
        let id = JobId::now_v7();
        let mut bytes = message(7, &[delta("ok"), delta("cut short")]);
        bytes.truncate(bytes.len() - 3);
        let lives = decode_message(id, &bytes);
        assert_eq!(lives.len(), 2);
        assert!(matches!(&lives[0], Live::Event(e) if e.event().sequence == 7));
        assert!(matches!(lives[1], Live::Resync));
        // The second is a message of the previous format (one event, no count).
        for malformed in [&b"no sequence"[..], b"7:\x02\x08\x01", b"7/x:"] {
            assert!(
                matches!(decode_message(id, malformed).as_slice(), [Live::Resync]),
                "{malformed:?}"
            );
        }
        let mut extra = message(7, &[delta("one")]);
        delta("two")
            .encode_length_delimited(&mut extra)
            .expect("a Vec grows as needed");
        let lives = decode_message(id, &extra);
        assert!(matches!(lives.as_slice(), [Live::Event(_), Live::Resync]));
    }
}
