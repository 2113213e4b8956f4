//! The tonic router: JobService, BatchService, QueueAdminService, health and reflection on one
//! port, with the web dashboard's page and assets for `GET` requests ([`dashboard`]), grpc-web
//! (HTTP/1.1 included; JSON encodings refused with a readable status, and posts that are not
//! gRPC calls with 415, [`refusals`]) and CORS for browsers, authentication
//! ([`crate::auth::layer`]) behind the grpc-web translation so both protocols pass it, and
//! optional TLS. Every call's deadline (`grpc-timeout`) holds for its whole response, streams
//! included ([`deadline`]). [`serve`] takes a bound listener and a shutdown future, so tests
//! bind port 0 and pass it in; [`incoming`] caps and times out the connections it accepts,
//! and [`coalesce`] gathers each one's writes until it flushes.

pub mod coalesce;
mod cors;
pub mod dashboard;
pub mod deadline;
pub mod incoming;
pub mod refusals;

pub use cors::{Cors, origin};

use std::{future::Future, path::Path};

use tokio::net::TcpListener;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::pb::health_server::HealthServer;

use crate::{
    api::{admin::AdminApi, batches::BatchApi, jobs::JobApi},
    auth::layer::AuthLayer,
    proto::{
        FILE_DESCRIPTOR_SET,
        v1::{
            batch_service_server::BatchServiceServer,
            queue_admin_service_server::QueueAdminServiceServer,
        },
    },
};

/// Largest accepted request message (bytes); the prompt limit is checked separately.
pub const MAX_DECODING_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Largest accepted BatchService request message (bytes): a `SubmitBatch` of the default
/// 1,000 jobs averaging up to 64 KiB of prompt each. Each job's own limits are checked
/// separately; bigger batches must be split. The transport refuses larger messages with
/// OUT_OF_RANGE before they are decoded, which bounds the memory one call can take.
pub const MAX_BATCH_DECODING_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The services [`serve`] runs and how it guards them.
pub struct Services<H> {
    /// JobService.
    pub jobs: JobApi,
    /// BatchService.
    pub batches: BatchApi,
    /// QueueAdminService.
    pub admin: AdminApi,
    /// grpc.health.v1.Health.
    pub health: HealthServer<H>,
    /// Authentication, roles and request rates in front of all but health and reflection.
    pub auth: AuthLayer,
    /// TLS, when configured.
    pub tls: Option<ServerTlsConfig>,
    /// The connection cap, handshake deadline and keepalive pings.
    pub connections: incoming::Limits,
    /// The origins grpc-web pages may call from.
    pub cors: Cors,
    /// Where open connections are counted.
    pub metrics: crate::metrics::Metrics,
}

/// TLS configuration from PEM files: the certificate chain and its private key.
///
/// Errors: a message naming the file that cannot be read.
pub fn tls_config(cert: &Path, key: &Path) -> Result<ServerTlsConfig, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    Ok(ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?)))
}

/// Serves every gRPC service on `listener` until `shutdown` completes, then drains in-flight
/// calls.
///
/// Errors: the transport's, when serving fails (or the TLS configuration is unusable).
pub async fn serve<H>(
    listener: TcpListener,
    services: Services<H>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error>
where
    H: tonic_health::pb::health_server::Health,
{
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc.Status and the error details (BadRequest, RetryInfo, …) that errors
        // carry, so that grpcurl and buf curl can show them.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc.Status and the error details (BadRequest, RetryInfo, …) that errors
        // carry, so that grpcurl and buf curl can show them.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the embedded descriptor sets are valid");
    let Services {
        jobs,
        batches,
        admin,
        health,
        auth,
        tls,
        connections,
        cors: allowed_origins,
        metrics,
    } = services;
    let jobs = crate::api::frames::JobRoutes::new(jobs, MAX_DECODING_MESSAGE_BYTES);
    let batches = BatchServiceServer::new(batches)
        .max_decoding_message_size(MAX_BATCH_DECODING_MESSAGE_BYTES);
    let admin = QueueAdminServiceServer::new(admin);

    let mut server = Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls.timeout(connections.handshake_timeout))?;
    }
    server
        .accept_http1(true)
        // Connections that finished the handshake and then went quiet: a peer that does not
        // answer a ping in time is gone, and its connection is closed.
        .http2_keepalive_interval(connections.keepalive_interval)
        .http2_keepalive_timeout(Some(connections.keepalive_timeout))
        .layer(cors::layer(allowed_origins))
        // Inside CORS, so that pages can read the status it answers.
        .layer(refusals::Layer)
        // The page and its assets; gRPC and grpc-web (POST) pass on.
        .layer(dashboard::Layer)
        .layer(tonic_web::GrpcWebLayer::new())
        // Inside grpc-web, so that its DEADLINE_EXCEEDED trailers reach browsers too.
        .layer(deadline::Layer)
        .layer(auth)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(jobs)
        .add_service(batches)
        .add_service(admin)
        // The builder's `tcp_nodelay` applies only to listeners it binds itself: `guard`
        // sets it.
        .serve_with_incoming_shutdown(incoming::guard(listener, connections, metrics), shutdown)
        .await
}
