//! [`Worker::run`], the worker's main loop: claim jobs into free slots until shutdown, then
//! drain (running attempts get a grace period, then go back to their queues) and settle
//! what is left.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{StopReason, Worker};
use crate::queue::Settle;

/// How long ended claims wait for a claim call to end them before they are ended on their
/// own (one queue call for all): a slot usually frees well within it.
const SETTLE_PATIENCE: Duration = Duration::from_millis(100);

/// How one claim call went.
enum Round {
    /// Jobs were claimed and started.
    Started,
    /// Nothing to claim: wait for a wake-up.
    Empty,
    /// The call failed: wait before the next.
    Failed,
}

impl Worker {
    /// Runs until `shutdown` is cancelled: stops claiming, gives running jobs `grace` to finish,
    /// then stops them and hands them back to their queues.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, grace: Duration) {
        info!(
            worker_id = %self.id,
            concurrency = self.cfg.concurrency,
            queue_cap = self.cfg.queue_cap,
            "worker started"
        );
        let signals = tokio::spawn(self.clone().follow_signals(shutdown.clone()));
        let heartbeat = tokio::spawn(self.clone().heartbeat(shutdown.clone()));
        self.claim_until(&shutdown).await;
        self.drain(grace).await;
        self.settle_left().await;
        self.sequences.flush().await;
        signals.abort();
        heartbeat.abort();
        if let Err(e) = self.deps.queue.deregister_worker(&self.id).await {
            warn!(error = %e, "cannot remove this worker from the registry");
        }
        info!(worker_id = %self.id, "worker stopped");
    }

    /// Claims jobs into free slots, each round as many as are free, until `shutdown` is
    /// cancelled.
    async fn claim_until(self: &Arc<Self>, shutdown: &CancellationToken) {
        let mut turn = 0usize;
        loop {
            let first = tokio::select! {
                p = self.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                // Ended claims ride on the next claim call, which waits for a free slot: when
                // the gateway's in-process dispatch took the slot their attempt freed, they
                // would stay leased (and count as running) until some slot frees again.
                () = tokio::time::sleep(SETTLE_PATIENCE), if self.has_ended() => {
                    self.settle_waiting().await;
                    continue;
                }
                _ = shutdown.cancelled() => return,
            };
            match self.claim_round(self.free_slots(first), &mut turn).await {
                Round::Started => {}
                Round::Empty => tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => return,
                },
                Round::Failed => tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => return,
                },
            }
        }
    }

    /// `first` and every other slot free now: one claim (one round trip for many jobs) fills
    /// them all, unless queues are capped, where one claim at a time keeps each cap exact.
    fn free_slots(&self, first: OwnedSemaphorePermit) -> Vec<OwnedSemaphorePermit> {
        let mut permits = vec![first];
        let most = if self.cfg.queue_cap.is_some() {
            1
        } else {
            crate::queue::MAX_CLAIM
        };
        while permits.len() < most {
            match self.slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        permits
    }

    /// One claim call for up to one job per permit, in the balancer's order from job type
    /// `turn` (moved past the type served last); starts each job claimed in its slot and
    /// frees the slots left over. Also ends the claims of attempts that ended since the last
    /// call.
    async fn claim_round(
        self: &Arc<Self>,
        mut permits: Vec<OwnedSemaphorePermit>,
        turn: &mut usize,
    ) -> Round {
        let owner = format!("{}/{}", self.id, uuid::Uuid::new_v4().simple());
        let mut per_queue = HashMap::new();
        for r in self.running().values() {
            *per_queue.entry(r.queue.clone()).or_insert(0) += 1;
        }
        let order = self
            .balancer
            .order(&*self.deps.queue, *turn, &per_queue)
            .await;
        let ended = self.take_ended();
        let claimed = self
            .deps
            .queue
            .claim(&order, &owner, self.lease, permits.len(), &ended)
            .await;
        let claims = match claimed {
            Ok(claims) if !claims.is_empty() => claims,
            Ok(_) => return Round::Empty,
            Err(e) => {
                self.keep_ended(ended);
                drop(permits);
                warn!(error = %e, "claim failed; retrying in 1 s");
                return Round::Failed;
            }
        };
        // The next turn starts after the job type just served, so an empty type does not
        // hand its turn to its neighbour.
        self.balancer.claimed();
        if let Some(served) = claims.last().and_then(|c| self.balancer.type_of(&c.queue)) {
            *turn = served + 1;
        }
        // Slots the claim did not fill go back before the jobs start.
        permits.truncate(claims.len());
        for (claim, permit) in claims.into_iter().zip(permits) {
            self.spawn_attempt(&self.tasks, claim, &owner, permit);
        }
        Round::Started
    }

    /// Stops claiming and in-process dispatch, gives running attempts `grace` to finish,
    /// then stops the rest and waits for them to hand their jobs back.
    async fn drain(&self, grace: Duration) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.tasks.close();
        let busy = self.running().len();
        if busy > 0 {
            info!(jobs = busy, grace_secs = grace.as_secs(), "worker draining");
        }
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            let running: Vec<_> = self.running().values().cloned().collect();
            warn!(
                jobs = running.len(),
                "drain timeout: handing running jobs back to their queues"
            );
            self.hard_stop.cancel();
            for r in running {
                r.stop(StopReason::Shutdown);
            }
            self.tasks.wait().await;
        }
    }

    /// Ends the claims waiting for a claim call, in one queue call: a claim from no queue,
    /// which only ends them (see [`crate::queue::Queue::claim`]). Those a failed call did not
    /// end wait again (a claim call or the next try ends them), a second apart.
    async fn settle_waiting(&self) {
        let ended = self.take_ended();
        if let Err(e) = self
            .deps
            .queue
            .claim(&[], &self.id, self.lease, 0, &ended)
            .await
        {
            warn!(error = %e, "cannot end the claims of ended attempts; retrying in 1 s");
            self.keep_ended(ended);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Ends the claims that no claim call follows to end, one queue call each.
    async fn settle_left(&self) {
        loop {
            let ended = self.take_ended();
            if ended.is_empty() {
                break;
            }
            for s in ended {
                if let Err(e) = self.deps.queue.settle(s.job_id, &s.owner, s.retry_at).await {
                    warn!(error = %e, job_id = %s.job_id, "cannot settle the claim; its lease will expire");
                }
            }
        }
    }

    /// Whether ended claims wait for the next claim call.
    fn has_ended(&self) -> bool {
        !self
            .ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty()
    }

    /// The ended claims waiting for the next claim call (at most [`crate::queue::MAX_SETTLE`];
    /// the rest wait for the one after).
    fn take_ended(&self) -> Vec<Settle> {
        let mut ended = self
            .ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = ended.len().min(crate::queue::MAX_SETTLE);
        ended.drain(..n).collect()
    }

    /// Puts back ended claims a failed claim call did not end, ahead of newer ones.
    fn keep_ended(&self, mut kept: Vec<Settle>) {
        let mut ended = self
            .ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.append(&mut ended);
        *ended = kept;
    }
}
