//! What every scenario shares: the authenticated gRPC client, requests, a stream's record
//! (through llm-jobs or straight from the upstream), percentiles, and the closed-loop submitter.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use futures::StreamExt;
use llm_jobs::proto::v1::{self, job_event::Kind, job_service_client::JobServiceClient};
use serde_json::{Value, json};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::interceptor::InterceptedService,
    transport::Channel,
};

/// Adds the benchmark's API key to every request, as any client of a server with auth on.
#[derive(Clone)]
pub(crate) struct Bearer(pub(crate) MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// A `JobService` client that sends the benchmark's key.
pub(crate) type Client = JobServiceClient<InterceptedService<Channel, Bearer>>;

/// A percentile summary of samples in ms.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Summary {
    /// Median.
    pub(crate) p50: f64,
    /// 99th percentile.
    pub(crate) p99: f64,
}

/// The p50 and p99 of `v` (nearest rank); zeros when `v` is empty.
pub(crate) fn summary(mut v: Vec<f64>) -> Summary {
    if v.is_empty() {
        return Summary::default();
    }
    v.sort_by(f64::total_cmp);
    let q = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Summary {
        p50: q(0.50),
        p99: q(0.99),
    }
}

/// A duration in milliseconds.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A job of `model` with this prompt, delivered in `mode`.
pub(crate) fn request(
    prompt: String,
    model: &str,
    mode: v1::StreamingMode,
) -> v1::SubmitJobRequest {
    v1::SubmitJobRequest {
        prompt,
        generation_config: Some(v1::GenerationConfig {
            model: model.into(),
            ..Default::default()
        }),
        streaming_mode: mode.into(),
        ..Default::default()
    }
}

/// The text of a `tokens`-token answer of the test upstream.
pub(crate) fn expected_text(tokens: usize) -> String {
    (0..tokens).map(|i| format!("tok{i} ")).collect()
}

/// What one stream delivered: arrival times of its text chunks and the text.
#[derive(Default)]
pub(crate) struct Received {
    /// When the call was made.
    pub(crate) start: Option<Instant>,
    /// Arrival of every non-empty text chunk.
    pub(crate) tokens: Vec<Instant>,
    /// The text, reset when a new attempt starts.
    pub(crate) text: String,
    /// Whether the terminal event (or `[DONE]`) arrived.
    pub(crate) terminal: bool,
}

impl Received {
    /// Time to first token (ms).
    pub(crate) fn ttft_ms(&self) -> Option<f64> {
        Some(ms(*self.tokens.first()? - self.start?))
    }

    /// The gaps between consecutive tokens (ms).
    pub(crate) fn gaps_ms(&self) -> impl Iterator<Item = f64> + '_ {
        self.tokens.windows(2).map(|w| ms(w[1] - w[0]))
    }
}

/// Streams `model` straight from the upstream (the baseline).
pub(crate) async fn direct(
    http: reqwest::Client,
    base: String,
    model: &str,
) -> anyhow::Result<Received> {
    let mut r = Received {
        start: Some(Instant::now()),
        ..Default::default()
    };
    let resp = http
        .post(format!("{base}/chat/completions"))
        .header("content-type", "application/json")
        .body(
            json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "x"}]})
                .to_string(),
        )
        .send()
        .await?;
    let mut body = resp.bytes_stream();
    let mut buf = Vec::new();
    while let Some(piece) = body.next().await {
        buf.extend_from_slice(&piece?);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            let line = String::from_utf8_lossy(&event);
            let Some(data) = line.trim().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                r.terminal = true;
                continue;
            }
            let v: Value = serde_json::from_str(data)?;
            if let Some(t) = v["choices"][0]["delta"]["content"].as_str()
                && !t.is_empty()
            {
                r.tokens.push(Instant::now());
                r.text.push_str(t);
            }
        }
    }
    Ok(r)
}

/// Submits and streams one job through llm-jobs (`SubmitAndStream`).
pub(crate) async fn through(mut c: Client, req: v1::SubmitJobRequest) -> anyhow::Result<Received> {
    let mut r = Received {
        start: Some(Instant::now()),
        ..Default::default()
    };
    let mut s = c.submit_and_stream(req).await?.into_inner();
    while let Some(ev) = s.message().await? {
        match ev.kind {
            Some(Kind::TokenDelta(d)) if !d.text.is_empty() => {
                r.tokens.push(Instant::now());
                r.text.push_str(&d.text);
            }
            Some(Kind::Started(s)) if s.attempt > 1 => r.text.clear(),
            Some(Kind::Completed(_) | Kind::Failed(_) | Kind::Cancelled(_)) => r.terminal = true,
            _ => {}
        }
    }
    Ok(r)
}

/// Submits `n` jobs of `model` with `SubmitJob` (no stream), one at a time per caller, from
/// `callers` concurrent closed-loop callers sharing one connection; returns the accepted ids
/// once every submit has returned.
pub(crate) async fn submit_closed_loop(
    client: &Client,
    n: usize,
    callers: usize,
    model: &'static str,
    mode: v1::StreamingMode,
    label: &'static str,
) -> anyhow::Result<Vec<String>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..callers.clamp(1, n.max(1)) {
        let (mut c, next) = (client.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(ids);
                }
                let job = c
                    .submit_job(request(format!("{label} {i}"), model, mode))
                    .await?
                    .into_inner()
                    .job
                    .context("SubmitJob answered without a job")?;
                ids.push(job.id);
            }
        }));
    }
    let mut ids = Vec::with_capacity(n);
    for t in tasks {
        ids.extend(t.await??);
    }
    anyhow::ensure!(ids.len() == n, "{} of {n} submits were accepted", ids.len());
    Ok(ids)
}
