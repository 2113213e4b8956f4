//! Who a caller is once authenticated: its tenant, role and own client limits ([`Principal`]),
//! the access rules that follow from them, and the stored API key that proves it
//! ([`ApiKey`]). Plain types, shared by the store, the core (audit, rate limits) and the edge
//! that authenticates (`auth`).

use chrono::{DateTime, Utc};

/// Tenant of jobs submitted with authentication off, and of jobs stored before tenants existed.
pub const DEFAULT_TENANT: &str = "default";

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// JobService and BatchService on its own tenant's jobs and batches.
    User,
    /// A tenant's administrator: what a user may, plus its tenant's failed jobs (list, retry,
    /// forget) and audit events. Nothing queue-wide.
    Admin,
    /// Everything: every tenant's jobs and batches, all of QueueAdminService, the whole audit
    /// log.
    Operator,
}

impl Role {
    /// The stored name: `user`, `admin` or `operator`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Operator => "operator",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

/// The authenticated caller of one RPC, put into the request's extensions by the
/// authenticating layer (`auth::layer`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Who, for the audit log: the key's prefix, or `auth-off`.
    pub actor: String,
    /// The key's id (`None` with authentication off).
    pub key_id: Option<uuid::Uuid>,
    /// The key's tenant.
    pub tenant: String,
    /// The key's role.
    pub role: Role,
    /// The key's own client limits (`None`: the server's defaults).
    pub limits: KeyLimits,
    /// The peer address of the connection (`unknown` when the transport does not say).
    pub peer: String,
}

impl Principal {
    /// The caller when authentication is switched off: an operator of [`DEFAULT_TENANT`].
    pub fn auth_off(peer: String) -> Principal {
        Principal {
            actor: "auth-off".into(),
            key_id: None,
            tenant: DEFAULT_TENANT.into(),
            role: Role::Operator,
            limits: KeyLimits::default(),
            peer,
        }
    }

    /// True for operators, who see every tenant.
    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }

    /// Whether this caller may see and touch what belongs to `tenant`.
    pub fn can_access(&self, tenant: &str) -> bool {
        self.is_operator() || self.tenant == tenant
    }

    /// The tenant listings must be limited to: `None` for operators (every tenant).
    pub fn scope(&self) -> Option<String> {
        (!self.is_operator()).then(|| self.tenant.clone())
    }
}

/// Per-key client limits; `None` means the server's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyLimits {
    /// Requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Unfinished (queued or running) jobs at once.
    pub max_concurrent_jobs: Option<u32>,
}

/// A stored API key (`auth::keys` makes and checks them; the store keeps them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    /// Row id.
    pub id: uuid::Uuid,
    /// The non-secret part that finds the key (12 hex digits).
    pub prefix: String,
    /// SHA-256 of the secret part, 64 lowercase hex digits.
    pub secret_sha256: String,
    /// Tenant whose jobs the key sees.
    pub tenant: String,
    /// What the key may do.
    pub role: Role,
    /// A label for humans.
    pub name: String,
    /// Overrides of the client limits.
    pub limits: KeyLimits,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_admins_see_their_tenant_and_operators_see_all() {
        let mut p = Principal::auth_off("peer".into());
        p.tenant = "a".into();
        for role in [Role::User, Role::Admin] {
            p.role = role;
            assert!(p.can_access("a"));
            assert!(!p.can_access("b"));
            assert_eq!(p.scope().as_deref(), Some("a"));
        }
        p.role = Role::Operator;
        assert!(p.can_access("b"));
        assert_eq!(p.scope(), None);
    }

    #[test]
    fn roles_read_back_as_stored() {
        for role in [Role::User, Role::Admin, Role::Operator] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
