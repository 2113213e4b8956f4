//! Composition root: configuration to connected backends, the gateway and the worker.
//! No business logic here. [`Config`] has the settings both sides read ([`Common`]) and each
//! side's own ([`GatewayConfig`], [`WorkerConfig`]), so each command offers only its flags.

mod backends;

use std::{sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use backends::{Backends, backends};

use crate::{
    api::{jobs::JobApi, validate},
    audit::Auditor,
    auth, config,
    gateway::Gateway,
    health,
    metrics::Metrics,
    provider::{Providers, openai::OpenAi, sim::Sim},
    ratelimit::Limiter,
    server,
    store::{self, Store},
    worker::{self, Worker},
};

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration that cannot work.
    #[error("configuration: {0}")]
    Config(String),
    /// The store failed at start-up (unreachable, migrations).
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Start-up could not prepare a dependency.
    #[error("{0}")]
    Startup(String),
    /// The listener could not be bound or served.
    #[error("server: {0}")]
    Server(String),
}

/// What every server process reads, whichever side it runs.
#[derive(clap::Args, Clone, Debug)]
pub struct Common {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub redis: config::Redis,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub database: config::Database,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub queues: config::Queues,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub lease: config::Lease,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub upstream: config::Upstream,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub redaction: config::Redaction,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub metrics: config::Metrics,
}

/// What only the gateway reads: its listener, what clients may submit, who may call.
#[derive(clap::Args, Clone, Debug)]
pub struct GatewayConfig {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub server: config::Server,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub jobs: config::Jobs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub security: config::Security,
}

/// What only the worker reads: its slots and timeouts, and how it calls the upstream.
#[derive(clap::Args, Clone, Debug)]
pub struct WorkerConfig {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub worker: config::Worker,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub provider: config::Provider,
}

/// What [`run`] runs: the common settings, and those of each side this process runs (`None`:
/// the side does not run here). `serve` has both sides; `gateway` and `worker` one each.
#[derive(Clone, Debug)]
pub struct Config {
    #[allow(missing_docs)]
    pub common: Common,
    /// The gateway (gRPC API), when this process serves it.
    pub gateway: Option<GatewayConfig>,
    /// A worker, when this process runs jobs.
    pub worker: Option<WorkerConfig>,
}

/// Creates the database if needed and applies pending migrations; returns versions applied.
///
/// Errors: [`Error::Store`].
pub async fn migrate(cfg: &config::Database) -> Result<Vec<String>, Error> {
    Ok(store::migrate(cfg).await?)
}

/// Listeners bound before [`run`] (tests bind port 0 and pass them in); each one left `None`
/// is bound from the configuration.
#[derive(Debug, Default)]
pub struct Listeners {
    /// The gateway's gRPC listener (the gateway's `--listen`).
    pub grpc: Option<TcpListener>,
    /// The admin HTTP listener: `/metrics`, `/healthz`, `/readyz` (`--metrics-listen`).
    pub admin: Option<TcpListener>,
}

