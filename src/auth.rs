//! Who is calling: API keys ([`keys`]), the principal a key stands for (tenant and role), the
//! tower layer that authenticates every RPC except health and reflection ([`layer`]), and the
//! client-side interceptor that sends a key ([`client`]).
//!
//! Rules: a job or batch belongs to the tenant of the key that submitted it; `user` and
//! `admin` keys see only their tenant's jobs and batches (others are NOT_FOUND, so existence
//! does not leak); an `admin` key also manages its tenant's failed jobs and reads its
//! tenant's audit events; an `operator` key sees every tenant's and may call all of
//! `QueueAdminService` (pause, resume, purge, workers, health, every tenant's failed jobs and
//! audit events). With authentication switched off (local development only) every caller is
//! an operator of [`DEFAULT_TENANT`].

pub mod client;
pub mod keys;
pub mod layer;

use tonic::Status;

pub use crate::principal::{DEFAULT_TENANT, Principal, Role};

/// The principal of a request that passed [`layer`].
///
/// Errors: UNAUTHENTICATED when the request carries none (the layer is missing: fail closed).
pub fn principal<T>(request: &tonic::Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
}
