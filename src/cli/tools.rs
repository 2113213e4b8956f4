//! Operator and user tools over the API: `monitor` (a live dashboard), `demo` (one scenario
//! per default job type, streamed live) and `load-test` (submit and stream N jobs, report
//! client-side latencies).

use std::{collections::BTreeMap, io::Write, sync::Arc, time::Instant};

use tokio::sync::Mutex;

use super::{
    admin,
    client::{Connection, status_error},
};
use crate::proto::v1::{self, job_event::Kind, job_service_client::JobServiceClient};

/// `monitor` arguments.
#[derive(clap::Args, Clone, Debug)]
pub struct MonitorArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: Connection,
    /// Seconds between refreshes (1..=60).
    #[arg(long, default_value_t = 2, allow_negative_numbers = true)]
    pub interval: u32,
}

/// Follows `WatchDashboard` and redraws the terminal until interrupted.
pub async fn monitor(a: MonitorArgs) -> anyhow::Result<()> {
    let mut client = admin::connect(&a.connection).await?;
    let mut stream = client
        .watch_dashboard(v1::WatchDashboardRequest {
            interval_seconds: a.interval,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    while let Some(d) = stream.message().await.map_err(status_error)? {
        if tty {
            print!("\x1b[2J\x1b[H");
        }
        let when = d
            .time
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
            .map_or_else(String::new, |t| t.to_rfc3339());
        println!("llm-jobs monitor  {when}  (Ctrl-C to quit)\n");
        if let Some(h) = &d.health {
            admin::print_health(h);
        }
        println!();
        admin::print_stats(&d.queues);
        println!();
        admin::print_workload(&d.workload);
        println!();
        admin::print_workers(&d.workers);
        std::io::stdout().flush()?;
    }
    Ok(())
}

/// `demo` arguments.
#[derive(clap::Args, Clone, Debug)]
pub struct DemoArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: Connection,
    /// Model (empty: the server's default; `sim` needs no API key).
    #[arg(long, default_value = "")]
    pub model: String,
}

const CONTRACT: &str = "Find the vulnerabilities in this Solidity contract and say how to fix them:\n\
contract Vault {\n  mapping(address => uint) public balances;\n  function deposit() public payable { balances[msg.sender] += msg.value; }\n  function withdraw() public {\n    uint amount = balances[msg.sender];\n    (bool ok, ) = msg.sender.call{value: amount}(\"\");\n    require(ok);\n    balances[msg.sender] = 0;\n  }\n}";

const DIFF: &str = "Review this change:\n\
--- a/queue.py\n+++ b/queue.py\n@@ def pop(self):\n-    return self.items.pop(0)\n+    if not self.items:\n+        return None\n+    return self.items.pop()\n";

/// Runs one job per default job type and streams each live with its figures.
pub async fn demo(a: DemoArgs) -> anyhow::Result<()> {
    let scenarios = [
        (
            "security_analysis",
            "security analysis of a small smart contract",
            CONTRACT,
            v1::Priority::High,
        ),
        (
            "code_review",
            "code review of a small diff",
            DIFF,
            v1::Priority::Normal,
        ),
        (
            "general",
            "a general question",
            "Explain in three sentences why background job queues need leases.",
            v1::Priority::Normal,
        ),
    ];
    let mut client = JobServiceClient::new(a.connection.channel().await?);
    for (job_type, title, prompt, priority) in scenarios {
        println!("\n=== {title} ({job_type}) ===");
        let started = Instant::now();
        let mut stream = client
            .submit_and_stream(v1::SubmitJobRequest {
                prompt: prompt.into(),
                job_type: job_type.into(),
                priority: priority.into(),
                generation_config: Some(v1::GenerationConfig {
                    model: a.model.clone(),
                    max_tokens: Some(400),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .map_err(status_error)?
            .into_inner();
        let (job_id, tokens) = show_events(&mut stream).await?;
        println!();
        let r = client
            .get_job_result(v1::GetJobResultRequest { job_id })
            .await
            .map_err(status_error)?
            .into_inner();
        eprintln!(
            "[{} in {:.1} s: {} output tokens, time to first token {} ms, {:.1} tokens/s, provider {}{}]",
            r.finish_reason,
            started.elapsed().as_secs_f64(),
            tokens,
            r.time_to_first_token_ms
                .map_or("-".into(), |v| v.to_string()),
            r.output_tokens_per_second,
            r.provider,
            if r.simulated { " (simulated)" } else { "" }
        );
    }
    Ok(())
}

/// Prints `stream`'s events as they come (tokens on stdout, the rest on stderr) until the job
/// ends; returns the job's id and its output tokens.
///
/// Errors: the stream failed, or stdout could not be flushed.
async fn show_events(stream: &mut tonic::Streaming<v1::JobEvent>) -> anyhow::Result<(String, u64)> {
    let mut job_id = String::new();
    let mut tokens = 0;
    while let Some(ev) = stream.message().await.map_err(status_error)? {
        job_id.clone_from(&ev.job_id);
        match ev.kind {
            Some(Kind::Queued(q)) => eprintln!("[queued in {}]", q.queue),
            Some(Kind::Started(s)) => eprintln!(
                "[attempt {} on {} with {}]",
                s.attempt, s.worker_id, s.model
            ),
            Some(Kind::TokenDelta(d)) => {
                tokens = d.output_tokens;
                print!("{}", d.text);
                std::io::stdout().flush()?;
            }
            Some(Kind::AttemptFailed(f)) => eprintln!(
                "\n[attempt {} failed: {:?}; retrying: {}]",
                f.attempt, f.error, f.will_retry
            ),
            Some(Kind::Completed(_) | Kind::Failed(_) | Kind::Cancelled(_)) => break,
            _ => {}
        }
    }
    Ok((job_id, tokens))
}

/// `load-test` arguments.
#[derive(clap::Args, Clone, Debug)]
pub struct LoadTestArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: Connection,
    /// Jobs to run.
    #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
    pub jobs: usize,
    /// Jobs streaming at once.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    pub concurrency: usize,
    /// Model (`sim` and `sim-*` are simulated).
    #[arg(long, default_value = "sim")]
    pub model: String,
    /// Upper bound of output tokens per job.
    #[arg(
        long = "max-tokens",
        default_value_t = 64,
        allow_negative_numbers = true
    )]
    pub max_tokens: u32,
    /// Coalesce deltas (BUFFERED).
    #[arg(long)]
    pub buffered: bool,
}

#[derive(Default)]
struct Tally {
    ttft_ms: Vec<f64>,
    itl_ms: Vec<f64>,
    output_tokens: u64,
    states: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// Submits and streams `jobs` jobs, `concurrency` at a time, and reports client-side figures.
pub async fn load_test(a: LoadTestArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.jobs > 0 && a.concurrency > 0,
        "--jobs and --concurrency must be positive"
    );
    let client = JobServiceClient::new(a.connection.channel().await?);
    let bar = indicatif::ProgressBar::new(a.jobs as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} jobs {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..a.concurrency.min(a.jobs) {
        let (mut client, tally, next, bar, a) = (
            client.clone(),
            tally.clone(),
            next.clone(),
            bar.clone(),
            a.clone(),
        );
        tasks.spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < a.jobs {
                let one = run_one(&mut client, &a).await;
                let mut t = tally.lock().await;
                match one {
                    Ok((state, ttft, gaps, tokens)) => {
                        *t.states.entry(state).or_default() += 1;
                        t.ttft_ms.extend(ttft);
                        t.itl_ms.extend(gaps);
                        t.output_tokens += tokens;
                    }
                    Err(code) => *t.errors.entry(code).or_default() += 1,
                }
                bar.inc(1);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    bar.finish();
    let elapsed = started.elapsed().as_secs_f64();
    let mut t = Arc::try_unwrap(tally)
        .map_err(|_| anyhow::anyhow!("tasks still running"))?
        .into_inner();
    t.ttft_ms.sort_by(f64::total_cmp);
    t.itl_ms.sort_by(f64::total_cmp);
    let p = |v: &[f64], q| percentile(v, q).map_or("-".into(), |x| format!("{x:.1}"));
    println!(
        "jobs:                 {} in {:.2} s ({:.1} jobs/s)",
        a.jobs,
        elapsed,
        a.jobs as f64 / elapsed
    );
    println!(
        "time to first token:  p50 {} / p95 {} / p99 {} ms",
        p(&t.ttft_ms, 50.0),
        p(&t.ttft_ms, 95.0),
        p(&t.ttft_ms, 99.0)
    );
    println!(
        "inter-token latency:  p50 {} / p95 {} / p99 {} ms",
        p(&t.itl_ms, 50.0),
        p(&t.itl_ms, 95.0),
        p(&t.itl_ms, 99.0)
    );
    println!(
        "output tokens:        {} ({:.0} tokens/s)",
        t.output_tokens,
        t.output_tokens as f64 / elapsed
    );
    println!("final states:         {:?}", t.states);
    println!("errors by code:       {:?}", t.errors);
    Ok(())
}

/// One job: (final state, time to first token, inter-token gaps, output tokens) or an error
/// code.
async fn run_one(
    client: &mut JobServiceClient<super::client::Channel>,
    a: &LoadTestArgs,
) -> Result<(String, Option<f64>, Vec<f64>, u64), String> {
    let sent = Instant::now();
    let request = v1::SubmitJobRequest {
        prompt: format!("load test job {}", uuid::Uuid::new_v4()),
        generation_config: Some(v1::GenerationConfig {
            model: a.model.clone(),
            max_tokens: Some(a.max_tokens),
            ..Default::default()
        }),
        streaming_mode: if a.buffered {
            v1::StreamingMode::Buffered
        } else {
            v1::StreamingMode::Realtime
        }
        .into(),
        ..Default::default()
    };
    let mut stream = client
        .submit_and_stream(request)
        .await
        .map_err(|s| format!("{:?}", s.code()))?
        .into_inner();
    let (mut ttft, mut gaps, mut last, mut tokens) = (None, Vec::new(), None::<Instant>, 0);
    loop {
        let ev = stream
            .message()
            .await
            .map_err(|s| format!("{:?}", s.code()))?
            .ok_or_else(|| "stream ended early".to_owned())?;
        match ev.kind {
            Some(Kind::TokenDelta(d)) => {
                let now = Instant::now();
                ttft.get_or_insert_with(|| (now - sent).as_secs_f64() * 1000.0);
                if let Some(prev) = last {
                    gaps.push((now - prev).as_secs_f64() * 1000.0);
                }
                last = Some(now);
                tokens = d.output_tokens;
            }
            Some(Kind::Started(s)) if s.attempt > 1 => (gaps, last) = (Vec::new(), None),
            Some(Kind::Completed(_)) => return Ok(("completed".into(), ttft, gaps, tokens)),
            Some(Kind::Failed(f)) => {
                return Err(f.error.map_or_else(|| "failed".into(), |e| e.code));
            }
            Some(Kind::Cancelled(_)) => return Ok(("cancelled".into(), ttft, gaps, tokens)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
