//! TLS: a gateway serving rustls TLS from PEM files, and the CLI's client connecting with a
//! private CA file.

use std::{path::Path, process::Command};

use llm_jobs::{cli::client::Connection, proto::v1};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{PATIENCE, TestApp, request};

/// A throwaway CA and a server certificate for `localhost` and 127.0.0.1 signed by it.
fn certificates(dir: &Path) -> anyhow::Result<()> {
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=llm-jobs test CA",
        ],
    ]
    .concat())?;
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    ]
    .concat())?;
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ])
}

/// Tests about Redis or Postgres themselves, or about processes sharing them: the embedded
/// pass filters them out by name (`-- --skip ::servers::`, as `scripts/test` does).
mod servers {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tls_gateway_serves_clients_that_trust_its_ca() -> anyhow::Result<()> {
        crate::support::needs_servers(
            "a server process beside the test's own on one store; the embedded mode allows one \
         server per store",
        );
        let app = TestApp::builder().start().await?;
        let dir = std::env::temp_dir().join(format!("llm-jobs-tls-{}", app.prefix));
        std::fs::create_dir_all(&dir)?;
        certificates(&dir)?;
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let (_gateway, addr) = app.spawn_gateway_process(&[
            "--tls-cert",
            &path("server.pem"),
            "--tls-key",
            &path("server.key"),
        ])?;
        let port = addr.rsplit(':').next().unwrap_or_default().to_owned();
        let connection = Connection {
            server: format!("https://localhost:{port}"),
            api_key: Some(SecretString::from(app.key.clone())),
            ca_file: Some(dir.join("ca.pem")),
            tls_domain: None,
        };
        // Round trip once the gateway answers.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let job = loop {
            let attempt = async {
                let mut c =
                    v1::job_service_client::JobServiceClient::new(connection.channel().await?);
                Ok::<_, anyhow::Error>(c.submit_job(request("over TLS", "sim")).await?.into_inner())
            };
            match attempt.await {
                Ok(r) => break r.job.expect("job"),
                Err(e) => {
                    anyhow::ensure!(
                        tokio::time::Instant::now() < deadline,
                        "no TLS round trip: {e:#}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        };
        app.wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
        // The CLI client over TLS.
        let out = Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
            .args([
                "status",
                &job.id,
                "--server",
                &connection.server,
                "--ca-file",
                &path("ca.pem"),
            ])
            .env("LLMJOBS_API_KEY", &app.key)
            .output()?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout)
                .to_lowercase()
                .contains("completed")
        );
        // A scheme in capitals is still https; a CA file with http:// is refused (the key
        // would go out in plaintext).
        for (scheme, ok) in [("HTTPS", true), ("http", false)] {
            let out = Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
                .args(["status", &job.id, "--ca-file", &path("ca.pem"), "--server"])
                .arg(format!("{scheme}://localhost:{port}"))
                .env("LLMJOBS_API_KEY", &app.key)
                .output()?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.success(), ok, "{scheme}: {stderr}");
            assert!(
                ok || stderr.contains("--ca-file needs an https:// server URL"),
                "{stderr}"
            );
        }
        // A plaintext client gets nowhere.
        let plain = Connection {
            server: format!("http://{addr}"),
            ca_file: None,
            ..connection.clone()
        };
        let refused = async {
            let mut c = v1::job_service_client::JobServiceClient::new(plain.channel().await?);
            Ok::<_, anyhow::Error>(
                c.get_job(v1::GetJobRequest {
                    job_id: job.id.clone(),
                })
                .await?,
            )
        }
        .await;
        assert!(refused.is_err(), "plaintext must not work against TLS");
        // ... and is told so: the refused handshake's alert reaches it before the connection
        // closes (a TLS record of type 21, alert), although the connection is dropped without
        // a flush.
        let mut socket = tokio::net::TcpStream::connect(&addr).await?;
        socket
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        tokio::time::timeout(PATIENCE, socket.read_to_end(&mut answer)).await??;
        assert_eq!(answer.first(), Some(&21), "a TLS alert: {answer:?}");
        std::fs::remove_dir_all(&dir)?;
        app.stop().await
    }
}
