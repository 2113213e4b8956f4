//! The audit log's records, as plain Rust: one [`Event`], how it ended ([`Outcome`]), and
//! which events a listing means ([`Filter`]). They belong to the store's audit interface
//! (the store keeps them, whatever writes them); [`crate::audit`] writes them and re-exports
//! them.

use chrono::{DateTime, Utc};

use crate::principal::Principal;

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
