//! `cancel_on_disconnect` for a `SubmitAndStream` call that goes away before its stream
//! starts (a deadline, a cut connection): the submit finishes anyway (`jobs::Jobs::submit`),
//! so its job is cancelled once it exists, as for a client that goes away later.
//!
//! Two things race: the submit's end (the job's id becomes known) and the call's end (its
//! future dropped before the stream was handed over). Whichever comes second cancels the job.

use std::sync::{Arc, Mutex};

use tonic::Status;

use super::jobs::JobApi;
use crate::{auth::Principal, job::JobId, jobs::Jobs, proto::v1};

impl JobApi {
    /// `SubmitAndStream`'s submit. With `cancel_on_disconnect`, the job is cancelled once it
    /// exists if the call goes away before the stream is handed over: the returned
    /// [`Disconnect`] watches the call until then.
    pub(super) async fn submit_followed(
        &self,
        who: &Principal,
        req: v1::SubmitJobRequest,
    ) -> Result<(crate::job::Job, Option<Disconnect>), Status> {
        if !req.cancel_on_disconnect {
            return Ok((self.submit(who, req, true).await?, None));
        }
        let new = self.prepare(who, req).await?;
        let (disconnect, submitted) = Disconnect::new(self.gateway.clone());
        let gateway = self.gateway.clone();
        // One task for the submit and its report, so that the report is made even when this
        // call is dropped meanwhile.
        let job = crate::jobs::detached(async move {
            let job = gateway.submit(new, true).await?;
            submitted.job(job.id);
            Ok(job)
        })
        .await?;
        Ok((job, Some(disconnect)))
    }
}

/// What the cancel is said to be for.
const REASON: &str = "the client disconnected";

#[derive(Default)]
struct State {
    /// The submitted job, once the submit ended.
    job: Option<JobId>,
    /// The call went away.
    gone: bool,
    /// The stream was handed over: from now on its own watcher cancels.
    handed_over: bool,
}

/// Held by the call while it submits; dropped with it.
pub(super) struct Disconnect {
    state: Arc<Mutex<State>>,
    gateway: Jobs,
}

/// Given to the submit, which reports the job through it.
pub(super) struct Submitted {
    state: Arc<Mutex<State>>,
    gateway: Jobs,
}

impl Disconnect {
    /// A guard for a call on `gateway`, and the handle its submit reports the job to.
    pub(super) fn new(gateway: Jobs) -> (Disconnect, Submitted) {
        let state = Arc::new(Mutex::new(State::default()));
        let submitted = Submitted {
            state: state.clone(),
            gateway: gateway.clone(),
        };
        (Disconnect { state, gateway }, submitted)
    }

    /// The stream is handed over to the client: its own watcher takes over.
    pub(super) fn handed_over(self) {
        lock(&self.state).handed_over = true;
    }
}

impl Submitted {
    /// The submit stored `id`: cancels it at once when the call has already gone.
    pub(super) fn job(self, id: JobId) {
        let gone = {
            let mut state = lock(&self.state);
            state.job = Some(id);
            state.gone
        };
        if gone {
            cancel(self.gateway, id);
        }
    }
}

impl Drop for Disconnect {
    fn drop(&mut self) {
        let job = {
            let mut state = lock(&self.state);
            if state.handed_over {
                return;
            }
            state.gone = true;
            state.job
        };
        if let Some(id) = job {
            cancel(self.gateway.clone(), id);
        }
    }
}

/// The state, even after a panic elsewhere (it holds no invariant a panic could break).
fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Cancels `id` in a task of its own (the caller may be a `Drop`).
fn cancel(gateway: Jobs, id: JobId) {
    tokio::spawn(async move {
        if let Err(e) = gateway.cancel(id, REASON).await {
            tracing::warn!(job_id = %id, error = %e, "cancel on disconnect failed");
        }
    });
}
