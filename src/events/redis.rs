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
use tokio::sync::broadcast;
use tracing::{debug, warn};

use super::{Error, EventLog, Fence, Live, LogRead, Subscription, is_terminal, last_of_append};
use crate::{
    backend::Redis,
    job::JobId,
    proto::v1::{JobEvent, JobProgress},
};

static APPEND: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("append.lua")));
static READ: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("read.lua")));
static RESTART: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("restart.lua")));

/// Buffered live items per job before a slow watcher is told to resync from the log.
const LIVE_BUFFER: usize = 1024;
/// Unfinished logs are dropped after this long without a terminal event (a lost job).
const UNFINISHED_TTL_SECS: u64 = 7 * 24 * 3600;

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

    async fn append_with(
        &self,
        job_id: JobId,
        events: &[JobEvent],
        fence: Fence,
        progress: Option<&JobProgress>,
    ) -> Result<Option<u64>, Error> {
        let Some(last) = last_of_append(events)? else {
            return Ok(None);
        };
        let k = &self.redis.keys;
        let fence = match fence {
            Fence::None => String::new(),
            Fence::Attempt(n) => format!("a{n}"),
            Fence::Start(n) => format!("s{n}"),
        };
        let output_tokens = events
            .iter()
            .rev()
            .find_map(|e| match &e.kind {
                Some(crate::proto::v1::job_event::Kind::TokenDelta(d)) => {
                    Some(d.output_tokens.to_string())
                }
                _ => None,
            })
            .unwrap_or_default();
        let mut invocation = APPEND.prepare_invoke();
        invocation
            .key(k.job(&job_id, "events"))
            .key(k.job(&job_id, "state"))
            .key(k.job(&job_id, "progress"))
            .arg(fence)
            .arg(if is_terminal(last) { "1" } else { "0" })
            .arg(k.events_channel(&job_id))
            .arg(output_tokens)
            .arg(self.terminal_ttl_secs)
            .arg(UNFINISHED_TTL_SECS)
            .arg(progress.map(Message::encode_to_vec).unwrap_or_default())
            .arg(self.progress_ttl_secs);
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
        let seq: u64 = invocation.invoke_async(&mut conn).await?;
        Ok((seq > 0).then_some(seq))
    }
}

fn decode(job_id: JobId, sequence: u64, bytes: &[u8]) -> Result<JobEvent, Error> {
    let mut event = JobEvent::decode(bytes)
        .map_err(|e| Error::Corrupt(format!("job {job_id} event {sequence}: {e}")))?;
    event.sequence = sequence;
    event.job_id = job_id.to_string();
    Ok(event)
}

#[async_trait]
impl EventLog for RedisEventLog {
    async fn append(
        &self,
        job_id: JobId,
        event: &JobEvent,
        fence: Fence,
    ) -> Result<Option<u64>, Error> {
        self.append_with(job_id, std::slice::from_ref(event), fence, None)
            .await
    }

    async fn append_tracked(
        &self,
        job_id: JobId,
        events: &[JobEvent],
        fence: Fence,
        progress: Option<&JobProgress>,
    ) -> Result<Option<u64>, Error> {
        self.append_with(job_id, events, fence, progress).await
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

    async fn read_after(&self, job_id: JobId, after: u64) -> Result<Option<LogRead>, Error> {
        let k = &self.redis.keys;
        let mut conn = self.redis.conn().await?;
        let read: Option<(u64, String, u64, Vec<Vec<u8>>)> = READ
            .key(k.job(&job_id, "events"))
            .key(k.job(&job_id, "state"))
            .arg(after)
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
            .arg(base)
            .arg(attempt)
            .arg(UNFINISHED_TTL_SECS)
            .arg(if replace { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        Ok(started == 1)
    }

    async fn output_tokens(&self, job_id: JobId) -> Result<Option<u64>, Error> {
        let mut conn = self.redis.conn().await?;
        let v: Option<u64> = conn
            .hget(self.redis.keys.job(&job_id, "state"), "output_tokens")
            .await?;
        Ok(v)
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
    /// The connection's subscribe side; `None` until connected (or while reconnecting).
    /// Held across SUBSCRIBE so that a second watcher never starts before the first's
    /// subscription is confirmed.
    sink: tokio::sync::Mutex<Option<redis::aio::PubSubSink>>,
}

struct Watched {
    tx: broadcast::Sender<Live>,
    watchers: usize,
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
            let hub = self.hub.clone();
            let channel = hub.redis.keys.events_channel(&self.job_id);
            let job_id = self.job_id;
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let mut sink = hub.sink.lock().await;
                    // Someone may have started watching again meanwhile.
                    let rewatched = hub
                        .jobs
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .contains_key(&job_id);
                    if let (Some(s), false) = (sink.as_mut(), rewatched)
                        && let Err(e) = s.unsubscribe(&channel).await
                    {
                        debug!(error = %e, "unsubscribe failed");
                    }
                });
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
            }),
        }
    }

    async fn subscribe(&self, job_id: JobId) -> Result<Subscription, Error> {
        let inner = &self.inner;
        let mut sink = inner.sink.lock().await;
        if sink.is_none() {
            *sink = Some(self.connect().await?);
        }
        let (rx, fresh) = {
            let mut jobs = inner
                .jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match jobs.get_mut(&job_id) {
                Some(w) => {
                    w.watchers += 1;
                    (w.tx.subscribe(), false)
                }
                None => {
                    let (tx, rx) = broadcast::channel(LIVE_BUFFER);
                    jobs.insert(job_id, Watched { tx, watchers: 1 });
                    (rx, true)
                }
            }
        };
        let guard = Unwatch {
            hub: inner.clone(),
            job_id,
        };
        if fresh {
            let channel = inner.redis.keys.events_channel(&job_id);
            let s = sink
                .as_mut()
                .ok_or_else(|| Error::Unavailable("no pub/sub".into()))?;
            if let Err(e) = s.subscribe(&channel).await {
                *sink = None;
                return Err(e.into());
            }
        }
        Ok(Subscription::new(rx, Box::new(guard)))
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
                broadcast_resync(&hub.inner);
                return;
            }
            Err(e) => debug!(error = %e, "event hub: reconnect failed"),
        }
    }
}

fn dispatch(hub: &HubInner, prefix: &str, msg: &redis::Msg) {
    let Some(job_id) = msg
        .get_channel_name()
        .strip_prefix(prefix)
        .and_then(|id| JobId::parse_str(id).ok())
    else {
        return;
    };
    let payload = msg.get_payload_bytes();
    let Some(colon) = payload.iter().position(|b| *b == b':') else {
        return;
    };
    let Some(seq) = std::str::from_utf8(&payload[..colon])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return;
    };
    let live = match decode(job_id, seq, &payload[colon + 1..]) {
        Ok(event) => Live::Event(event),
        Err(e) => {
            warn!(error = %e, "event hub: undecodable event");
            Live::Resync
        }
    };
    let jobs = hub
        .jobs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(w) = jobs.get(&job_id) {
        let _ = w.tx.send(live);
    }
}
