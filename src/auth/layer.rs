//! The tower layer in front of every gRPC service: it authenticates the caller from
//! `authorization: Bearer <key>` (gRPC and grpc-web alike, as it sits behind the grpc-web
//! translation), requires the operator role for `QueueAdminService` (or the admin role for its
//! tenant-scoped methods: failed jobs and audit events), applies the per-key request
//! rate, and puts the [`Principal`] into the request's extensions for the handlers. Health and
//! reflection pass without a key.
//!
//! Refusals: no, malformed, unknown or revoked key → UNAUTHENTICATED; a key without the
//! role a method needs → PERMISSION_DENIED; over the request rate → RESOURCE_EXHAUSTED with RetryInfo;
//! the key store unreachable → UNAVAILABLE. Each refusal of a key or role is audited through
//! [`Refusals`], which coalesces floods of them without waiting or spawning per request.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::HeaderMap;
use tonic::{Status, body::Body};
use tower::{Layer, Service};

use super::{Principal, Role, keys};
use crate::{
    audit::{self, refusals::Refusals},
    ratelimit::Limiter,
    store::Store,
};

/// Path prefixes served without a key.
const OPEN: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];
/// The service whose methods need more than the user role.
const QUEUE_ADMIN: &str = "/llmjobs.v1.QueueAdminService/";
/// Its methods a tenant's admin may call, on its own tenant only (the handlers scope them);
/// every other method of the service needs the operator role.
const TENANT_ADMIN: [&str; 4] = [
    "ListFailedJobs",
    "RetryJobs",
    "ForgetFailedJobs",
    "ListAuditEvents",
];

/// The role an RPC to `path` needs at least (`None`: any valid key).
fn needs(path: &str) -> Option<Role> {
    let method = path.strip_prefix(QUEUE_ADMIN)?;
    Some(if TENANT_ADMIN.contains(&method) {
        Role::Admin
    } else {
        Role::Operator
    })
}

/// Whether `role` has what `needed` asks.
fn has(role: Role, needed: Role) -> bool {
    match needed {
        Role::User => true,
        Role::Admin => matches!(role, Role::Admin | Role::Operator),
        Role::Operator => role == Role::Operator,
    }
}

/// Whether callers must present a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Every RPC but health and reflection needs a valid key (the default).
    On,
    /// Nobody is asked for a key; every caller is an operator of the default tenant. Local
    /// development only.
    Off,
}

/// Checks callers against the stored keys.
pub struct Authenticator {
    mode: Mode,
    store: Arc<dyn Store>,
    refusals: Refusals,
    limiter: Option<Limiter>,
    /// Keys read recently, by prefix (`None`: no such key), so that a burst of RPCs does not
    /// become a burst of Postgres reads.
    cache: quick_cache::sync::Cache<String, CachedKey>,
    cache_ttl: std::time::Duration,
}

/// When a key was read, and what was found.
type CachedKey = (std::time::Instant, Option<keys::ApiKey>);

/// Most prefixes remembered at once (unknown prefixes included); past it the least useful
/// entries go first (quick_cache's eviction), so random prefixes cannot grow it without
/// bound nor push out the keys in use.
const KEY_CACHE_ENTRIES: usize = 10_000;

impl Authenticator {
    /// An authenticator in `mode` reading keys from `store`, auditing refusals through
    /// `refusals`, and applying `limiter`'s request rate (when given) to authenticated callers.
    pub fn new(
        mode: Mode,
        store: Arc<dyn Store>,
        refusals: Refusals,
        limiter: Option<Limiter>,
    ) -> Authenticator {
        Authenticator {
            mode,
            store,
            refusals,
            limiter,
            cache: quick_cache::sync::Cache::new(KEY_CACHE_ENTRIES),
            cache_ttl: std::time::Duration::ZERO,
        }
    }

    /// Remembers keys read from the store for `ttl` (zero: read on every call). A revoked key
    /// keeps working for at most `ttl` on gateways that read it just before.
    pub fn with_key_cache(mut self, ttl: std::time::Duration) -> Authenticator {
        self.cache_ttl = ttl;
        self
    }

