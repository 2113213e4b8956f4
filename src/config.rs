//! Configuration: one struct per subsystem, each flattened into the CLI, every flag with an
//! environment variable. Each struct belongs to the side that reads it, so each command
//! offers only the flags it uses: the gateway's ([`Server`], [`Jobs`], [`Security`]), the
//! worker's ([`Worker`], [`Provider`]) and those both read ([`Redis`], [`Database`],
//! [`Queues`], [`Lease`], [`Upstream`], [`Redaction`]); `crate::app` groups them per side
//! and `crate::cli` per command. An environment variable a command has no flag for is
//! ignored by it, so one environment serves every process of a deployment.
//!
//! Each subsystem's settings are a file of their own, which lists the environment variables
//! it reads: `server` (listeners), `backends` (Redis, the store), `queues` (job types, live
//! state, leases), `jobs` (what clients may submit), `worker`, `upstream` (the LLM and how
//! workers call it) and `security` (auth, client limits, prompt storage, TLS, redaction).

mod backends;
mod jobs;
mod queues;
mod security;
mod server;
mod upstream;
mod worker;

pub use backends::{Database, Redis, StoreLocation};
pub use jobs::Jobs;
pub use queues::{DEFAULT_EVENT_LOG_TTL_SECS, Lease, Queues};
pub use security::{PromptStorage, Redaction, Security};
pub use server::{DEFAULT_METRICS_LISTEN, Metrics, MetricsListen, Server};
pub use upstream::{Provider, Upstream};
pub use worker::Worker;
