//! Composition root: configuration to connected backends, the gateway and the worker.
//! No business logic here.

use std::{sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    api::{jobs::JobApi, validate},
    audit::Auditor,
    auth,
    backend::Redis,
    config,
    events::{EventLog, memory::MemoryEventLog, redis::RedisEventLog},
    gateway::Gateway,
    health,
    metrics::Metrics,
    provider::{Providers, openai::OpenAi, sim::Sim},
    queue::{Queue, memory::MemoryQueue, redis::RedisQueue},
    ratelimit::{self, Limiter},
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

/// Everything `serve`, `gateway` and `worker` are configured with.
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub server: config::Server,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub redis: config::Redis,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub database: config::Database,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub jobs: config::Jobs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub worker: config::Worker,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub provider: config::Provider,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub security: config::Security,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub metrics: config::Metrics,
}

/// Which sides this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    /// Serve the gRPC API.
    pub gateway: bool,
    /// Run jobs.
    pub worker: bool,
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
    /// The gateway's gRPC listener (`cfg.server.listen`).
    pub grpc: Option<TcpListener>,
    /// The admin HTTP listener: `/metrics`, `/healthz`, `/readyz` (`cfg.metrics.listen`).
    pub admin: Option<TcpListener>,
}

/// Runs the configured roles until `shutdown` is cancelled, then drains within the grace
/// period.
///
/// Errors: start-up failures ([`Error`]); a dependency that goes down later is retried.
pub async fn run(
    cfg: Config,
    roles: Roles,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    if cfg.jobs.job_types.is_empty() {
        return Err(Error::Config(
            "LLMJOBS_JOB_TYPES needs at least one job type".into(),
        ));
    }
    // Job types name queues, Redis keys and metrics labels.
    if let Some(bad) = cfg.jobs.job_types.iter().find(|t| {
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
    if !cfg.jobs.limits.allows_model(&cfg.provider.default_model()) {
        return Err(Error::Config(format!(
            "the default model {:?} is not in LLMJOBS_ALLOWED_MODELS; jobs naming no model \
             would all be refused",
            cfg.provider.default_model()
        )));
    }
    let Backends {
        queue,
        events,
        limits,
    } = backends(&cfg, roles).await?;
    let started = chrono::Utc::now();
    let store_name = store::describe(&cfg.database);
    let location = cfg.database.location().map_err(Error::Config)?;
    let hint = match &location {
        config::StoreLocation::Postgres(_) => {
            "; is Postgres running? (LLMJOBS_NO_MIGRATE=true starts without it, NOT_SERVING \
             until it answers)"
        }
        config::StoreLocation::Sqlite(_) => "",
    };
    if !cfg.database.no_migrate {
        let applied = migrate(&cfg.database).await.map_err(|e| {
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
    let mode = if cfg.redis.in_process() {
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
    crate::redact::configure(&cfg.security.redact_patterns).map_err(Error::Config)?;
    let store: Arc<dyn Store> = store::open(&cfg.database).await?;
    let grace = Duration::from_secs(cfg.server.shutdown_grace_secs);
    let default_model = cfg.provider.default_model();
    let summary = if cfg.redis.in_process() {
        format!(
            "backends: in-process queue, event log and rate limits (no REDIS_URL: one process \
             only; live logs end with it, unfinished jobs are re-enqueued from the store); \
             store: {store_name}"
        )
    } else {
        format!(
            "backends: Redis at {} for queue, event log and rate limits; store: {store_name}",
            crate::redact::redact_url(&cfg.redis.url)
        )
    };
    info!(
        default_model = %default_model,
        upstream = %cfg.provider.openai_base_url,
        "{summary}"
    );

    // What can stop the start fails before any job is touched: a server that cannot listen or
    // read its TLS files must not start attempts first (each would count against
    // max_attempts, and a supervisor restarting it in a loop would fail every job).
    let bound = if roles.gateway {
        Some(match listeners.grpc {
            Some(l) => l,
            None => TcpListener::bind(cfg.server.listen).await.map_err(|e| {
                Error::Server(format!("cannot listen on {}: {e}", cfg.server.listen))
            })?,
        })
    } else {
        None
    };
    let tls = match (&cfg.security.tls_cert, &cfg.security.tls_key) {
        (Some(cert), Some(key)) if roles.gateway => {
            Some(server::tls_config(cert, key).map_err(Error::Config)?)
        }
        _ => None,
    };
    let cors = cfg
        .server
        .cors(cfg.security.auth_mode() == auth::layer::Mode::Off)
        .map_err(Error::Config)?;
    let admin_listener = match listeners.admin {
        Some(l) => Some(l),
        None => admin_listener(cfg.metrics.listen).await?,
    };
    let meters = crate::telemetry::meters().map_err(Error::Startup)?;
    let meter = meters.meter();
    let metrics = Metrics::new(&meter, &cfg.jobs.job_types);
    let queue_gauges =
        crate::metrics::queues::Gauges::register(&meter, queue.clone(), &cfg.jobs.job_types);
    if let Some(every) = meters.export_every {
        tokio::spawn(queue_gauges.clone().run(every, shutdown.clone()));
    }
    let readiness = health::Readiness::default();

    let mut tasks = tokio::task::JoinSet::new();
    let mut local_slots = None;
    if roles.worker {
        let providers = Providers::new(
            Arc::new(OpenAi::new(&cfg.provider).map_err(Error::Config)?),
            Arc::new(Sim::new(&cfg.provider)),
        );
        let worker = Worker::new(
            worker::Deps {
                queue: queue.clone(),
                events: events.clone(),
                store: store.clone(),
                providers,
                pricing: Arc::new(
                    crate::pricing::Pricing::load(cfg.provider.pricing_file.as_deref())
                        .map_err(Error::Config)?,
                ),
                budget: crate::ratelimit::upstream::Budget::new(
                    limits.clone(),
                    &cfg.redis.prefix,
                    crate::ratelimit::upstream::Limits {
                        requests_per_minute: cfg.provider.upstream_rpm,
                        tokens_per_minute: cfg.provider.upstream_tpm,
                    },
                    cfg.provider.upstream_model_limits.iter().cloned().collect(),
                    Duration::from_millis(cfg.provider.upstream_window_ms),
                ),
                metrics: metrics.clone(),
            },
            cfg.worker.clone(),
            cfg.jobs.job_types.clone(),
        );
        local_slots = Some(worker.local_slots());
        let stop = shutdown.clone();
        tasks.spawn(async move {
            worker.run(stop, grace).await;
            Ok(())
        });
        let reconciler = crate::reconciler::Reconciler {
            store: store.clone(),
            queue: queue.clone(),
            events: events.clone(),
        };
        if cfg.redis.in_process() {
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
        let every = Duration::from_secs(cfg.worker.reconcile_secs.max(1));
        tokio::spawn(reconciler.run(every, shutdown.clone()));
    }
    if let Some(listener) = bound {
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
        let upstream_configured = cfg.provider.openai_api_key.is_some()
            || !cfg.provider.openai_base_url.contains("api.openai.com");
        let rules = validate::Rules {
            upstream_configured,
            job_types: cfg.jobs.job_types.clone(),
            default_model,
            max_attempts: cfg.jobs.max_attempts,
            limits: crate::job::Limits {
                max_attempts_cap: cfg.jobs.max_attempts_cap.max(1),
                timeout_cap: Duration::from_secs(cfg.jobs.job_timeout_cap_secs.max(1)),
                ..cfg.jobs.limits.clone()
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
            &cfg.redis.prefix,
            crate::ratelimit::Defaults {
                requests_per_minute: cfg.security.client_requests_per_minute,
                max_concurrent_jobs: cfg.security.client_max_concurrent_jobs,
                max_open_streams: cfg.security.client_max_open_streams,
            },
        )
        .with_metrics(metrics.clone());
        let mode = cfg.security.auth_mode();
        if mode == auth::layer::Mode::Off {
            tracing::warn!(
                "AUTHENTICATION IS OFF (--insecure-no-auth / LLMJOBS_AUTH=off): anyone who can \
                 reach {addr} is an admin and sees every job. For local development only; \
                 create keys with `llm-jobs keys create` and drop the flag everywhere else"
            );
            eprintln!(
                "WARNING: authentication is OFF; every caller of {addr} is an admin. Local \
                 development only."
            );
        }
        let auth_layer = auth::layer::AuthLayer::new(
            auth::layer::Authenticator::new(
                mode,
                store.clone(),
                crate::audit::refusals::Refusals::start(
                    auditor.clone(),
                    Duration::from_millis(cfg.security.audit_refusal_window_ms),
                    shutdown.clone(),
                ),
                Some(limiter.clone()),
            )
            .with_key_cache(std::time::Duration::from_millis(cfg.security.key_cache_ms)),
        );
        let guard = crate::api::Guard {
            auditor,
            limiter,
            prompt_storage: cfg.security.prompt_storage,
        };
        let pace = crate::streaming::Pace {
            heartbeat: Duration::from_secs(cfg.server.stream_heartbeat_secs.max(1)),
            stall_patience: Duration::from_secs(cfg.server.stream_stall_secs.max(1)),
        };
        let batches = crate::api::batches::BatchApi::new(
            gateway.clone(),
            rules.clone(),
            cfg.jobs.max_batch_jobs.max(1),
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
                job_types: cfg.jobs.job_types.clone(),
                worker_window: cfg.worker.lease(),
                metrics: metrics.clone(),
            },
            guard,
            shutdown.clone(),
        );
        let connections = cfg.server.connections();
        let stop = shutdown.clone();
        let scheme = if tls.is_some() { "TLS" } else { "plaintext" };
        info!(%addr, scheme, auth = ?mode, "gRPC (grpc-web, health, reflection) listening");
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
        if !roles.gateway {
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

/// The queue, the event log and the rate limits' counters, all in Redis or all in process.
struct Backends {
    queue: Arc<dyn Queue>,
    events: Arc<dyn EventLog>,
    limits: ratelimit::Backend,
}

/// Connects Redis (checking its eviction policy), or builds the in-process backends when no
/// Redis is configured.
///
/// Errors: [`Error::Config`] for an invalid URL, or for in-process backends in a process that
/// is not both gateway and worker (a separate gateway and worker cannot share them).
async fn backends(cfg: &Config, roles: Roles) -> Result<Backends, Error> {
    if cfg.redis.in_process() {
        if !(roles.gateway && roles.worker) {
            return Err(Error::Config(
                "no REDIS_URL: the queue and event log run in process, so gateway and worker \
                 must be one process (`llm-jobs serve`); set REDIS_URL to run `gateway` and \
                 `worker` separately"
                    .into(),
            ));
        }
        let queue = Arc::new(MemoryQueue::new());
        // The log reads and sets the cancel flags kept with the queue, as in Redis.
        let flags = queue.clone();
        return Ok(Backends {
            queue,
            events: Arc::new(
                MemoryEventLog::new(
                    cfg.jobs.event_log_ttl_secs(),
                    cfg.jobs.finished_progress_ttl_secs(),
                )
                .with_cancel_flags(flags),
            ),
            limits: ratelimit::Backend::Memory(Arc::default()),
        });
    }
    let redis = Redis::new(&cfg.redis).map_err(Error::Config)?;
    match redis.eviction_policy().await.as_deref() {
        Some("noeviction") | None => {}
        Some(policy) => tracing::error!(
            policy,
            "Redis may evict keys (maxmemory-policy is not noeviction): queued jobs and event \
             logs can vanish; the reconciler re-enqueues jobs from Postgres, but set \
             maxmemory-policy noeviction"
        ),
    }
    Ok(Backends {
        queue: Arc::new(RedisQueue::new(redis.clone())),
        events: Arc::new(RedisEventLog::new(
            redis.clone(),
            cfg.jobs.event_log_ttl_secs(),
            cfg.jobs.finished_progress_ttl_secs(),
        )),
        limits: ratelimit::Backend::Redis(redis),
    })
}
