//! An attempt's start in the store, and when the attempt waits for it.
//!
//! A job claimed from its queue is started in the store before anything else: its row comes
//! back from that write. A job the gateway hands to a local slot fresh from its insert
//! (QUEUED, no attempt yet) starts at once from the row the insert returned, as attempt 1,
//! while its start is written beside it ([`PendingStart`]): the write stays off the path to
//! the first token, and the attempt waits for it only before its own first store write, its
//! end. Nobody else can start that job meanwhile: its claim, made with its queue entry, is
//! this slot's. An attempt whose process dies before its start is written leaves no attempt
//! in the store: once its lease expires the job runs again as attempt 1, whose `started`
//! event tells watchers to drop the text they had (the log takes a start of the same
//! attempt number again).

use std::sync::Arc;

use chrono::Utc;
use tracing::Instrument;

use super::store_transient;
use crate::{
    job::{Job, JobStatus},
    worker::{Running, Worker},
};

/// The store write of an attempt's start, running beside the attempt: the job as the store
/// returned it; `Err(None)` when it gave up (lease lost, or shutting down); `Err(Some(_))`
/// for an error that retrying does not cure.
pub(in crate::worker) struct PendingStart(
    tokio::task::JoinHandle<Result<Option<Job>, Option<crate::store::Error>>>,
);

/// What the store made of a [`PendingStart`].
pub(in crate::worker) enum Confirmed {
    /// The store started the attempt the worker ran, after the job had waited this long
    /// in its queue (ms, from the start time the store recorded).
    Yes {
        /// Enqueued to the store's start, in ms.
        queue_wait_ms: u64,
    },
    /// The write gave up (lease lost, or shutting down): whoever runs the job next starts it.
    GaveUp,
    /// The store did not start this attempt (the job ended or is gone, another attempt
    /// started, or the write failed for good): why, for the log.
    Refused(String),
}

/// Whether `stored` (a job handed over with its claim) is fresh from its insert: then its
/// attempt can start before the store has recorded that.
pub(in crate::worker) fn is_fresh(stored: &Job) -> bool {
    stored.status == JobStatus::Queued && stored.attempts == 0
}

/// `stored` (fresh, see [`is_fresh`]) as its start makes it: RUNNING its first attempt,
/// started now.
pub(in crate::worker) fn as_started(mut stored: Job) -> Job {
    stored.status = JobStatus::Running;
    stored.attempts = 1;
    stored.started_at = Some(Utc::now());
    stored
}

/// How long `job` waited in its queue before its current attempt started, in ms (0 before
/// it started).
pub(in crate::worker) fn queue_wait_ms(job: &Job) -> u64 {
    job.started_at
        .map(|s| u64::try_from((s - job.enqueued_at).num_milliseconds()).unwrap_or(0))
        .unwrap_or(0)
}

impl Worker {
    /// Writes the start of `job`'s attempt (made by [`as_started`]) in the background, in
    /// the current span, retrying through a store outage while the lease holds; `running`
    /// keeps the write until the attempt's end (or [`Worker::abandon`]) waits for it.
    pub(in crate::worker) fn start_beside(self: &Arc<Self>, job: &Job, running: &Arc<Running>) {
        let (me, attempt, id) = (self.clone(), running.clone(), job.id);
        let model = job.params.model.clone();
        let write = async move {
            me.persist(
                &attempt,
                "recording the attempt's start",
                store_transient,
                || {
                    let fault = fault(&model);
                    let write = me.deps.store.start_attempt(id);
                    async move {
                        match fault {
                            Some(e) => Err(e),
                            None => write.await,
                        }
                    }
                },
            )
            .await
        };
        running.keep_start(PendingStart(tokio::spawn(write.in_current_span())));
    }
}

impl PendingStart {
    /// Waits for the write to end, whatever its answer.
    pub(in crate::worker) async fn written(self) {
        let _ = self.0.await;
    }

    /// Waits for the store's answer and checks it started the attempt `job` runs.
    pub(in crate::worker) async fn confirm(self, job: &Job) -> Confirmed {
        match self.0.await {
            Ok(Ok(Some(stored))) if stored.attempts == job.attempts => Confirmed::Yes {
                queue_wait_ms: queue_wait_ms(&stored),
            },
            Ok(Ok(Some(stored))) => Confirmed::Refused(format!(
                "the store started attempt {} instead of {}",
                stored.attempts, job.attempts
            )),
            Ok(Ok(None)) => Confirmed::Refused("the job ended or is gone from the store".into()),
            Ok(Err(None)) => Confirmed::GaveUp,
            Ok(Err(Some(e))) => Confirmed::Refused(format!("the store refused the start: {e}")),
            Err(e) => Confirmed::Refused(format!("the start's task ended: {e}")),
        }
    }
}

/// Tests make the start's write fail for jobs of the model a point is armed with
/// (`return(<model>)`), for as long as it stays armed: `worker-start-unavailable` as an
/// unreachable store would, `worker-start-refused` as a store that refuses it for good.
#[cfg(feature = "failpoints")]
fn fault(model: &str) -> Option<crate::store::Error> {
    use crate::store::Error;
    let armed = |name: &str| {
        (|| {
            fail::fail_point!(name, |armed: Option<String>| armed.as_deref()
                == Some(model));
            false
        })()
    };
    if armed("worker-start-unavailable") {
        Some(Error::Unavailable(
            "fault point worker-start-unavailable".into(),
        ))
    } else if armed("worker-start-refused") {
        Some(Error::Refused("fault point worker-start-refused".into()))
    } else {
        None
    }
}

#[cfg(not(feature = "failpoints"))]
fn fault(_model: &str) -> Option<crate::store::Error> {
    None
}
