//! The [`Hub`]: every live watcher of this process multiplexed over one Redis pub/sub
//! connection, one broadcast channel per watched job; [`marks`] tell writers which jobs are
//! watched, and [`messages`] turns what the channel delivers into live events.

mod marks;
mod messages;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use tokio::sync::{broadcast, oneshot};
use tracing::{debug, warn};

pub(super) use marks::watch_until;
use marks::{mark, renew_marks, watched};
use messages::dispatch;

use super::LIVE_BUFFER;
use crate::{
    events::{Codec, Error, JobTurn, Live, Subscription},
    job::JobId,
    redis::Redis,
};

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

/// Fan-out of live events: one pub/sub connection per process, one broadcast channel per
/// watched job, shared by every watcher of that job.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    redis: Redis,
    /// Decodes published events, and encodes them once for every watcher.
    codec: Arc<dyn Codec>,
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
    /// Shared by the job's subscriptions (see [`JobTurn::take_turn`]).
    turn: Arc<JobTurn>,
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
    pub(super) fn new(redis: Redis, codec: Arc<dyn Codec>) -> Hub {
        Hub {
            inner: Arc::new(HubInner {
                redis,
                codec,
                jobs: Mutex::new(HashMap::new()),
                sink: tokio::sync::Mutex::new(None),
                waiting: Mutex::new(Waiting::default()),
                renewing: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    pub(super) async fn subscribe(&self, job_id: JobId) -> Result<Subscription, Error> {
        let inner = &self.inner;
        let (rx, turn, ready) = {
            let mut jobs = inner
                .jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let w = jobs.entry(job_id).or_insert_with(|| Watched {
                tx: broadcast::channel(LIVE_BUFFER).0,
                turn: Arc::default(),
                watchers: 0,
                ready: false,
            });
            w.watchers += 1;
            (w.tx.subscribe(), w.turn.clone(), w.ready)
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
        Ok(Subscription::new(rx, turn, Box::new(guard)))
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
