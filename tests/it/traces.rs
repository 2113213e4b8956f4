//! One trace from the client's call through the queue to the upstream, as an OTLP collector
//! sees it: the submit span continues the caller's `traceparent`, the attempt span descends
//! from it, the upstream `chat {model}` span carries the GenAI attributes, and the upstream
//! received a `traceparent` of that trace. A malformed `traceparent` never fails a call.
//!
//! The collector is a tonic server implementing OTLP's `TraceService` inside this test
//! process. The in-process servers export to it through this process's global subscriber,
//! installed once by [`collector`]; processes started by a test export to it through
//! `OTEL_EXPORTER_OTLP_ENDPOINT`.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use anyhow::Context as _;
use llm_jobs::{
    cli::client::Channel,
    proto::v1::{self, job_service_client::JobServiceClient},
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{KeyValue, any_value::Value},
    trace::v1::Span,
};

use crate::support::{
    PATIENCE, TestApp, request,
    upstream::{Reply, TestUpstream},
};

/// How long a finished span waits before export, in the servers these tests run.
const EXPORT_DELAY: Duration = Duration::from_millis(50);

/// One span as received, with the `service.name` of the process that sent it.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    span: Span,
}

impl Received {
    fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    /// The attribute `key` as text (strings as they are, numbers in decimal).
    fn attr(&self, key: &str) -> Option<String> {
        attr(&self.span.attributes, key)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match value.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// The spans of the traces the tests watch that an OTLP collector received. (Every server
/// in this process exports to it: the other traces are dropped.)
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
    watched: Arc<Mutex<HashSet<Vec<u8>>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let watched = self.watched.lock().expect("collector lock").clone();
        let mut spans = self.spans.lock().expect("collector lock");
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| attr(&r.attributes, "service.name"))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(
                    scope
                        .spans
                        .into_iter()
                        .filter(|span| watched.contains(&span.trace_id))
                        .map(|span| Received {
                            service: service.clone(),
                            span,
                        }),
                );
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// A fresh W3C `traceparent` (sampled) whose trace this collector keeps, and its trace
    /// and span ids.
    fn new_trace(&self) -> (String, String, String) {
        let trace = uuid::Uuid::new_v4();
        self.watched
            .lock()
            .expect("collector lock")
            .insert(trace.as_bytes().to_vec());
        let trace_id = trace.simple().to_string();
        let span_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
        (format!("00-{trace_id}-{span_id}-01"), trace_id, span_id)
    }

    /// The spans of trace `trace_id` received so far.
    fn trace(&self, trace_id: &str) -> Vec<Received> {
        self.spans
            .lock()
            .expect("collector lock")
            .iter()
            .filter(|s| s.trace_id() == trace_id)
            .cloned()
            .collect()
    }

    /// Waits until trace `trace_id` has a span named each of `names`; returns the trace.
    async fn wait_for(&self, trace_id: &str, names: &[&str]) -> anyhow::Result<Vec<Received>> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let trace = self.trace(trace_id);
            if names
                .iter()
                .all(|n| trace.iter().any(|s| s.span.name == *n))
            {
                return Ok(trace);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "trace {trace_id} never had {names:?}; it has {:?}",
                trace.iter().map(|s| &s.span.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The collector of this test process, and its OTLP endpoint (`http://127.0.0.1:port`).
/// The first call starts it on a runtime of its own (it outlives every test's runtime) and
/// installs this process's global subscriber exporting spans to it, without log lines.
fn collector() -> &'static (Collector, String) {
    static COLLECTOR: OnceLock<(Collector, String)> = OnceLock::new();
    COLLECTOR.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a runtime for the collector");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind the collector");
                let endpoint = format!("http://{}", listener.local_addr().expect("its address"));
                let collector = Collector::default();
                let server = tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(collector.clone()))
                    .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
                let telemetry = llm_jobs::telemetry::init(&llm_jobs::telemetry::Config {
                    log_format: Default::default(),
                    logs: false,
                    otlp_endpoint: Some(endpoint.clone()),
                    export_delay: Some(EXPORT_DELAY),
                })
                .expect("telemetry");
                tx.send((collector, endpoint)).expect("the test waits");
                let _ = server.await;
                drop(telemetry);
            });
        });
        rx.recv().expect("the collector started")
    })
}

