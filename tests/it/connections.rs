//! Connections that would pile up: sockets that never complete the HTTP/2 handshake are
//! closed after the handshake timeout, and connections over the cap are closed at once, so
//! idle sockets cannot use up the server's file descriptors and lock everyone out.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::{PATIENCE, TestApp};

/// Whether the server closes `socket` (end of stream or a reset) within `within`.
async fn closed_within(socket: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(within, socket.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // Whatever the server writes before it closes (nothing, today) is not the point.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_send_the_preface_are_closed() -> anyhow::Result<()> {
    let timeout = Duration::from_millis(500);
    let app = TestApp::builder()
        .arg("--handshake-timeout-ms", "500")
        .start()
        .await?;

    let mut silent = TcpStream::connect(app.addr).await?;
    // Part of the preface, then nothing: a slow client is cut off as well.
    let mut partial = TcpStream::connect(app.addr).await?;
    partial.write_all(b"PRI * HTTP/2.0\r\n").await?;
    let opened = tokio::time::Instant::now();
    assert!(
        closed_within(&mut silent, timeout + PATIENCE).await,
        "a connection that sent nothing stayed open"
    );
    assert!(
        closed_within(&mut partial, timeout + PATIENCE).await,
        "a connection that sent part of the preface stayed open"
    );
    assert!(
        opened.elapsed() >= timeout - Duration::from_millis(100),
        "closed before the handshake timeout ({:?})",
        opened.elapsed()
    );

    // Clients that did complete the handshake are not affected, however long they idle.
    tokio::time::sleep(timeout * 2).await;
    let mut c = app.client.clone();
    c.list_jobs(llm_jobs::proto::v1::ListJobsRequest::default())
        .await?;
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_once() -> anyhow::Result<()> {
    // The test client holds one of the two slots; a long handshake timeout keeps the idle
    // sockets below from being closed for that reason.
    let app = TestApp::builder()
        .arg("--max-connections", "2")
        .arg("--handshake-timeout-ms", "60000")
        .start()
        .await?;
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(TcpStream::connect(app.addr).await?);
    }
    let mut closed = 0;
    for socket in &mut idle {
        if closed_within(socket, Duration::from_secs(2)).await {
            closed += 1;
        }
    }
    assert!(
        closed >= 4,
        "with 2 slots and one taken, at least 4 of 5 idle connections are refused; {closed} were"
    );

    // The connection that was already open keeps working.
    let mut c = app.client.clone();
    c.list_jobs(llm_jobs::proto::v1::ListJobsRequest::default())
        .await?;

    // Slots come back when connections close.
    drop(idle);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let answered = async {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))?
                .connect()
                .await?;
            HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await?;
            anyhow::Ok(())
        }
        .await;
        if answered.is_ok() {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "a new client never got a slot: {answered:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await
}
