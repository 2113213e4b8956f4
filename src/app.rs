//! Composition root: configuration to connected backends, the gateway and the worker.
//! No business logic here. [`Config`] has the settings both sides read ([`Common`]) and each
//! side's own ([`GatewayConfig`], [`WorkerConfig`]), so each command offers only its flags.
//!
//! [`run`] starts in phases, each a module:
//! 1. `check`: the configuration as a whole, without I/O;
//! 2. `open`: the backends (`backends`: Redis or in-process) and the store;
//! 3. bind: the gateway's listener and TLS (`gateway`), the admin listener and the meters
//!    (`http`), so what can stop the start fails before any job is touched;
//! 4. spawn: the worker (`worker`), the gateway, the admin HTTP server;
//! 5. drain: wait for every task once shutdown is signalled, within each side's grace period.

mod backends;
mod check;
mod gateway;
mod http;
mod open;
mod worker;

use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{config, health, metrics::Metrics, store};

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
    // 1. Check: the configuration as a whole, without I/O.
    let mut plan = check::check(cfg)?;
    // 2. Open: the backends and the store.
    let core = open::open(&plan).await?;
    // 3. Bind: what can stop the start fails here, before any job is touched.
    let gateway = match plan.gateway.take() {
        Some(g) => Some(gateway::bind(g, listeners.grpc).await?),
        None => None,
    };
    let admin_listener = http::bind(plan.common.metrics.listen, listeners.admin).await?;
    let telemetry = http::telemetry(&plan.common, &core, &shutdown)?;
    // 4. Spawn: the worker first (a gateway in this process uses its slots), then the servers.
    let readiness = health::Readiness::default();
    let shared = Shared {
        common: &plan.common,
        core: &core,
        metrics: &telemetry.metrics,
        readiness: &readiness,
        shutdown: &shutdown,
    };
    let mut tasks = Tasks::new();
    let local = match &plan.worker {
        Some(w) => Some(worker::spawn(w, &shared, &mut tasks).await?),
        None => None,
    };
    let probe = gateway.is_none();
    if let Some(bound) = gateway {
        gateway::spawn(bound, &shared, local, &mut tasks).await?;
    }
    if let Some(listener) = admin_listener {
        http::spawn(listener, &shared, &telemetry, probe, &mut tasks);
    }
    // 5. Drain: until every task has ended.
    let result = drain(tasks, &shutdown).await;
    // The last OTLP export goes out now; its wait blocks, so not on a runtime thread.
    let meters = telemetry.meters;
    let _ = tokio::task::spawn_blocking(move || drop(meters)).await;
    result
}

/// The tasks a server process runs until shutdown: the worker, the gateway, the admin HTTP
/// server.
type Tasks = JoinSet<Result<(), Error>>;

/// What the spawn phase hands each side: the common settings, the backends and store, the
/// metrics, the readiness the probes keep, and the shutdown signal.
struct Shared<'a> {
    common: &'a Common,
    core: &'a open::Core,
    metrics: &'a Metrics,
    readiness: &'a health::Readiness,
    shutdown: &'a CancellationToken,
}

/// Waits for every task to end. The first to fail (or panic) cancels `shutdown`, so the others
/// drain too; its error is returned (the last one, when several fail).
async fn drain(mut tasks: Tasks, shutdown: &CancellationToken) -> Result<(), Error> {
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
    result
}
