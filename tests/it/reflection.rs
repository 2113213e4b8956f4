//! Server reflection (v1 for grpcurl, v1alpha for older tools) lists the services, so operators
//! need no `.proto` files.

use tokio_stream::StreamExt;
use tonic_reflection::pb::{v1, v1alpha};

use crate::support::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_and_v1alpha_list_the_services() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))?
        .connect()
        .await?;

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses
            .next()
            .await
            .transpose()?
            .and_then(|r| r.message_response)
    else {
        anyhow::bail!("no service list");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["llmjobs.v1.JobService", "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == expected),
            "v1 lists {expected}: {names:?}"
        );
    }

    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "llmjobs.v1.JobService".into(),
            ),
        ),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let response = responses
        .next()
        .await
        .transpose()?
        .and_then(|r| r.message_response);
    assert!(
        matches!(response, Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
        "v1alpha describes JobService: {response:?}"
    );

    // The error details errors carry are described too (grpcurl and buf curl decode them).
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))?
            .connect()
            .await?,
    );
    for symbol in [
        "google.rpc.BadRequest",
        "google.rpc.RetryInfo",
        "google.rpc.Status",
    ] {
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1::server_reflection_request::MessageRequest::FileContainingSymbol(symbol.into()),
            ),
        };
        let response = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await?
            .into_inner()
            .next()
            .await
            .transpose()?
            .and_then(|r| r.message_response);
        assert!(
            matches!(response, Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
            "v1 describes {symbol}: {response:?}"
        );
    }
    app.stop().await
}
