//! The web dashboard on the gRPC port: the page and its assets with their security and caching
//! headers, 404 for other paths, and gRPC still served beside them; and the page itself driven
//! in Debian's headless Chromium (`web/test/driver.mjs`, playwright-core) against a running
//! service and a scripted upstream.

use llm_jobs::{proto::v1, server::dashboard::CONTENT_SECURITY_POLICY};

use crate::support::{TestApp, request};

async fn get(
    app: &TestApp,
    path: &str,
    if_none_match: Option<&str>,
) -> anyhow::Result<reqwest::Response> {
    let mut req = reqwest::Client::builder()
        .http1_only()
        .build()?
        .get(format!("http://{}{path}", app.addr));
    if let Some(tag) = if_none_match {
        req = req.header("if-none-match", tag);
    }
    Ok(req.send().await?)
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_assets_are_served_on_the_grpc_port_with_a_strict_policy()
-> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;

    let page = get(&app, "/", None).await?;
    assert_eq!(page.status(), 200);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    assert_eq!(
        header(&page, "content-security-policy"),
        CONTENT_SECURITY_POLICY
    );
    assert!(CONTENT_SECURITY_POLICY.contains("default-src 'none'"));
    assert!(CONTENT_SECURITY_POLICY.contains("script-src 'self'"));
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    let etag = header(&page, "etag");
    assert!(
        etag.starts_with('"') && etag.len() > 2,
        "a strong ETag: {etag}"
    );
    let html = page.text().await?;
    assert!(html.contains(r#"<script type="module" src="/assets/app.js"></script>"#));
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "nothing inline"
    );

    for (path, content_type) in [
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/app.css", "text/css; charset=utf-8"),
    ] {
        let asset = get(&app, path, None).await?;
        assert_eq!(asset.status(), 200, "{path}");
        assert_eq!(header(&asset, "content-type"), content_type, "{path}");
        assert_eq!(header(&asset, "x-content-type-options"), "nosniff");
        assert_ne!(header(&asset, "etag"), etag, "each file has its own ETag");
        assert!(!asset.bytes().await?.is_empty());
    }

    // A browser that has the page revalidates it: 304, no body.
    let again = get(&app, "/", Some(&etag)).await?;
    assert_eq!(again.status(), 304);
    assert_eq!(header(&again, "etag"), etag);
    assert!(again.bytes().await?.is_empty());
    let stale = get(&app, "/", Some("\"something-else\"")).await?;
    assert_eq!(stale.status(), 200);

    for path in [
        "/nope",
        "/assets/nope.js",
        "/index.html",
        "/llmjobs.v1.JobService/GetJob",
    ] {
        let missing = get(&app, path, None).await?;
        assert_eq!(missing.status(), 404, "{path}");
        assert_eq!(
            header(&missing, "content-security-policy"),
            CONTENT_SECURITY_POLICY
        );
    }

    // gRPC on the same port, unchanged.
    let job = app.submit(request("hello", "sim")).await?;
    let done = app
        .wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Completed)
        .await?;
    assert_eq!(done.id, job.id);
    app.stop().await
}

/// Run once, in the pass on Redis and Postgres: a browser run is slow and the page does not
/// depend on the backend (the tests above run on both).
mod servers {
    use std::{path::Path, process::Stdio, time::Duration};

    use anyhow::Context;
    use llm_jobs::{auth::Role, proto::v1};
    use serde_json::Value;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    use crate::support::{
        TestApp,
        proxy::Proxy,
        request,
        upstream::{Reply, TestUpstream},
    };

    /// How long the driver may take for one step (it has its own 30 s waits inside).
    const STEP: Duration = Duration::from_secs(120);

