//! Start-up phases 3 and 4, gateway side: bind its listener and read its TLS files before any
//! job is touched, then build the gRPC services (validation rules, auth, limits, audit) and
//! spawn the server, which drains in-flight calls once shutdown is signalled.

use std::{sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tonic::transport::ServerTlsConfig;
use tracing::info;

use super::{Error, Shared, Tasks, check::GatewayPlan};
use crate::{
    api::{self, admin::AdminApi, batches::BatchApi, jobs::JobApi, validate},
    audit::Auditor,
    auth::{self, layer::AuthLayer},
    health,
    jobs::Jobs,
    queue::LocalSlots,
    ratelimit::Limiter,
    server,
};

/// A gateway whose listener is bound and whose TLS files were read.
pub(super) struct Bound {
    plan: GatewayPlan,
    listener: TcpListener,
    tls: Option<ServerTlsConfig>,
}

/// Binds the gateway's listener (`listener` when one was bound already, else `--listen`) and
/// reads its TLS files. What can stop the start fails here, before any job is touched: a
/// server that cannot listen or read its TLS files must not start attempts first (each would
/// count against max_attempts, and a supervisor restarting it in a loop would fail every
/// job).
///
/// Errors: [`Error::Server`] when the address cannot be bound, [`Error::Config`] for TLS
/// files that cannot be read.
pub(super) async fn bind(plan: GatewayPlan, listener: Option<TcpListener>) -> Result<Bound, Error> {
    let g = &plan.cfg;
    let listener = match listener {
        Some(l) => l,
        None => TcpListener::bind(g.server.listen)
            .await
            .map_err(|e| Error::Server(format!("cannot listen on {}: {e}", g.server.listen)))?,
    };
    let tls = match (&g.security.tls_cert, &g.security.tls_key) {
        (Some(cert), Some(key)) => Some(server::tls_config(cert, key).map_err(Error::Config)?),
        _ => None,
    };
    Ok(Bound {
        plan,
        listener,
        tls,
    })
}

/// Starts health reporting (NOT_SERVING until the probes pass), builds the services over
/// the shared backends (`local`: the slots of a worker in this process) and spawns the
/// server into `tasks`.
///
/// Errors: [`Error::Server`] when the listener's address cannot be read.
pub(super) async fn spawn(
    bound: Bound,
    shared: &Shared<'_>,
    local: Option<Arc<dyn LocalSlots>>,
    tasks: &mut Tasks,
) -> Result<(), Error> {
    let Bound {
        plan,
        listener,
        tls,
    } = bound;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Server(e.to_string()))?;
    let (reporter, health_service) = tonic_health::server::health_reporter();
    health::start_not_serving(&reporter).await;
    tokio::spawn(health::run(
        Some(reporter),
        shared.readiness.clone(),
        shared.core.store.clone(),
        shared.core.queue.clone(),
        shared.shutdown.clone(),
    ));
    let (guard, auth) = guard(&plan, shared, addr);
    let (jobs, batches, admin) = apis(&plan, shared, local, guard);
    let g = &plan.cfg;
    let scheme = if tls.is_some() { "TLS" } else { "plaintext" };
    let mode = g.security.auth_mode();
    info!(%addr, scheme, auth = ?mode, "gRPC (grpc-web, health, reflection) listening");
    info!(
        url = %dashboard_url(addr, tls.is_some()),
        "dashboard (open it in a browser and paste an API key)"
    );
    let services = server::Services {
        jobs,
        batches,
        admin,
        health: health_service,
        auth,
        tls,
        connections: crate::server::incoming::Limits::from(&g.server),
        cors: plan.cors,
        metrics: shared.metrics.clone(),
    };
    let stop = shared.shutdown.clone();
    tasks.spawn(async move {
        // Streams end on the same signal; unary calls get the grace period.
        let drained = async move { stop.cancelled().await };
        server::serve(listener, services, drained)
            .await
            .map_err(|e| Error::Server(e.to_string()))
    });
    Ok(())
}

