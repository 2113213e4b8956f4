//! The audit log: who did what to what, when, from where, and how it ended. Admin operations
//! (reads included), cancels, key operations and authentication and authorization refusals
//! are recorded in an append-only table (a trigger refuses UPDATE and DELETE);
//! `ListAuditEvents` reads it back. Refusals go through [`refusals`], which coalesces floods.
//!
//! Writing is best effort from the caller's side: a failed write is logged (and the operation
//! goes on), so an audit outage does not stop cancels.

pub mod refusals;

pub use crate::store::audit::{Event, Filter, Outcome};

use std::sync::Arc;

use crate::{principal::Principal, store::Store};

/// The outcome of an RPC, for its audit record (here rather than in [`record`], which knows
/// no gRPC).
impl Outcome {
    /// The outcome of an RPC that ended with `result`.
    pub fn of<T>(result: &Result<T, tonic::Status>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ok,
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::PermissionDenied
                        | tonic::Code::Unauthenticated
                        | tonic::Code::NotFound
                        | tonic::Code::ResourceExhausted
                ) =>
            {
                Outcome::Denied
            }
            Err(_) => Outcome::Error,
        }
    }
}

/// Writes audit events to the store.
#[derive(Clone)]
pub struct Auditor {
    store: Arc<dyn Store>,
}

impl Auditor {
    /// An auditor writing to `store`.
    pub fn new(store: Arc<dyn Store>) -> Auditor {
        Auditor { store }
    }

    /// Records that `who` did `action` on `target` with `outcome`. Never fails: a store error
    /// is logged.
    pub async fn record(
        &self,
        who: &Principal,
        action: &str,
        target: &str,
        outcome: Outcome,
        detail: &str,
    ) {
        self.write(Event::by(who, action, target, outcome, detail))
            .await;
    }

    /// Records `event` as it is (its id is assigned by the store).
    pub async fn write(&self, mut event: Event) {
        event.detail = crate::redact::redact(&event.detail).into_owned();
        event.target = crate::redact::redact(&event.target).into_owned();
        if let Err(e) = self.store.append_audit(&event).await {
            tracing::error!(error = %e, action = %event.action, "cannot write the audit log");
        }
    }
}
