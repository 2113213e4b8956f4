//! A worker's slots as others hold them: the guard that frees an attempt's slot however its
//! task ends, and the slots the gateway of the same process reserves for jobs it submits.

use std::{sync::Arc, time::Duration};

use super::{Running, Worker};
use crate::{
    job::JobId,
    queue::{LocalSlots, ReservedSlot},
};

/// Frees an attempt's slot when its task ends, however it ends. An attempt that did not
/// finish (its task panicked) would otherwise stay in `running`, where the heartbeat kept its
/// lease alive and its job RUNNING forever: it is ended as a failed attempt instead (see
/// [`Worker::abandon`]), in a task of its own, before the slot is freed.
pub(super) struct AttemptGuard {
    pub(super) worker: Arc<Worker>,
    pub(super) job_id: JobId,
    pub(super) running: Arc<Running>,
    pub(super) permit: Option<tokio::sync::OwnedSemaphorePermit>,
    pub(super) finished: bool,
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        let worker = self.worker.clone();
        let job_id = self.job_id;
        let permit = self.permit.take();
        let release = move |worker: &Worker| {
            worker.running().remove(&job_id);
            drop(permit);
            // A capped queue may be claimable again.
            worker.wake.notify_one();
        };
        if self.finished || tokio::runtime::Handle::try_current().is_err() {
            release(&worker);
            return;
        }
        tracing::error!(
            job_id = %job_id,
            panicked = std::thread::panicking(),
            "the attempt's task ended before the attempt did; ending it as a failed attempt"
        );
        let running = self.running.clone();
        self.worker.tasks.spawn(async move {
            worker.abandon(job_id, &running).await;
            release(&worker);
        });
    }
}

/// The worker as the gateway sees it: [`LocalSlots`].
pub(super) struct Local(pub(super) Arc<Worker>);

impl LocalSlots for Local {
    fn reserve(&self, queue: &str) -> Option<Box<dyn ReservedSlot>> {
        self.0.reserve(queue)
    }
}

/// A slot reserved for a job the gateway is about to claim for it.
pub(super) struct Reserved {
    pub(super) worker: Arc<Worker>,
    pub(super) owner: String,
    pub(super) permit: tokio::sync::OwnedSemaphorePermit,
}

impl ReservedSlot for Reserved {
    fn owner(&self) -> &str {
        &self.owner
    }

    fn lease(&self) -> Duration {
        self.worker.lease
    }

    fn start(self: Box<Self>, claim: crate::queue::Claim) {
        let Reserved {
            worker,
            owner,
            permit,
        } = *self;
        let tasks = worker.tasks.clone();
        worker.spawn_attempt(&tasks, claim, &owner, permit);
    }
}
