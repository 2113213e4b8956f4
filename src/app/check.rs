//! Start-up phase 1: the configuration checked as a whole, without I/O, so a server that
//! cannot work says so before it connects to anything.

use super::{Common, Config, Error, GatewayConfig, WorkerConfig};
use crate::{auth, config::StoreLocation, server::Cors};

/// A configuration that passed [`check`]: what each phase after it needs.
pub(super) struct Plan {
    /// The settings both sides read.
    pub common: Common,
    /// The gateway, when this process serves it.
    pub gateway: Option<GatewayPlan>,
    /// A worker, when this process runs jobs.
    pub worker: Option<WorkerConfig>,
    /// Where the store is (`DATABASE_URL` read).
    pub location: StoreLocation,
}

/// The gateway's settings with what was derived from them.
pub(super) struct GatewayPlan {
    /// Its settings.
    pub cfg: GatewayConfig,
    /// The model of jobs that name none.
    pub default_model: String,
    /// The CORS policy (origins read).
    pub cors: Cors,
}

/// Checks `cfg`: at least one side, valid job types, a default model that is allowed, a
/// readable `DATABASE_URL`, redaction patterns that compile (they are installed here) and
/// CORS origins that parse.
///
/// Errors: [`Error::Config`] naming the setting.
pub(super) fn check(cfg: Config) -> Result<Plan, Error> {
    let Config {
        common,
        gateway,
        worker,
    } = cfg;
    if gateway.is_none() && worker.is_none() {
        return Err(Error::Config(
            "neither a gateway nor a worker to run".into(),
        ));
    }
    job_types(&common.queues.job_types)?;
    let gateway = gateway.map(|g| gateway_plan(g, &common)).transpose()?;
    let location = common.database.location().map_err(Error::Config)?;
    crate::redact::configure(&common.redaction.redact_patterns).map_err(Error::Config)?;
    Ok(Plan {
        common,
        gateway,
        worker,
        location,
    })
}

/// Checks the job types, which name queues, Redis keys and metrics labels.
fn job_types(job_types: &[String]) -> Result<(), Error> {
    if job_types.is_empty() {
        return Err(Error::Config(
            "LLMJOBS_JOB_TYPES needs at least one job type".into(),
        ));
    }
    if let Some(bad) = job_types.iter().find(|t| {
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
    Ok(())
}

/// The gateway's plan: its default model, which must be allowed (or every job naming no
/// model would be refused), and its CORS policy.
fn gateway_plan(cfg: GatewayConfig, common: &Common) -> Result<GatewayPlan, Error> {
    let default_model = cfg.jobs.default_model(&common.upstream);
    if !cfg.jobs.limits.allows_model(&default_model) {
        return Err(Error::Config(format!(
            "the default model {default_model:?} is not in LLMJOBS_ALLOWED_MODELS; jobs naming \
             no model would all be refused"
        )));
    }
    let cors = crate::server::Cors::configured(
        &cfg.server.cors_allowed_origins,
        cfg.security.auth_mode() == auth::layer::Mode::Off,
    )
    .map_err(Error::Config)?;
    Ok(GatewayPlan {
        cfg,
        default_model,
        cors,
    })
}
