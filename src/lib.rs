//! llm-jobs: background LLM generation jobs over gRPC, with live token streaming.
//!
//! A client submits a job; it waits in a Redis priority queue; a worker streams it from an
//! OpenAI-compatible upstream and publishes every token to the job's event log; clients follow
//! the log live and resume by sequence; results land in Postgres.
//!
//! Modules:
//! - [`job`]: domain types (status, priority, queue names, results, limits).
//! - [`batch`]: domain types of batches (jobs submitted together) and their progress figures.
//! - [`config`]: one configuration struct per subsystem, flags + environment variables.
//! - [`error`]: the RPC error type and its mapping to gRPC status codes.
//! - [`paging`]: page sizes and tokens of list RPCs (AIP-158).
//! - [`pricing`]: token prices per model, for costs in USD.
//! - [`principal`]: the authenticated caller (tenant, role, own limits) and its access rules.
//! - [`progress`]: stages of an attempt, output estimates, progress fractions and milestones.
//! - [`structured`]: JSON response formats: schema checks at submit, parsing and validation.
//! - [`proto`]: code generated from `proto/llmjobs/v1`.
//! - [`redis`]: Redis connections and key layout shared by the queue, the event
//!   log and the rate limits (the `redis` crate underneath keeps its name).
//! - [`queue`]: priority queues, claims with leases, delayed retries, worker signals (Redis,
//!   or in process without Redis).
//! - [`events`]: per-job ordered event log and fan-out to watchers (Redis, or in process);
//!   its events are plain Rust ([`events::event`](mod@events::event)), encoded once by the
//!   codec the app hands it (`api::event_codec`, protobuf).
//! - [`reconciler`]: re-enqueues jobs Postgres has as unfinished but Redis lost.
//! - [`store`]: the durable store of jobs, results, failed attempts, batches, keys and the
//!   audit log: one interface per aggregate ([`store::JobStore`], [`store::AttemptStore`],
//!   [`store::HistoryStore`], [`store::BatchStore`], [`store::KeyStore`],
//!   [`store::AuditStore`], [`store::ReportStore`]; [`store::Store`] is all of them), each
//!   implemented on Postgres and on SQLite, one file per interface.
//! - [`provider`]: LLM providers (OpenAI-compatible via async-openai, simulated) and error
//!   classification.
//! - [`worker`]: claiming jobs, running attempts, retries, cancellation; told what to do by
//!   [`worker::Settings`] (built by `app` from the configuration). [`worker::Worker::run`]
//!   is its main loop as steps (claim into free slots, drain, settle); `worker::generate`
//!   reads the upstream stream (`generate::read`) and feeds the publisher (`generate::flush`).
//! - [`jobs`]: the application service of jobs and batches behind the API ([`jobs::Jobs`]:
//!   submit, get, result, cancel; what a gateway process serves); fails with
//!   [`jobs::Error`], which `error` maps to gRPC codes.
//! - [`streaming`]: serving one watcher: replay, live follow, gap repair, snapshots; batch
//!   progress streams, encoded by the caller's [`streaming::batch::Encoder`] (the API's
//!   `api::batches::Wire`).
//! - [`admin`]: queue administration (stats, pause/resume, purge, failed jobs, retry),
//!   answering with domain report types ([`admin::report`]) and [`admin::Error`]; the API
//!   encodes them and maps the error.
//! - [`api`]: the gRPC services (decode, call the core, encode): the only place that converts
//!   between wire (proto) and domain types.
//! - [`health`]: probes Redis and Postgres and drives `grpc.health.v1.Health`.
//! - [`server`]: the tonic router (grpc-web, CORS, health, reflection, the web dashboard's
//!   embedded page, call deadlines) and `serve` (connections capped, their writes gathered).
//! - [`app`]: composition root: configuration to running gateway and worker.
//! - [`shutdown`]: signals to a shutdown future.
//! - [`trace`]: the W3C trace context carried from a submitting call through the queue to the
//!   upstream, and the attempt and GenAI upstream spans.
//! - [`telemetry`]: tracing and OpenTelemetry export (traces; meters read as Prometheus
//!   text and exported over OTLP).
//! - [`metrics`]: every metric's instrument, behind the handle the core records through.
//! - [`http`]: the admin HTTP listener of every process (`/metrics`, `/healthz`, `/readyz`).
//! - [`cli`]: the `llm-jobs` command line (server and client commands).
//! - [`auth`]: API keys, principals (tenant, role) and the authenticating tower layer.
//! - [`audit`]: the append-only audit log; its records belong to the store's audit interface
//!   ([`store::audit`]).
//! - [`ratelimit`]: per-key client limits and the fleet's upstream budget, in Redis (or in
//!   process without Redis).
//! - [`redact`]: masking secrets in logs, errors, the audit log and stored prompts.
//!
//! Layers, bottom to top: domain (`job`, `batch`, `progress`, `principal`, `events::event`,
//! `pricing`, …) → ports (the `store`, `queue`, `events` and `provider` interfaces) → adapters (their Postgres, SQLite,
//! Redis, in-process and OpenAI implementations, `redis`, `ratelimit`) → core (`jobs`,
//! `worker`, `streaming`, `admin`, …) → edge (`api`, `auth`, `server`, `cli`, `app`,
//! `config`, `proto`, …). A module imports only from its own layer or below;
//! `tests/it/layers.rs` holds each module's layer and fails on an upward import beyond the
//! knowingly listed there (none); `tests/it/sizes.rs` does the same for files over 400 lines
//! and functions over 80. `ARCHITECTURE.md` draws the layers and follows one
//! job through them.

pub mod admin;
pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod batch;
pub mod cli;
pub mod config;
pub mod error;
pub mod events;
pub mod health;
pub mod http;
pub mod job;
pub mod jobs;
pub mod metrics;
pub mod paging;
pub mod pricing;
pub mod principal;
pub mod progress;
pub mod proto;
pub mod provider;
pub mod queue;
pub mod ratelimit;
pub mod reconciler;
pub mod redact;
pub mod redis;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod streaming;
pub mod structured;
pub mod telemetry;
pub mod trace;
pub mod worker;
