//! The tonic router: JobService, BatchService, QueueAdminService, health and reflection on one
//! port, with the web dashboard's page and assets for `GET` requests ([`dashboard`]), grpc-web
//! (HTTP/1.1 included; JSON encodings refused with a readable status, and posts that are not
//! gRPC calls with 415, [`refusals`]) and CORS for browsers, authentication
//! ([`crate::auth::layer`]) behind the grpc-web translation so both protocols pass it, and
//! optional TLS. [`serve`] takes a bound listener and a shutdown future, so tests bind port 0
//! and pass it in; [`incoming`] caps and times out the connections it accepts.

pub mod dashboard;
pub mod incoming;
pub mod refusals;

use std::{future::Future, path::Path, time::Duration};

use http::{HeaderName, HeaderValue, Method};
use tokio::net::TcpListener;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::pb::health_server::HealthServer;
use tower_http::cors::{AllowOrigin, CorsLayer};

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

/// Which web pages' origins may call the API (CORS). Requests from other origins are still
/// answered, without the CORS headers, so browsers keep their pages from reading them (and,
/// since every grpc-web call needs a preflight, from sending them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cors {
    /// Any origin.
    Any,
    /// Pages served from this machine: `http(s)://localhost`, `127.x.x.x` or `[::1]`, any
    /// port.
    Loopback,
    /// These origins exactly (as [`origin`] spells them).
    Only(Vec<HeaderValue>),
}

/// `text` as an origin header value (`scheme://host[:port]`, lower case, no trailing `/`).
///
/// Errors: a message naming `LLMJOBS_CORS_ALLOWED_ORIGINS` and the entry.
pub fn origin(text: &str) -> Result<HeaderValue, String> {
    let normal = text.trim().trim_end_matches('/').to_ascii_lowercase();
    let uri: http::Uri = normal.parse().map_err(|_| bad_origin(text))?;
    let plain = uri.path_and_query().is_none_or(|p| p.as_str() == "/")
        && uri.authority().is_some_and(|a| !a.as_str().contains('@'));
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() || !plain {
        return Err(bad_origin(text));
    }
    HeaderValue::from_str(&normal).map_err(|_| bad_origin(text))
}

fn bad_origin(text: &str) -> String {
    format!(
        "LLMJOBS_CORS_ALLOWED_ORIGINS: {text:?} is not an origin like https://app.example.com \
         or http://localhost:5173 (or `*`)"
    )
}

/// Whether `origin` is a page served from this machine.
fn is_loopback(origin: &HeaderValue) -> bool {
    let Some(uri) = origin
        .to_str()
        .ok()
        .and_then(|o| o.parse::<http::Uri>().ok())
    else {
        return false;
    };
    let host = match uri.authority() {
        Some(a) if !a.as_str().contains('@') => a.host(),
        _ => return false,
    };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.path_and_query().is_none_or(|p| p.as_str() == "/")
        && (host.eq_ignore_ascii_case("localhost")
            || host == "[::1]"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback()))
}

/// CORS for grpc-web clients: the origins `allowed`; the headers grpc-web sends and reads.
/// Header names from the grpc-web protocol (github.com/grpc/grpc/blob/master/doc/PROTOCOL-WEB.md).
fn cors(allowed: Cors) -> CorsLayer {
    let h = HeaderName::from_static;
    let origins = match allowed {
        Cors::Any => AllowOrigin::mirror_request(),
        Cors::Loopback => AllowOrigin::predicate(|origin, _| is_loopback(origin)),
        Cors::Only(list) => AllowOrigin::list(list),
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            h("authorization"),
            h("content-type"),
            h("x-grpc-web"),
            h("x-user-agent"),
            h("grpc-timeout"),
            // W3C trace context: a browser that traces continues its trace into the job.
            h("traceparent"),
            h("tracestate"),
        ])
        .expose_headers([
            h("grpc-status"),
            h("grpc-message"),
            h("grpc-status-details-bin"),
        ])
        .max_age(Duration::from_secs(24 * 3600))
}

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
        .layer(cors(allowed_origins))
        // Inside CORS, so that pages can read the status it answers.
        .layer(refusals::Layer)
        // The page and its assets; gRPC and grpc-web (POST) pass on.
        .layer(dashboard::Layer)
        .layer(tonic_web::GrpcWebLayer::new())
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

#[cfg(test)]
mod tests;