/// What stands in front of every call: the audit log, the per-key limits and how prompts are
/// stored ([`api::Guard`]), and the authentication layer. Warns loudly when authentication
/// is off (`addr`: who can reach the gateway).
fn guard(
    plan: &GatewayPlan,
    shared: &Shared<'_>,
    addr: std::net::SocketAddr,
) -> (api::Guard, AuthLayer) {
    let security = &plan.cfg.security;
    let store = &shared.core.store;
    let auditor = Auditor::new(store.clone());
    let limiter = Limiter::new(
        shared.core.limits.clone(),
        store.clone(),
        &shared.common.redis.prefix,
        crate::ratelimit::Defaults {
            requests_per_minute: security.client_requests_per_minute,
            max_concurrent_jobs: security.client_max_concurrent_jobs,
            max_open_streams: security.client_max_open_streams,
        },
    )
    .with_metrics(shared.metrics.clone());
    let mode = security.auth_mode();
    if mode == auth::layer::Mode::Off {
        warn_auth_off(addr);
    }
    let auth = AuthLayer::new(
        auth::layer::Authenticator::new(
            mode,
            store.clone(),
            crate::audit::refusals::Refusals::start(
                auditor.clone(),
                Duration::from_millis(security.audit_refusal_window_ms),
                shared.shutdown.clone(),
            ),
            Some(limiter.clone()),
        )
        .with_key_cache(Duration::from_millis(security.key_cache_ms)),
    );
    let guard = api::Guard {
        auditor,
        limiter,
        prompt_storage: security.prompt_storage,
    };
    (guard, auth)
}

/// Says, in the log and on stderr, that every caller of `addr` is an operator.
fn warn_auth_off(addr: std::net::SocketAddr) {
    tracing::warn!(
        "AUTHENTICATION IS OFF (--insecure-no-auth / LLMJOBS_AUTH=off): anyone who can \
         reach {addr} is an operator and sees every job. For local development only; \
         create keys with `llm-jobs keys create` and drop the flag everywhere else"
    );
    eprintln!(
        "WARNING: authentication is OFF; every caller of {addr} is an operator. Local \
         development only."
    );
}

/// The three gRPC services over one [`Jobs`] service: jobs, batches and queue administration.
fn apis(
    plan: &GatewayPlan,
    shared: &Shared<'_>,
    local: Option<Arc<dyn LocalSlots>>,
    guard: api::Guard,
) -> (JobApi, BatchApi, AdminApi) {
    let (g, common, core) = (&plan.cfg, shared.common, shared.core);
    let rules = rules(plan, shared);
    let gateway = Jobs {
        store: core.store.clone(),
        queue: core.queue.clone(),
        events: core.events.clone(),
        local,
        metrics: shared.metrics.clone(),
    };
    let pace = crate::streaming::Pace {
        heartbeat: Duration::from_secs(g.server.stream_heartbeat_secs.max(1)),
        stall_patience: Duration::from_secs(g.server.stream_stall_secs.max(1)),
    };
    let shutdown = shared.shutdown;
    let batches = BatchApi::new(
        gateway.clone(),
        rules.clone(),
        g.jobs.max_batch_jobs.max(1),
        pace,
        guard.clone(),
        shutdown.clone(),
    );
    let jobs = JobApi::new(gateway, rules, pace, guard.clone(), shutdown.clone());
    let admin = AdminApi::new(
        crate::admin::Admin {
            store: core.store.clone(),
            queue: core.queue.clone(),
            events: core.events.clone(),
            job_types: common.queues.job_types.clone(),
            worker_window: common.lease.lease(),
            metrics: shared.metrics.clone(),
        },
        guard,
        shutdown.clone(),
    );
    (jobs, batches, admin)
}

/// What requests are checked against: the configured job types, models and limits.
fn rules(plan: &GatewayPlan, shared: &Shared<'_>) -> validate::Rules {
    let (jobs, common) = (&plan.cfg.jobs, shared.common);
    validate::Rules {
        upstream_configured: common.upstream.configured(),
        job_types: common.queues.job_types.clone(),
        default_model: plan.default_model.clone(),
        max_attempts: jobs.max_attempts,
        limits: crate::job::Limits {
            max_attempts_cap: jobs.max_attempts_cap.max(1),
            timeout_cap: Duration::from_secs(jobs.job_timeout_cap_secs.max(1)),
            ..jobs.limits.clone()
        },
    }
}

/// The dashboard's address for a browser: the listener's, with `localhost` for an unspecified
/// address (`0.0.0.0`, `[::]`), which a browser cannot open.
fn dashboard_url(addr: std::net::SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let page = server::dashboard::PAGE_PATH;
    if addr.ip().is_unspecified() {
        format!("{scheme}://localhost:{}{page}", addr.port())
    } else {
        format!("{scheme}://{addr}{page}")
    }
}
