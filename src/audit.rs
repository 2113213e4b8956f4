//! The audit log: who did what to what, when, from where, and how it ended. Admin operations
//! (reads included), cancels, key operations and authentication and authorization refusals
//! are recorded in an append-only table (a trigger refuses UPDATE and DELETE);
//! `ListAuditEvents` reads it back. Refusals go through [`refusals`], which coalesces floods.
//!
//! Writing is best effort from the caller's side: a failed write is logged (and the operation
//! goes on), so an audit outage does not stop cancels.

pub mod refusals;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::{principal::Principal, store::Store};

/// One audit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Position in the log (assigned by the store; 0 before).
    pub id: i64,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// Key prefix of the caller; `anonymous` without a valid key; `local` for the `keys`
    /// command on the database; `auth-off` with authentication off.
    pub actor: String,
    /// Tenant of the caller (`unknown` without a valid key).
    pub tenant: String,
    /// What, e.g. `CancelJob`, `PauseQueue`, `keys.create`, `authenticate`.
    pub action: String,
    /// On what: a job id, queue name, key prefix, RPC path.
    pub target: String,
    /// Peer address of the connection.
    pub peer: String,
    /// `ok`, `denied` or `error`.
    pub outcome: Outcome,
    /// A short reason (never secrets: it passes through redaction).
    pub detail: String,
}

impl Event {
    /// What `who` did now: `action` on `target`, ending with `outcome` for `detail`.
    pub fn by(
        who: &Principal,
        action: &str,
        target: &str,
        outcome: Outcome,
        detail: &str,
    ) -> Event {
        Event {
            id: 0,
            time: Utc::now(),
            actor: who.actor.clone(),
            tenant: who.tenant.clone(),
            action: action.to_owned(),
            target: target.to_owned(),
            peer: who.peer.clone(),
            outcome,
            detail: detail.to_owned(),
        }
    }
}

/// How an audited operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It was done.
    Ok,
    /// The caller was refused (authentication, role, tenant, rate limit).
    Denied,
    /// It was allowed but failed.
    Error,
}

impl Outcome {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "ok" => Some(Outcome::Ok),
            "denied" => Some(Outcome::Denied),
            "error" => Some(Outcome::Error),
            _ => None,
        }
    }

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

/// Which audit events a listing means; `None` fields match any.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Tenant.
    pub tenant: Option<String>,
    /// Actor (key prefix).
    pub actor: Option<String>,
    /// Action.
    pub action: Option<String>,
    /// Outcome.
    pub outcome: Option<Outcome>,
    /// At or after.
    pub since: Option<DateTime<Utc>>,
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
