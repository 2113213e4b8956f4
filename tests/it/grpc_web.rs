//! grpc-web over plain HTTP/1.1 (what browsers speak), CORS, JSON encodings refused with a
//! status clients can read, and the health service.

use std::time::Duration;

use llm_jobs::proto::v1;
use prost::Message;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::support::{PATIENCE, TestApp, request};

/// A grpc-web request body: one uncompressed data frame.
fn frame(msg: &impl Message) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Splits a grpc-web response body into data frames and the trailer text.
fn unframe(mut body: &[u8]) -> (Vec<Vec<u8>>, String) {
    let (mut data, mut trailers) = (Vec::new(), String::new());
    while body.len() >= 5 {
        let flag = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let payload = &body[5..5 + len];
        if flag & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(payload));
        } else {
            data.push(payload.to_vec());
        }
        body = &body[5 + len..];
    }
    (data, trailers)
}

/// A response header's value, as text.
fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn grpc_web(
    app: &TestApp,
    method: &str,
    body: Vec<u8>,
) -> anyhow::Result<(Vec<Vec<u8>>, String)> {
    let http = reqwest::Client::builder().http1_only().build()?;
    let resp = http
        .post(format!(
            "http://{}/llmjobs.v1.JobService/{method}",
            app.addr
        ))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("origin", "https://app.example")
        .header("authorization", format!("Bearer {}", app.key))
        .body(body)
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "HTTP {}", resp.status());
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(
        resp.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://app.example")
    );
    let exposed = resp
        .headers()
        .get("access-control-expose-headers")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_lowercase();
    for header in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        assert!(exposed.contains(header), "exposes {header}: {exposed}");
    }
    // A trailers-only response (an error before any message) carries the status as headers.
    let header_status: String = ["grpc-status", "grpc-status-details-bin"]
        .iter()
        .filter_map(|h| {
            resp.headers()
                .get(*h)
                .map(|v| format!("{h}:{}\r\n", v.to_str().unwrap_or("")))
        })
        .collect();
    let bytes = resp.bytes().await?;
    let (data, trailers) = unframe(&bytes);
    Ok((data, trailers + header_status.as_str()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_server_streaming_calls_work_over_http1() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let (data, trailers) =
        grpc_web(&app, "SubmitJob", frame(&request("from a browser", "sim"))).await?;
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let job = v1::SubmitJobResponse::decode(&data[0][..])?
        .job
        .expect("job");

    let (data, trailers) = grpc_web(
        &app,
        "StreamJob",
        frame(&v1::StreamJobRequest {
            job_id: job.id.clone(),
            after_sequence: 0,
        }),
    )
    .await?;
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let events: Vec<v1::JobEvent> = data
        .iter()
        .map(|d| v1::JobEvent::decode(&d[..]))
        .collect::<Result<_, _>>()?;
    crate::support::assert_well_formed(&events, 0);
    let result = app.result(&job.id).await?;
    assert_eq!(crate::support::text_of(&events), result.content);

    // Errors travel in the trailers, with the BadRequest detail.
    let (_, trailers) = grpc_web(&app, "SubmitJob", frame(&request("", "sim"))).await?;
    assert!(trailers.contains("grpc-status:3"), "{trailers}");
    assert!(trailers.contains("grpc-status-details-bin"), "{trailers}");
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_allows_grpc_web_headers() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let resp = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("http://{}/llmjobs.v1.JobService/GetJob", app.addr),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,x-grpc-web,grpc-timeout,content-type",
        )
        .send()
        .await?;
    assert!(resp.status().is_success(), "{}", resp.status());
    let h = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_lowercase()
    };
    for header in ["authorization", "x-grpc-web", "grpc-timeout"] {
        assert!(
            h("access-control-allow-headers").contains(header),
            "allows {header}"
        );
    }
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_while_redis_and_postgres_answer() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))?
        .connect()
        .await?;
    let mut health = HealthClient::new(channel);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for service in [
        "",
        "llmjobs.v1.JobService",
        "llmjobs.v1.BatchService",
        "llmjobs.v1.QueueAdminService",
    ] {
        loop {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await?
                .into_inner()
                .status();
            if status == ServingStatus::Serving {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{service:?} never SERVING"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await;
    assert_eq!(
        unknown.expect_err("unknown service").code(),
        tonic::Code::NotFound
    );
    app.stop().await
}

/// The `access-control-allow-origin` a CORS preflight from `origin` gets (`None`: refused).
async fn preflight_allows(app: &TestApp, origin: &str) -> anyhow::Result<Option<String>> {
    let resp = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("http://{}/llmjobs.v1.JobService/ListJobs", app.addr),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,x-grpc-web,content-type",
        )
        .send()
        .await?;
    Ok(resp
        .headers()
        .get("access-control-allow-origin")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auth_only_loopback_pages_may_call() -> anyhow::Result<()> {
    // Every caller is an admin here: a web site the developer visits must not be one.
    let app = TestApp::builder()
        .flag("--insecure-no-auth")
        .start()
        .await?;
    for origin in ["https://evil.example", "http://localhost.evil.example"] {
        assert_eq!(preflight_allows(&app, origin).await?, None, "{origin}");
    }
    for origin in [
        "http://localhost:5173",
        "http://127.0.0.1:8080",
        "http://[::1]:3000",
    ] {
        assert_eq!(
            preflight_allows(&app, origin).await?.as_deref(),
            Some(origin)
        );
    }
    // A grpc-web call from elsewhere is answered without the header browsers need to read it.
    let resp = reqwest::Client::builder()
        .http1_only()
        .build()?
        .post(format!(
            "http://{}/llmjobs.v1.JobService/ListJobs",
            app.addr
        ))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("origin", "https://evil.example")
        .body(frame(&v1::ListJobsRequest::default()))
        .send()
        .await?;
    assert!(
        resp.headers().get("access-control-allow-origin").is_none(),
        "{:?}",
        resp.headers()
    );
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_configured_origins_may_call() -> anyhow::Result<()> {
    let app = TestApp::builder()
        .arg(
            "--cors-allowed-origins",
            "https://app.example, https://Admin.Example/",
        )
        .start()
        .await?;
    for (origin, allowed) in [
        ("https://app.example", true),
        ("https://admin.example", true),
        ("https://other.example", false),
        ("http://app.example", false),
        ("http://localhost:5173", false),
    ] {
        let got = preflight_allows(&app, origin).await?;
        assert_eq!(got.as_deref(), allowed.then_some(origin), "{origin}");
    }
    app.stop().await
}

/// A `POST` that is not a gRPC or grpc-web call (a browser sends `text/plain` and form posts
/// to any origin without asking first) is refused with HTTP 415 before any service sees it,
/// even with a valid gRPC frame and key, so a web page cannot make a browser submit jobs to a
/// server running without authentication. No job is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_that_is_not_a_grpc_call_is_refused_and_makes_no_job() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let url = format!("http://{}/llmjobs.v1.JobService/SubmitJob", app.addr);
    let frame = frame(&v1::SubmitJobRequest {
        prompt: "sent by a web page".into(),
        ..Default::default()
    });
    let http2 = reqwest::Client::builder().http2_prior_knowledge().build()?;
    for content_type in [
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut post = http2
            .post(&url)
            .header("te", "trailers")
            .header("origin", "https://evil.example")
            .header("authorization", format!("Bearer {}", app.key))
            .body(frame.clone());
        if let Some(content_type) = content_type {
            post = post.header("content-type", content_type);
        }
        let resp = post.send().await?;
        assert_eq!(resp.status(), 415, "{content_type:?}");
        assert!(
            resp.headers().get("grpc-status").is_none(),
            "{content_type:?}"
        );
    }
    // The same frame as a gRPC call is served: the refusals were about the content type.
    let resp = http2
        .post(&url)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {}", app.key))
        .body(frame)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let jobs = app
        .client
        .clone()
        .list_jobs(v1::ListJobsRequest::default())
        .await?
        .into_inner()
        .jobs;
    assert_eq!(jobs.len(), 1, "only the gRPC call made a job");
    app.stop().await
}

/// A gRPC or grpc-web request in JSON gets UNIMPLEMENTED as a trailers-only response a
/// client can read (HTTP 200, `grpc-status: 12`, a message naming what is served), with the
/// CORS headers a page needs to read it; tonic-web alone answered HTTP 400 with no status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_encodings_get_unimplemented_with_a_readable_status() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let url = format!("http://{}/llmjobs.v1.JobService/SubmitJob", app.addr);
    let http1 = reqwest::Client::builder().http1_only().build()?;
    let http2 = reqwest::Client::builder().http2_prior_knowledge().build()?;
    for (client, content_type, answered) in [
        (
            &http1,
            "application/grpc-web+json",
            "application/grpc-web+proto",
        ),
        (
            &http1,
            "application/grpc-web-text+json; charset=utf-8",
            "application/grpc-web-text+proto",
        ),
        (&http2, "application/grpc+json", "application/grpc+proto"),
    ] {
        let resp = client
            .post(&url)
            .header("content-type", content_type)
            .header("x-grpc-web", "1")
            .header("te", "trailers")
            .header("origin", "https://app.example")
            .header("authorization", format!("Bearer {}", app.key))
            .body(r#"{"prompt": "in JSON", "generationConfig": {"model": "sim"}}"#)
            .send()
            .await?;
        let header = |name: &str| header(&resp, name);
        assert_eq!(resp.status(), 200, "{content_type}");
        assert_eq!(
            header("grpc-status").as_deref(),
            Some("12"),
            "{content_type}"
        );
        assert_eq!(header("content-type").as_deref(), Some(answered));
        let message = header("grpc-message")
            .unwrap_or_default()
            .replace("%20", " ");
        assert!(
            message.contains("only protobuf-encoded messages are served")
                && message.contains("application/grpc-web+proto"),
            "{content_type}: {message}"
        );
        assert_eq!(
            header("access-control-allow-origin").as_deref(),
            Some("https://app.example"),
            "{content_type}"
        );
        assert!(resp.bytes().await?.is_empty(), "trailers-only: no body");
    }
    // Nothing was submitted.
    let page = app
        .client
        .clone()
        .list_jobs(v1::ListJobsRequest::default())
        .await?
        .into_inner();
    assert!(page.jobs.is_empty(), "{page:?}");
    // Protobuf grpc-web still works beside it.
    let (_, trailers) = grpc_web(&app, "SubmitJob", frame(&request("in protobuf", "sim"))).await?;
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    app.stop().await
}

/// A `SubmitJob` of a `sim` job sent as `content_type` with a `grpc-timeout` header per entry
/// of `timeouts`.
async fn timed_submit(
    client: &reqwest::Client,
    app: &TestApp,
    content_type: &str,
    timeouts: &[&str],
) -> reqwest::Result<reqwest::Response> {
    let mut call = client
        .post(format!(
            "http://{}/llmjobs.v1.JobService/SubmitJob",
            app.addr
        ))
        .header("content-type", content_type)
        .header("te", "trailers")
        .header("authorization", format!("Bearer {}", app.key));
    for timeout in timeouts {
        call = call.header("grpc-timeout", *timeout);
    }
    call.body(frame(&request("timed", "sim"))).send().await
}

/// A call with a malformed `grpc-timeout` is refused INVALID_ARGUMENT naming the header, over
/// gRPC and grpc-web alike, and makes no job: tonic alone ignored the header and ran the call
/// with no deadline. So is one with the header twice; a well-formed one is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_grpc_timeout_is_refused_naming_the_header() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let http1 = reqwest::Client::builder().http1_only().build()?;
    let http2 = reqwest::Client::builder().http2_prior_knowledge().build()?;
    let (grpc, web) = ("application/grpc", "application/grpc-web+proto");
    for (client, content_type, timeouts, says) in [
        (&http2, grpc, &["10x"][..], r#"malformed header "10x""#),
        (
            &http2,
            grpc,
            &["123456789m"],
            r#"malformed header "123456789m""#,
        ),
        (&http1, web, &["-5S"], r#"malformed header "-5S""#),
        // Which deadline was meant is a guess, even when both are valid.
        (&http2, grpc, &["1S", "abc"], "given 2 times"),
        (&http2, grpc, &["1S", "2S"], "given 2 times"),
    ] {
        let resp = timed_submit(client, &app, content_type, timeouts).await?;
        assert_eq!(resp.status(), 200, "{timeouts:?}");
        assert_eq!(header(&resp, "content-type").as_deref(), Some(content_type));
        let status = tonic::Status::from_header_map(resp.headers()).expect("a status");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(says), "{status:?}");
        let bad_request = tonic_types::StatusExt::get_details_bad_request(&status);
        assert_eq!(
            bad_request.map(|b| b.field_violations[0].field.clone()),
            Some("grpc-timeout".to_owned()),
            "{status:?}"
        );
        assert!(resp.bytes().await?.is_empty(), "trailers-only: no body");
    }
    for (client, content_type) in [(&http2, grpc), (&http1, web)] {
        let resp = timed_submit(client, &app, content_type, &["30S"]).await?;
        // Served: the status comes in the trailers, after the job.
        assert_eq!(header(&resp, "grpc-status"), None, "{content_type}");
        assert!(!resp.bytes().await?.is_empty(), "{content_type}: a job");
    }
    // Only the two well-formed calls made jobs.
    let page = app
        .client
        .clone()
        .list_jobs(v1::ListJobsRequest::default())
        .await?
        .into_inner();
    assert_eq!(page.jobs.len(), 2, "{page:?}");
    app.stop().await
}