    /// Where the browser and the driver's packages must be; a missing one fails the test
    /// with what to install (it never passes without a browser).
    fn browser_setup() -> (String, String) {
        let chromium =
            std::env::var("LLMJOBS_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(
            Path::new(&chromium).exists(),
            "the dashboard test needs headless Chromium at {chromium}: install Debian's \
             package (`apt-get install -y chromium`, which scripts/test does as root) or set \
             LLMJOBS_TEST_CHROMIUM"
        );
        let web = concat!(env!("CARGO_MANIFEST_DIR"), "/web").to_owned();
        assert!(
            Path::new(&web)
                .join("node_modules/playwright-core")
                .exists(),
            "the dashboard test needs web/node_modules: run `npm ci` in web/ (scripts/test \
             does when it is missing)"
        );
        (chromium, web)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_separate_gateway_serves_the_page_and_logs_its_url() -> anyhow::Result<()> {
        crate::support::needs_servers("starts an `llm-jobs gateway` beside the test's server");
        let app = TestApp::builder().start().await?;
        let (mut gateway, addr) =
            app.spawn_server_process("gateway", &[], "info", Stdio::piped())?;
        let stderr = gateway.0.stderr.take().context("gateway stderr")?;
        let wanted = format!("url=http://{addr}/");
        let logged = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
                .find(|line| line.contains("dashboard"))
        });
        let line = tokio::time::timeout(STEP, logged)
            .await??
            .context("the gateway never logged the dashboard")?;
        assert!(line.contains(&wanted), "{line}");
        crate::support::connect_when_healthy(&addr).await?;
        let page = reqwest::get(format!("http://{addr}/")).await?;
        assert_eq!(page.status(), 200);
        assert!(page.text().await?.contains("/assets/app.js"));
        drop(gateway);
        app.stop().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_chromium_the_dashboard_follows_queues_and_streams_and_its_controls_work()
    -> anyhow::Result<()> {
        let (chromium, web) = browser_setup();
        let upstream = TestUpstream::start(Reply::fixture("basic.sse")).await?;
        let (streamed_reply, release) = Reply::held_end(20);
        upstream.route("streamed", streamed_reply);
        let (held_reply, _never) = Reply::held_start(10, 10);
        upstream.route("held", held_reply);
        upstream.route(
            "broken",
            Reply::raw(
                400,
                Some("application/json"),
                r#"{"error":{"message":"unsupported parameter","type":"invalid_request_error"}}"#,
            ),
        );
        let app = TestApp::builder()
            .upstream(upstream.base_url())
            .max_attempts(1)
            .start()
            .await?;
        let user_key = app.key_for("someone-else", Role::User).await?;
        let expected: String = (0..20).map(|i| format!("tok{i} ")).collect();
        // The browser reaches the service through a proxy the test cuts to break its streams.
        let proxy = Proxy::start(&app.addr.to_string()).await?;

        let mut driver = tokio::process::Command::new("node")
            .arg("test/driver.mjs")
            .current_dir(&web)
            .env("DASHBOARD_URL", format!("http://{}/", proxy.addr))
            .env("OPERATOR_KEY", &app.key)
            .env("USER_KEY", &user_key)
            .env("EXPECTED_TEXT", &expected)
            .env("CHROMIUM", &chromium)
            .env(
                "SCREENSHOTS",
                std::env::var("LLMJOBS_DASHBOARD_SCREENSHOTS").unwrap_or_default(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot run `node` (Node.js is needed for the dashboard test)")?;
        let mut to_driver = driver.stdin.take().context("driver stdin")?;
        let mut from_driver =
            BufReader::new(driver.stdout.take().context("driver stdout")?).lines();

        let (mut streamed, mut held, mut failed) = (String::new(), String::new(), String::new());
        let mut seen = Vec::new();
        loop {
            let line = tokio::time::timeout(STEP, from_driver.next_line())
                .await
                .with_context(|| format!("the driver is stuck after {seen:?}"))??
                .with_context(|| format!("the driver ended after {seen:?}"))?;
            let msg: Value = serde_json::from_str(&line)
                .with_context(|| format!("the driver printed {line:?}"))?;
            if let Some(error) = msg.get("error") {
                anyhow::bail!(
                    "the page failed after {seen:?}: {}",
                    error.as_str().unwrap_or("")
                );
            }
            let step = msg["step"].as_str().unwrap_or_default().to_owned();
            let answer = match step.as_str() {
                "submit-streamed" => {
                    streamed = app.submit(request("stream it", "streamed")).await?.id;
                    Some(streamed.clone())
                }
                "cut" => {
                    proxy.cut();
                    Some("ok".to_owned())
                }
                "restore" => {
                    proxy.restore();
                    Some("ok".to_owned())
                }
                "release-streamed" => {
                    release.add_permits(1);
                    Some("ok".to_owned())
                }
                "submit-held" => {
                    held = app.submit(request("hold it", "held")).await?.id;
                    Some(held.clone())
                }
                "submit-failed" => {
                    failed = app.submit(request("break it", "broken")).await?.id;
                    app.wait_for_job(&failed, |j| j.status() == v1::JobStatus::Failed)
                        .await?;
                    Some(failed.clone())
                }
                _ => None,
            };
            if let Some(answer) = answer {
                to_driver
                    .write_all(format!("{answer}\n").as_bytes())
                    .await?;
                to_driver.flush().await?;
            }
            seen.push(step.clone());
            if step == "done" {
                break;
            }
        }
        let status = tokio::time::timeout(STEP, driver.wait()).await??;
        assert!(status.success(), "driver exit: {status}");
        assert_eq!(
            seen,
            [
                "overview",
                "submit-streamed",
                "overview-updated",
                "tokens-live",
                "cut",
                "restore",
                "resumed",
                "release-streamed",
                "completed",
                "submit-held",
                "cancelled",
                "submit-failed",
                "retried",
                "user",
                "done"
            ]
        );

        // What the page did, as the service saw it.
        let done = app
            .wait_for_job(&streamed, |j| j.status() == v1::JobStatus::Completed)
            .await?;
        assert_eq!(app.result(&done.id).await?.content, expected);
        app.wait_for_job(&held, |j| j.status() == v1::JobStatus::Cancelled)
            .await?;
        let retried = app
            .wait_for_job(&failed, |j| {
                j.attempts == 2 && j.status() == v1::JobStatus::Failed
            })
            .await?;
        assert_eq!(retried.attempts, 2, "the retry from the page ran it again");
        assert_eq!(upstream.requests_for("broken").len(), 2);
        app.stop().await
    }
}