/// Runs the configured sides until `shutdown` is cancelled, then drains within the grace
/// period.
///
/// Errors: start-up failures ([`Error`]); a dependency that goes down later is retried.
pub async fn run(
    cfg: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let Config {
        common,
        gateway: gateway_cfg,
        worker: worker_cfg,
    } = cfg;
    if gateway_cfg.is_none() && worker_cfg.is_none() {
        return Err(Error::Config(
            "neither a gateway nor a worker to run".into(),
        ));
    }
    if common.queues.job_types.is_empty() {
        return Err(Error::Config(
            "LLMJOBS_JOB_TYPES needs at least one job type".into(),
        ));
    }
    // Job types name queues, Redis keys and metrics labels.
    if let Some(bad) = common.queues.job_types.iter().find(|t| {
        t.is_empty()
            || t.len() > 64
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }) {
        return Err(Error::Config(format!(
            "LLMJOBS_JOB_TYPES: job type {bad:?} must be 1 to 64 characters of letters, digits, \
             `_` and `-`"
        )));
    }
    let default_model = gateway_cfg
        .as_ref()
        .map(|g| g.jobs.default_model(&common.upstream));
    if let (Some(g), Some(model)) = (&gateway_cfg, &default_model)
        && !g.jobs.limits.allows_model(model)
    {
        return Err(Error::Config(format!(
            "the default model {model:?} is not in LLMJOBS_ALLOWED_MODELS; jobs naming no \
             model would all be refused"
        )));
    }
    let Backends {
        queue,
        events,
        limits,
    } = backends(&common, gateway_cfg.is_some() && worker_cfg.is_some()).await?;
    let started = chrono::Utc::now();
    let store_name = store::describe(&common.database);
    let location = common.database.location().map_err(Error::Config)?;
    let hint = match &location {
        config::StoreLocation::Postgres(_) => {
            "; is Postgres running? (LLMJOBS_NO_MIGRATE=true starts without it, NOT_SERVING \
             until it answers)"
        }
        config::StoreLocation::Sqlite(_) => "",
    };
    if !common.database.no_migrate {
        let applied = migrate(&common.database).await.map_err(|e| {
            Error::Startup(format!(
                "cannot prepare the store ({store_name}): {e}{hint}"
            ))
        })?;
        if !applied.is_empty() {
            info!(?applied, "applied migrations");
        }
    }
    // With the queue in this process no other server may use the store, and a server on Redis
    // may not share it with such a one (store::single). The claim is held until this function
    // returns. Without it an in-process server does not start; a server on Redis does (its
    // store may be down for now), with a warning.
    let mode = if common.redis.in_process() {
        store::single::Mode::Exclusive
    } else {
        store::single::Mode::Shared
    };
    let _claim = match store::single::claim(&location, mode).await {
        Ok(claim) => Some(claim),
        Err(e @ store::Error::InUse(_)) => return Err(Error::Startup(e.to_string())),
        Err(e) if mode == store::single::Mode::Exclusive => {
            return Err(Error::Startup(format!(
                "cannot make sure no other server uses the store ({store_name}): {e}"
            )));
        }
        Err(e) => {
            warn!(error = %e, "cannot make sure no in-process server uses this store");
            None
        }
    };
    crate::redact::configure(&common.redaction.redact_patterns).map_err(Error::Config)?;
    let store: Arc<dyn Store> = store::open(&common.database).await?;
    let summary = if common.redis.in_process() {
        format!(
            "backends: in-process queue, event log and rate limits (no REDIS_URL: one process \
             only; live logs end with it, unfinished jobs are re-enqueued from the store); \
             store: {store_name}"
        )
    } else {
        format!(
            "backends: Redis at {} (key prefix {:?}) for queue, event log and rate limits; \
             store: {store_name}",
            crate::redact::redact_url(&common.redis.url),
            common.redis.prefix
        )
    };
    // Without a key (and with OpenAI's URL) nothing is sent upstream: naming the URL would
    // suggest otherwise.
    let upstream = if common.upstream.configured() {
        crate::redact::redact_url(&common.upstream.openai_base_url)
    } else {
        "unused: no OPENAI_API_KEY, so only the simulated models (sim, sim-*) run".to_owned()
    };
    match &default_model {
        Some(model) => info!(default_model = %model, %upstream, "{summary}"),
        None => info!(%upstream, "{summary}"),
    }

    // What can stop the start fails before any job is touched: a server that cannot listen or
    // read its TLS files must not start attempts first (each would count against
    // max_attempts, and a supervisor restarting it in a loop would fail every job).
    let gateway_start = match &gateway_cfg {
        Some(g) => {
            let listener = match listeners.grpc {
                Some(l) => l,
                None => TcpListener::bind(g.server.listen).await.map_err(|e| {
                    Error::Server(format!("cannot listen on {}: {e}", g.server.listen))
                })?,
            };
            let tls = match (&g.security.tls_cert, &g.security.tls_key) {
                (Some(cert), Some(key)) => {
                    Some(server::tls_config(cert, key).map_err(Error::Config)?)
                }
                _ => None,
            };
            let cors = g
                .server
                .cors(g.security.auth_mode() == auth::layer::Mode::Off)
                .map_err(Error::Config)?;
            Some((g, listener, tls, cors))
        }
        None => None,
    };
    let admin_listener = match listeners.admin {
        Some(l) => Some(l),
        None => admin_listener(common.metrics.listen).await?,
    };
    let meters = crate::telemetry::meters().map_err(Error::Startup)?;
    let meter = meters.meter();
    let metrics = Metrics::new(&meter, &common.queues.job_types);
    let queue_gauges =
        crate::metrics::queues::Gauges::register(&meter, queue.clone(), &common.queues.job_types);
    if let Some(every) = meters.export_every {
        tokio::spawn(queue_gauges.clone().run(every, shutdown.clone()));
    }
    let readiness = health::Readiness::default();

    let mut tasks = tokio::task::JoinSet::new();
    let mut local_slots = None;
    if let Some(w) = &worker_cfg {
        let providers = Providers::new(
            Arc::new(OpenAi::new(&common.upstream, &w.provider).map_err(Error::Config)?),
            Arc::new(Sim::new(&w.provider)),
        );
        let worker = Worker::new(
            worker::Deps {
                queue: queue.clone(),
                events: events.clone(),
                store: store.clone(),
                providers,
                pricing: Arc::new(
                    crate::pricing::Pricing::load(w.provider.pricing_file.as_deref())
                        .map_err(Error::Config)?,
                ),
                budget: crate::ratelimit::upstream::Budget::new(
                    limits.clone(),
                    &common.redis.prefix,
                    crate::ratelimit::upstream::Limits {
                        requests_per_minute: w.provider.upstream_rpm,
                        tokens_per_minute: w.provider.upstream_tpm,
                    },
                    w.provider.upstream_model_limits.iter().cloned().collect(),
                    Duration::from_millis(w.provider.upstream_window_ms),
                ),
                metrics: metrics.clone(),
            },
            w.worker.clone(),
            common.lease.lease(),
            common.queues.job_types.clone(),
        );
        local_slots = Some(worker.local_slots());
        let stop = shutdown.clone();
        let grace = Duration::from_secs(w.worker.shutdown_grace_secs);
        tasks.spawn(async move {
            worker.run(stop, grace).await;
            Ok(())
        });
        let reconciler = crate::reconciler::Reconciler::new(
            store.clone(),
            queue.clone(),
            events.clone(),
            common.lease.lease(),
        );
        if common.redis.in_process() {
            // Nothing of the in-process queue survived the last run: what the store has
            // unfinished runs again now, not at the first periodic pass.
            match reconciler.recover(started).await {
                Ok(0) => {}
                Ok(n) => info!(
                    jobs = n,
                    "re-enqueued the jobs left unfinished by the last run"
                ),
                // The periodic passes re-enqueue them once the store answers.
                Err(e) => warn!(error = %e, "cannot read the jobs left unfinished yet"),
            }
        }
        let every = Duration::from_secs(w.worker.reconcile_secs.max(1));
        tokio::spawn(reconciler.run(every, shutdown.clone()));
    }
    if let Some((g, listener, tls, cors)) = gateway_start {
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Server(e.to_string()))?;
        let (reporter, health_service) = tonic_health::server::health_reporter();
        health::start_not_serving(&reporter).await;
        tokio::spawn(health::run(
            Some(reporter),
            readiness.clone(),
            store.clone(),
            queue.clone(),
            shutdown.clone(),
        ));
        let rules = validate::Rules {
            upstream_configured: common.upstream.configured(),
            job_types: common.queues.job_types.clone(),
            default_model: g.jobs.default_model(&common.upstream),
            max_attempts: g.jobs.max_attempts,
            limits: crate::job::Limits {
                max_attempts_cap: g.jobs.max_attempts_cap.max(1),
                timeout_cap: Duration::from_secs(g.jobs.job_timeout_cap_secs.max(1)),
                ..g.jobs.limits.clone()
            },
        };
        let gateway = Gateway {
            store: store.clone(),
            queue: queue.clone(),
            events: events.clone(),
            local: local_slots,
            metrics: metrics.clone(),
        };
        let auditor = Auditor::new(store.clone());
        let limiter = Limiter::new(
            limits.clone(),
            store.clone(),
            &common.redis.prefix,
            crate::ratelimit::Defaults {
                requests_per_minute: g.security.client_requests_per_minute,
                max_concurrent_jobs: g.security.client_max_concurrent_jobs,
                max_open_streams: g.security.client_max_open_streams,
            },
        )
        .with_metrics(metrics.clone());
        let mode = g.security.auth_mode();
        if mode == auth::layer::Mode::Off {
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
        let auth_layer = auth::layer::AuthLayer::new(
            auth::layer::Authenticator::new(
                mode,
                store.clone(),
                crate::audit::refusals::Refusals::start(
                    auditor.clone(),
                    Duration::from_millis(g.security.audit_refusal_window_ms),
                    shutdown.clone(),
                ),
                Some(limiter.clone()),
            )
            .with_key_cache(std::time::Duration::from_millis(g.security.key_cache_ms)),
        );
        let guard = crate::api::Guard {
            auditor,
            limiter,
            prompt_storage: g.security.prompt_storage,
        };
        let pace = crate::streaming::Pace {
            heartbeat: Duration::from_secs(g.server.stream_heartbeat_secs.max(1)),
            stall_patience: Duration::from_secs(g.server.stream_stall_secs.max(1)),
        };
        let batches = crate::api::batches::BatchApi::new(
            gateway.clone(),
            rules.clone(),
            g.jobs.max_batch_jobs.max(1),
            pace,
            guard.clone(),
            shutdown.clone(),
        );
        let api = JobApi::new(gateway, rules, pace, guard.clone(), shutdown.clone());
        let admin = crate::api::admin::AdminApi::new(
            crate::admin::Admin {
                store: store.clone(),
                queue: queue.clone(),
                events: events.clone(),
                job_types: common.queues.job_types.clone(),
                worker_window: common.lease.lease(),
                metrics: metrics.clone(),
            },
            guard,
            shutdown.clone(),
        );
        let connections = g.server.connections();
        let stop = shutdown.clone();
        let scheme = if tls.is_some() { "TLS" } else { "plaintext" };
        info!(%addr, scheme, auth = ?mode, "gRPC (grpc-web, health, reflection) listening");
        info!(
            url = %dashboard_url(addr, tls.is_some()),
            "dashboard (open it in a browser and paste an API key)"
        );
        tasks.spawn(async move {
            let drained = async move {
                stop.cancelled().await;
                // Streams end on the same signal; unary calls get the grace period.
            };
            let services = server::Services {
                jobs: api,
                batches,
                admin,
                health: health_service,
                auth: auth_layer,
                tls,
                connections,
                cors,
                metrics: metrics.clone(),
            };
            server::serve(listener, services, drained)
                .await
                .map_err(|e| Error::Server(e.to_string()))
        });
    }
    if let Some(listener) = admin_listener {
        if gateway_cfg.is_none() {
            // The gateway's probes drive readiness; a worker alone probes for it here.
            tokio::spawn(health::run(
                None,
                readiness.clone(),
                store.clone(),
                queue.clone(),
                shutdown.clone(),
            ));
        }
        let admin = crate::http::Admin {
            prometheus: meters.prometheus.clone(),
            queues: queue_gauges,
            readiness,
        };
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "metrics, liveness and readiness (HTTP) listening");
        }
        let stop = shutdown.clone();
        tasks.spawn(async move {
            crate::http::serve(listener, admin, async move { stop.cancelled().await })
                .await
                .map_err(|e| Error::Server(format!("admin listener: {e}")))
        });
    }
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shutdown.cancel();
                result = Err(e);
            }
            Err(e) => {
                shutdown.cancel();
                result = Err(Error::Server(format!("task failed: {e}")));
            }
        }
    }
    // The last OTLP export goes out now; its wait blocks, so not on a runtime thread.
    let _ = tokio::task::spawn_blocking(move || drop(meters)).await;
    result
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

/// Binds the admin listener `at` (`None`: the default address, when it is free).
///
/// Errors: [`Error::Server`] when an address that was asked for cannot be bound.
async fn admin_listener(at: Option<config::MetricsListen>) -> Result<Option<TcpListener>, Error> {
    match at {
        Some(config::MetricsListen::Off) => Ok(None),
        Some(config::MetricsListen::At(addr)) => {
            TcpListener::bind(addr).await.map(Some).map_err(|e| {
                Error::Server(format!(
                    "cannot listen on {addr} (LLMJOBS_METRICS_LISTEN): {e}"
                ))
            })
        }
        None => match TcpListener::bind(config::DEFAULT_METRICS_LISTEN).await {
            Ok(l) => Ok(Some(l)),
            Err(e) => {
                warn!(
                    addr = %config::DEFAULT_METRICS_LISTEN,
                    error = %e,
                    "no metrics, liveness or readiness listener: the default address is taken \
                     (another process on this host?); give each process its own with \
                     LLMJOBS_METRICS_LISTEN, or `off`"
                );
                Ok(None)
            }
        },
    }
}
