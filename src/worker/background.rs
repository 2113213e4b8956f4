//! A worker's background tasks: following the queue's signals (cancels, vanished jobs) and
//! the heartbeat that renews leases and samples the process's resources.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{StopReason, Worker, resources};
use crate::{job::JobId, queue::Signal};

impl Worker {
    pub(super) async fn follow_signals(self: Arc<Self>, shutdown: CancellationToken) {
        let mut rx = loop {
            match self.deps.queue.signals().await {
                Ok(rx) => break rx,
                Err(e) => {
                    warn!(error = %e, "worker signals unavailable; retrying in 1 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        };
        while let Some(signal) = rx.recv().await {
            match signal {
                Signal::Wake => self.wake.notify_one(),
                Signal::Cancel(job_id) => {
                    let running = self.running().get(&job_id).cloned();
                    if let Some(r) = running {
                        r.stop(StopReason::Cancelled);
                    }
                }
            }
        }
    }

    /// Extends the leases of running jobs every third of a lease (also while draining) and
    /// refreshes this worker's registry entry; stops when shut down with nothing running.
    pub(super) async fn heartbeat(self: Arc<Self>, shutdown: CancellationToken) {
        let lease = self.lease;
        let mut tick = tokio::time::interval(lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sampler = resources::Sampler::default();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled(), if !shutdown.is_cancelled() => {}
            }
            let claims: Vec<(JobId, String)> = self
                .running()
                .iter()
                .map(|(id, r)| (*id, r.owner.clone()))
                .collect();
            if shutdown.is_cancelled() {
                if claims.is_empty() {
                    return;
                }
            } else {
                let (rss, cpu) = sampler.sample();
                *self
                    .resources
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(crate::progress::WorkerResources {
                        worker_id: self.id.clone(),
                        resident_memory_mib: rss,
                        cpu_percent: cpu,
                        sample_time: Some(chrono::Utc::now()),
                    });
                let info = self.info(&claims, rss, cpu);
                if let Err(e) = self.deps.queue.register_worker(&info).await {
                    warn!(error = %e, "cannot refresh the worker registry");
                }
            }
            if claims.is_empty() {
                continue;
            }
            match self.deps.queue.heartbeat(&claims, lease).await {
                Ok(beat) => {
                    self.restore(&beat.vanished).await;
                    for id in beat.lost {
                        self.stop_lost(id);
                    }
                }
                Err(e) => warn!(error = %e, "heartbeat failed"),
            }
        }
    }

    /// Takes back the claims of attempts still running whose jobs the queue no longer knows
    /// at all: Redis lost its data (a restart without persistence, FLUSHALL) while they ran.
    /// The attempt goes on instead of being stopped and run again (which would cost a second
    /// upstream call and, for a job with one attempt, fail it); the reconciler leaves such a
    /// job alone for a lease, long enough for this to happen first. A job settled meanwhile is
    /// skipped; one the queue knows again by now (re-enqueued, claimed elsewhere) is stopped.
    async fn restore(&self, vanished: &[JobId]) {
        let held: Vec<crate::queue::Held> = {
            let running = self.running();
            vanished
                .iter()
                .filter_map(|id| {
                    let r = running.get(id)?;
                    (!r.settled.load(std::sync::atomic::Ordering::SeqCst)).then(|| {
                        crate::queue::Held {
                            job_id: *id,
                            owner: r.owner.clone(),
                            queue: r.queue.clone(),
                        }
                    })
                })
                .collect()
        };
        if held.is_empty() {
            return;
        }
        match self.deps.queue.restore(&held, self.lease).await {
            Ok(restored) => {
                for h in &held {
                    if restored.contains(&h.job_id) {
                        warn!(job_id = %h.job_id,
                            "the queue lost this running job's claim (Redis lost its data); \
                             claimed it again, the attempt goes on");
                    } else {
                        self.stop_lost(h.job_id);
                    }
                }
            }
            // The next heartbeat tries again; the reconciler waits a lease before it acts.
            Err(e) => warn!(error = %e, "cannot restore the claims Redis lost"),
        }
    }

    /// Stops the attempt of `id`, whose lease another worker or the queue holds now.
    fn stop_lost(&self, id: JobId) {
        let running = self.running().get(&id).cloned();
        if let Some(r) = running {
            warn!(job_id = %id, "lease lost; stopping the attempt");
            r.stop(StopReason::LeaseLost);
        }
    }
}