    /// The key with `prefix`, from the cache while fresh, else from the store. While the
    /// store is unreachable, the last answer read for `prefix` stands however old it is (a
    /// key verified before an outage keeps working through it; a revocation made meanwhile
    /// reaches this gateway once the store answers again).
    async fn key(&self, prefix: &str) -> Result<Option<keys::ApiKey>, crate::store::Error> {
        let cached = |fresh_only: bool| {
            self.cache
                .get(prefix)
                .filter(|(at, _)| !fresh_only || at.elapsed() < self.cache_ttl)
                .map(|(_, key)| key)
        };
        if !self.cache_ttl.is_zero()
            && let Some(key) = cached(true)
        {
            return Ok(key);
        }
        let key = match self.store.api_key(prefix).await {
            Ok(key) => key,
            Err(e) if e.is_transient() && !self.cache_ttl.is_zero() => match cached(false) {
                Some(key) => {
                    tracing::warn!(error = %e, "the key store is unavailable; using the key as last read");
                    return Ok(key);
                }
                None => return Err(e),
            },
            Err(e) => return Err(e),
        };
        if !self.cache_ttl.is_zero() {
            self.cache
                .insert(prefix.to_owned(), (std::time::Instant::now(), key.clone()));
        }
        Ok(key)
    }

    /// The caller of an RPC to `path` with `headers` from `peer`.
    ///
    /// Errors: UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAVAILABLE (see the
    /// module documentation).
    pub async fn check(
        &self,
        path: &str,
        headers: &HeaderMap,
        peer: String,
    ) -> Result<Principal, Status> {
        let principal = match self.mode {
            Mode::Off => Principal::auth_off(peer),
            Mode::On => self.authenticate(path, headers, peer).await?,
        };
        if let Some(needed) = needs(path)
            && !has(principal.role, needed)
        {
            let (why, message) = match needed {
                Role::Operator => (
                    "operator role required",
                    "this RPC needs a key with the operator role",
                ),
                _ => (
                    "admin role required",
                    "this RPC needs a key with the admin or operator role",
                ),
            };
            self.refusals.record(audit::Event::by(
                &principal,
                "authorize",
                path,
                audit::Outcome::Denied,
                why,
            ));
            return Err(Status::permission_denied(message));
        }
        if let Some(limiter) = &self.limiter {
            limiter.admit_request(&principal).await?;
        }
        Ok(principal)
    }

    async fn authenticate(
        &self,
        path: &str,
        headers: &HeaderMap,
        peer: String,
    ) -> Result<Principal, Status> {
        let refuse = |actor: &str, tenant: &str, why: &'static str| {
            let event = audit::Event {
                id: 0,
                time: chrono::Utc::now(),
                actor: actor.to_owned(),
                tenant: tenant.to_owned(),
                action: "authenticate".into(),
                target: path.to_owned(),
                peer: peer.clone(),
                outcome: audit::Outcome::Denied,
                detail: why.into(),
            };
            self.refusals.record(event);
            Status::unauthenticated(why)
        };
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(refuse(
                "anonymous",
                "unknown",
                "missing API key: send `authorization: Bearer llmj_…` (the CLI: set LLMJOBS_API_KEY or pass --api-key)",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let Some((prefix, secret)) = token.and_then(keys::parse) else {
            return Err(refuse("anonymous", "unknown", "malformed API key"));
        };
        let key = match self.key(prefix).await {
            Ok(key) => key,
            Err(e) => {
                tracing::error!(error = %e, "cannot read API keys");
                return Err(Status::unavailable(
                    "the key store is unavailable; retry later",
                ));
            }
        };
        let Some(key) = key.filter(|k| keys::verify(k, secret)) else {
            return Err(refuse(prefix, "unknown", "invalid API key"));
        };
        if key.revoked_at.is_some() {
            return Err(refuse(prefix, &key.tenant, "API key revoked"));
        }
        Ok(Principal {
            actor: key.prefix,
            key_id: Some(key.id),
            tenant: key.tenant,
            role: key.role,
            limits: key.limits,
            peer,
        })
    }
}

/// Installs [`Authenticator`] in front of a service.
#[derive(Clone)]
pub struct AuthLayer(Arc<Authenticator>);

impl AuthLayer {
    /// A layer checking every call with `auth`.
    pub fn new(auth: Authenticator) -> AuthLayer {
        AuthLayer(Arc::new(auth))
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            auth: self.0.clone(),
        }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

/// The peer address of the connection a request came on.
fn peer<B>(req: &http::Request<B>) -> String {
    use tonic::transport::server::TcpConnectInfo;
    let tcp = req
        .extensions()
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr);
    let tls = || {
        req.extensions()
            .get::<tonic::transport::server::TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|i| i.get_ref().remote_addr())
    };
    tcp.or_else(tls)
        .map_or_else(|| "unknown".to_owned(), |a| a.to_string())
}

impl<S, B> Service<http::Request<B>> for Auth<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The clone is not ready; the ready one serves this call (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if OPEN.iter().any(|p| req.uri().path().starts_with(p)) {
            return Box::pin(inner.call(req));
        }
        let auth = self.auth.clone();
        Box::pin(async move {
            let peer = peer(&req);
            match auth.check(req.uri().path(), req.headers(), peer).await {
                Ok(principal) => {
                    req.extensions_mut().insert(principal);
                    inner.call(req).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}