/// `req` sent with metadata `headers`.
fn with_headers<T>(req: T, headers: &[(&'static str, &str)]) -> anyhow::Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(req);
    for (name, value) in headers {
        r.metadata_mut().insert(*name, value.parse()?);
    }
    Ok(r)
}

/// Submits `prompt` for `model` through `client` with metadata `headers`, and waits until the
/// job completed.
async fn run_job(
    app: &TestApp,
    client: &mut JobServiceClient<Channel>,
    prompt: &str,
    model: &str,
    headers: &[(&'static str, &str)],
) -> anyhow::Result<v1::Job> {
    let job = client
        .submit_job(with_headers(request(prompt, model), headers)?)
        .await?
        .into_inner()
        .job
        .context("a job")?;
    app.wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Completed)
        .await?;
    Ok(job)
}

/// The span named `name` in `trace`.
fn named<'a>(trace: &'a [Received], name: &str) -> anyhow::Result<&'a Received> {
    trace
        .iter()
        .find(|s| s.span.name == name)
        .with_context(|| format!("no {name} span"))
}

/// Whether `ancestor` is `span`'s parent, or its parent's, and so on within `trace`.
fn descends(trace: &[Received], span: &Received, ancestor: &Received) -> bool {
    let by_id: HashMap<String, &Received> = trace.iter().map(|s| (s.span_id(), s)).collect();
    let mut at = span;
    for _ in 0..trace.len() {
        if at.parent_id() == ancestor.span_id() {
            return true;
        }
        match by_id.get(&at.parent_id()) {
            Some(parent) => at = parent,
            None => return false,
        }
    }
    false
}

/// Checks one completed job's trace as the collector received it: the submit span is the
/// caller's child, the attempt descends from it, the upstream call is the attempt's child
/// with the GenAI attributes and no prompt text, and the upstream saw the call's
/// `traceparent`. Returns the trace.
async fn check_job_trace(
    collector: &Collector,
    upstream: &TestUpstream,
    (trace_id, client_span): (&str, &str),
    prompt: &str,
) -> anyhow::Result<Vec<Received>> {
    let submit_name = "llmjobs.v1.JobService/SubmitJob";
    let trace = collector
        .wait_for(trace_id, &[submit_name, "job.attempt", "chat gpt-4o-mini"])
        .await?;
    let submit = named(&trace, submit_name)?;
    let attempt = named(&trace, "job.attempt")?;
    let chat = named(&trace, "chat gpt-4o-mini")?;
    assert_eq!(
        submit.parent_id(),
        client_span,
        "the submit span is the caller's child"
    );
    assert!(
        descends(&trace, attempt, submit),
        "the attempt descends from the submit span: {trace:#?}"
    );
    assert_eq!(chat.parent_id(), attempt.span_id());
    for (key, want) in [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "openai"),
        ("gen_ai.request.model", "gpt-4o-mini"),
        ("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
        ("gen_ai.usage.input_tokens", "19"),
        ("gen_ai.usage.output_tokens", "11"),
    ] {
        assert_eq!(chat.attr(key).as_deref(), Some(want), "{key}");
    }
    assert_eq!(chat.attr("error.type"), None);
    // Client kind (OTLP's SPAN_KIND_CLIENT is 3).
    assert_eq!(chat.span.kind, 3);
    for s in &trace {
        let texts = format!("{:?}", s.span);
        assert!(!texts.contains(prompt), "{} holds the prompt", s.span.name);
    }
    let seen = upstream
        .requests()
        .into_iter()
        .filter_map(|r| r.header("traceparent").map(str::to_owned))
        .find(|t| t.contains(trace_id))
        .context("the upstream saw no traceparent of the trace")?;
    assert_eq!(
        seen,
        format!("00-{trace_id}-{}-01", chat.span_id()),
        "the upstream request's parent is the chat span"
    );
    Ok(trace)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_is_one_trace_from_the_call_to_the_upstream() -> anyhow::Result<()> {
    let (collector, _) = collector();
    let upstream = TestUpstream::start(Reply::fixture("with-usage.sse")).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let (parent, trace_id, client_span) = collector.new_trace();
    let prompt = "describe the walled garden behind the old mill";
    let mut client = app.client.clone();
    let job = run_job(
        &app,
        &mut client,
        prompt,
        "gpt-4o-mini",
        &[("traceparent", &parent), ("tracestate", "vendor=1")],
    )
    .await?;
    let trace = check_job_trace(collector, &upstream, (&trace_id, &client_span), prompt).await?;
    let attempt = named(&trace, "job.attempt")?;
    assert_eq!(attempt.attr("job_id").as_deref(), Some(job.id.as_str()));
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_or_oversized_traceparent_is_ignored_and_the_job_runs() -> anyhow::Result<()> {
    let (collector, _) = collector();
    let upstream = TestUpstream::start(Reply::fixture("with-usage.sse")).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let (valid, trace_id, _) = collector.new_trace();
    let oversized = format!("{valid}{}", "-0".repeat(300));
    let mut client = app.client.clone();
    for bad in ["not-a-traceparent", "00-zz-yy-01", oversized.as_str()] {
        run_job(
            &app,
            &mut client,
            "hello",
            "gpt-4o-mini",
            &[("traceparent", bad), ("tracestate", "=broken=")],
        )
        .await?;
    }
    // The oversized header named a valid trace: nothing of it was continued.
    let (_, mark_trace, mark_span) = collector.new_trace();
    run_job(
        &app,
        &mut client,
        "hello",
        "gpt-4o-mini",
        &[("traceparent", &format!("00-{mark_trace}-{mark_span}-01"))],
    )
    .await?;
    // Spans go out in order of their end: once the last job's are in, the others' are too.
    collector
        .wait_for(&mark_trace, &["job.attempt", "chat gpt-4o-mini"])
        .await?;
    assert!(collector.trace(&trace_id).is_empty());
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_s_jobs_continue_the_submit_batch_trace() -> anyhow::Result<()> {
    let (collector, _) = collector();
    let upstream = TestUpstream::start(Reply::fixture("with-usage.sse")).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let (parent, trace_id, client_span) = collector.new_trace();
    let batch = app
        .batch_client()?
        .submit_batch(with_headers(
            v1::SubmitBatchRequest {
                requests: vec![request("one", "gpt-4o-mini"), request("two", "gpt-4o-mini")],
                ..Default::default()
            },
            &[("traceparent", &parent)],
        )?)
        .await?
        .into_inner();
    for id in &batch.job_ids {
        app.wait_for_job(id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
    }
    let submit_name = "llmjobs.v1.BatchService/SubmitBatch";
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let trace = loop {
        let trace = collector.wait_for(&trace_id, &[submit_name]).await?;
        let attempts = trace
            .iter()
            .filter(|s| s.span.name == "job.attempt")
            .count();
        if attempts == 2 {
            break trace;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{attempts} attempts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let submit = named(&trace, submit_name)?;
    assert_eq!(submit.parent_id(), client_span);
    for attempt in trace.iter().filter(|s| s.span.name == "job.attempt") {
        assert!(descends(&trace, attempt, submit));
    }
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_web_call_continues_the_browser_s_trace() -> anyhow::Result<()> {
    use prost::Message;
    let (collector, _) = collector();
    let app = TestApp::builder().start().await?;
    let (parent, trace_id, client_span) = collector.new_trace();
    let body = request("from a browser", "sim").encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(body.len())?.to_be_bytes());
    framed.extend_from_slice(&body);
    let response = reqwest::Client::builder()
        .http1_only()
        .build()?
        .post(format!(
            "http://{}/llmjobs.v1.JobService/SubmitJob",
            app.addr
        ))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("authorization", format!("Bearer {}", app.key))
        .header("traceparent", &parent)
        .body(framed)
        .send()
        .await?;
    anyhow::ensure!(response.status() == 200, "HTTP {}", response.status());
    let trace = collector
        .wait_for(&trace_id, &["llmjobs.v1.JobService/SubmitJob", "chat sim"])
        .await?;
    let submit = named(&trace, "llmjobs.v1.JobService/SubmitJob")?;
    assert_eq!(submit.parent_id(), client_span);
    assert_eq!(
        named(&trace, "chat sim")?
            .attr("gen_ai.provider.name")
            .as_deref(),
        Some("sim")
    );
    app.stop().await
}

/// Tests with a gateway process and a worker process sharing Redis.
mod servers {
    use super::*;
    use crate::support::{connect_when_healthy, needs_worker_processes, with_key};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_trace_crosses_redis_from_a_gateway_process_to_a_worker_process()
    -> anyhow::Result<()> {
        needs_worker_processes();
        let (collector, endpoint) = collector();
        let upstream = TestUpstream::start(Reply::fixture("with-usage.sse")).await?;
        let app = TestApp::builder()
            .upstream(upstream.base_url())
            .without_worker()
            .start()
            .await?;
        let delay = EXPORT_DELAY.as_millis().to_string();
        let traced = |cmd: &mut std::process::Command, service: &str| {
            cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
                .env("OTEL_BSP_SCHEDULE_DELAY", &delay)
                .env("OTEL_SERVICE_NAME", service)
                .env("RUST_LOG", "warn");
        };
        let (mut gateway, addr) = app.server_command("gateway", &[])?;
        traced(&mut gateway, "it-gateway");
        let _gateway = crate::support::ChildWorker(gateway.spawn()?);
        let mut worker = app.worker_command(&[]);
        traced(&mut worker, "it-worker");
        let _worker = crate::support::ChildWorker(worker.spawn()?);

        let channel = connect_when_healthy(&addr).await?;
        let mut client = JobServiceClient::new(with_key(channel, Some(&app.key))?);
        let (parent, trace_id, client_span) = collector.new_trace();
        let prompt = "a lighthouse keeper's log, one line";
        run_job(
            &app,
            &mut client,
            prompt,
            "gpt-4o-mini",
            &[("traceparent", &parent)],
        )
        .await?;
        let trace =
            check_job_trace(collector, &upstream, (&trace_id, &client_span), prompt).await?;
        let service = |name: &str| named(&trace, name).map(|s| s.service.clone());
        assert_eq!(service("llmjobs.v1.JobService/SubmitJob")?, "it-gateway");
        assert_eq!(service("job.attempt")?, "it-worker");
        assert_eq!(service("chat gpt-4o-mini")?, "it-worker");
        app.stop().await
    }
}
