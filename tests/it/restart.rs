//! Restart safety of the embedded mode (in-process queue and event log, SQLite store): a real
//! `llm-jobs serve` child process without Redis, on a SQLite file, is SIGKILLed or stopped
//! with SIGTERM while one job is running and others are queued; a new process on the same file
//! runs every unfinished job again, keeps the job that had finished exactly as it was, and a
//! watcher cut off by the stop resumes with its last sequence.
//!
//! These tests choose their own backends (`--redis-url ""`, `--database-url sqlite://…`), so
//! they run under every `LLMJOBS_TEST_BACKEND`: they need nothing installed.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use anyhow::Context;
use llm_jobs::{
    cli::client::Channel,
    proto::v1::{self, job_event::Kind, job_service_client::JobServiceClient},
};

use crate::support::{
    ChildWorker, PATIENCE, assert_well_formed, attempts_started, text_of, wait_for_job_on, with_key,
};

/// Simulated output tokens per second: slow enough that the long job is still running when the
/// server stops and outlasts the one-second grace period after SIGTERM.
const TOKENS_PER_SECOND: &str = "10";

/// One job of the scenario: its prompt and its `max_tokens`.
struct Spec {
    prompt: &'static str,
    max_tokens: u32,
}

/// Finishes before the stop.
const DONE: Spec = Spec {
    prompt: "restart: the job that finished before the stop",
    max_tokens: 5,
};
/// Running when the server stops: the simulator answers at least 24 words, so at least 2 s
/// are left when it is stopped after its third token.
const RUNNING: Spec = Spec {
    prompt: "restart: the job that was running",
    max_tokens: 30,
};
/// Still queued when the server stops (one worker slot).
const QUEUED: [Spec; 2] = [
    Spec {
        prompt: "restart: the first queued job",
        max_tokens: 5,
    },
    Spec {
        prompt: "restart: the second queued job",
        max_tokens: 5,
    },
];

/// The text the simulator answers `spec` with (it is deterministic), so a job that ran again
/// can be checked against what it must say.
fn expected_text(spec: &Spec) -> String {
    let request = llm_jobs::provider::Request {
        messages: vec![llm_jobs::job::ChatMessage {
            role: "user".into(),
            content: spec.prompt.into(),
        }],
        params: llm_jobs::job::GenerationParams {
            model: "sim".into(),
            max_tokens: Some(spec.max_tokens),
            ..Default::default()
        },
        traceparent: None,
    };
    llm_jobs::provider::sim::answer(&request).0.concat()
}

fn request(spec: &Spec) -> v1::SubmitJobRequest {
    v1::SubmitJobRequest {
        prompt: spec.prompt.into(),
        generation_config: Some(v1::GenerationConfig {
            model: "sim".into(),
            max_tokens: Some(spec.max_tokens),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A SQLite file in the system's temporary directory, with an operator key made on it by
/// `llm-jobs keys create` before any server ran (as the README does it); the file is removed
/// when dropped.
struct Embedded {
    file: PathBuf,
    key: String,
}

impl Embedded {
    fn new() -> anyhow::Result<Embedded> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let file = std::env::temp_dir().join(format!("llmjobs_it_restart_{id}.db"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
            .args(["keys", "--database-url", &Embedded::url_of(&file)])
            // A role in any case, as users type it.
            .args(["create", "--tenant", "restart", "--role", "Operator"])
            .args(["--name", "restart-test"])
            .env("RUST_LOG", "warn")
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "keys create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key = String::from_utf8(out.stdout)?.trim().to_owned();
        anyhow::ensure!(key.starts_with("llmj_"), "not a key: {key:?}");
        Ok(Embedded { file, key })
    }

    fn url_of(file: &std::path::Path) -> String {
        format!("sqlite://{}", file.display())
    }

    /// Starts `llm-jobs serve` on this file without Redis (one worker slot, the slow
    /// simulator, a one-second grace period and reconciler interval) and returns it with a
    /// client once its health check answers SERVING.
    async fn serve(&self) -> anyhow::Result<(ChildWorker, JobServiceClient<Channel>)> {
        let addr = crate::support::free_addr()?;
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
            .arg("serve")
            .args(["--listen", &addr])
            .args(["--redis-url", ""])
            .args(["--database-url", &Embedded::url_of(&self.file)])
            .args(["--auth", "on"])
            .args(["--job-types", "general"])
            .args(["--concurrency", "1"])
            .args(["--default-model", "sim"])
            .args(["--sim-first-token-ms", "20"])
            .args(["--sim-tokens-per-second", TOKENS_PER_SECOND])
            .args(["--shutdown-grace-secs", "1"])
            .args(["--reconcile-secs", "1"])
            .env_remove("OPENAI_API_KEY")
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .spawn()
            .context("spawn llm-jobs serve")?;
        let mut child = ChildWorker(child);
        let channel = serving(&mut child, &addr).await?;
        Ok((
            child,
            JobServiceClient::new(with_key(channel, Some(&self.key))?),
        ))
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal", ".lock"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.file.display()));
        }
    }
}

/// A connection to `addr` once its health check answers SERVING (the store answers and the
/// migrations ran); fails if `child` exits first.
async fn serving(child: &mut ChildWorker, addr: &str) -> anyhow::Result<tonic::transport::Channel> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.0.try_wait()? {
            anyhow::bail!("llm-jobs serve exited during start-up: {status}");
        }
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await
            && HealthClient::new(channel.clone())
                .check(HealthCheckRequest::default())
                .await
                .is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving)
        {
            return Ok(channel);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "llm-jobs serve at {addr} did not become SERVING"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_terminal(ev: &v1::JobEvent) -> bool {
    matches!(
        ev.kind,
        Some(Kind::Completed(_) | Kind::Failed(_) | Kind::Cancelled(_))
    )
}

/// Follows `job_id` from after `after` until its terminal event or the first error (the
/// server going away); heartbeats are left out.
async fn follow(
    mut client: JobServiceClient<Channel>,
    job_id: String,
    after: u64,
) -> (Vec<v1::JobEvent>, Option<tonic::Status>) {
    let mut events = Vec::new();
    let stream = client
        .stream_job(v1::StreamJobRequest {
            job_id,
            after_sequence: after,
        })
        .await;
    let mut stream = match stream {
        Ok(s) => s.into_inner(),
        Err(status) => return (events, Some(status)),
    };
    loop {
        match stream.message().await {
            Ok(Some(ev)) if matches!(ev.kind, Some(Kind::Heartbeat(_))) => {}
            Ok(Some(ev)) => {
                let terminal = is_terminal(&ev);
                events.push(ev);
                if terminal {
                    return (events, None);
                }
            }
            Ok(None) => return (events, None),
            Err(status) => return (events, Some(status)),
        }
    }
}

/// Resumes a watcher on the restarted server after the last sequence it saw, reconnecting
/// on UNAVAILABLE, until the terminal event.
async fn resume(
    client: &JobServiceClient<Channel>,
    job_id: &str,
    mut events: Vec<v1::JobEvent>,
) -> anyhow::Result<Vec<v1::JobEvent>> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !events.last().is_some_and(is_terminal) {
        let after = events.last().map_or(0, |e| e.sequence);
        // A stream stays open, with nothing but heartbeats, until the job runs again.
        let followed =
            tokio::time::timeout_at(deadline, follow(client.clone(), job_id.to_owned(), after))
                .await;
        let Ok((more, error)) = followed else {
            anyhow::bail!("the watcher never saw the end: {events:?}");
        };
        events.extend(more);
        match error {
            None => anyhow::ensure!(
                events.last().is_some_and(is_terminal),
                "the stream ended without a terminal event: {events:?}"
            ),
            Some(s) if s.code() == tonic::Code::Unavailable => {}
            Some(s) => return Err(s).context("resuming the watcher"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(events)
}

/// Every job of the default tenant, by id.
async fn all_jobs(client: &JobServiceClient<Channel>) -> anyhow::Result<BTreeSet<String>> {
    let mut c = client.clone();
    let mut ids = BTreeSet::new();
    let mut page_token = String::new();
    loop {
        let page = c
            .list_jobs(v1::ListJobsRequest {
                page_size: 100,
                page_token,
                ..Default::default()
            })
            .await?
            .into_inner();
        ids.extend(page.jobs.into_iter().map(|j| j.id));
        if page.next_page_token.is_empty() {
            return Ok(ids);
        }
        page_token = page.next_page_token;
    }
}

/// The stored stage changes and milestones of `job_id`.
async fn history(
    client: &JobServiceClient<Channel>,
    job_id: &str,
) -> anyhow::Result<Vec<v1::ProgressEvent>> {
    let mut c = client.clone();
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = c
            .list_job_progress_events(v1::ListJobProgressEventsRequest {
                job_id: job_id.into(),
                page_size: 100,
                page_token,
            })
            .await?
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return Ok(events);
        }
        page_token = page.next_page_token;
    }
}

async fn result(client: &JobServiceClient<Channel>, job_id: &str) -> anyhow::Result<v1::JobResult> {
    Ok(client
        .clone()
        .get_job_result(v1::GetJobResultRequest {
            job_id: job_id.into(),
        })
        .await?
        .into_inner())
}

async fn get(client: &JobServiceClient<Channel>, job_id: &str) -> anyhow::Result<v1::Job> {
    Ok(client
        .clone()
        .get_job(v1::GetJobRequest {
            job_id: job_id.into(),
        })
        .await?
        .into_inner())
}

/// The scenario, with the server stopped by `signal` (`KILL` or `TERM`).
async fn jobs_survive_a_restart(signal: &str) -> anyhow::Result<()> {
    let store = Embedded::new()?;
    let (mut first, client) = store.serve().await?;

    let mut ids = Vec::new();
    for spec in [&DONE, &RUNNING, &QUEUED[0], &QUEUED[1]] {
        let job = client
            .clone()
            .submit_job(request(spec))
            .await?
            .into_inner()
            .job
            .context("no job in the response")?;
        ids.push(job.id);
    }
    let [done, running, queued_1, queued_2] = ids.clone().try_into().expect("four jobs");

    // One job finishes; what it looks like now must survive the restart unchanged.
    let done_job =
        wait_for_job_on(&client, &done, |j| j.status() == v1::JobStatus::Completed).await?;
    let done_result = result(&client, &done).await?;
    let done_history = history(&client, &done).await?;
    assert_eq!(done_result.content, expected_text(&DONE));
    assert!(!done_history.is_empty(), "a finished job has a history");

    // The next one runs (one slot) with a watcher on it; the last two wait in the queue.
    let watcher = tokio::spawn(follow(client.clone(), running.clone(), 0));
    wait_for_job_on(&client, &running, |j| j.output_tokens >= 3).await?;
    for id in [&queued_1, &queued_2] {
        assert_eq!(get(&client, id).await?.status(), v1::JobStatus::Queued);
    }

    first.signal(signal)?;
    let exit = first.wait().await?;
    if signal == "TERM" {
        assert!(exit.success(), "a graceful stop exits cleanly: {exit}");
    }
    let (before, cut) = tokio::time::timeout(PATIENCE, watcher)
        .await
        .context("the watcher did not notice the stop")??;
    assert!(
        cut.is_some() && !before.iter().any(is_terminal),
        "the running job was still running when the server stopped: {cut:?} {before:?}"
    );

    // A new server on the same file: every job runs to the end.
    let (_second, client) = store.serve().await?;
    let watched = resume(&client, &running, before.clone()).await?;
    let sequences: Vec<_> = watched.iter().map(|e| e.sequence).collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "no event repeated or reordered across the restart: {sequences:?}"
    );
    assert_eq!(watched.iter().filter(|e| is_terminal(e)).count(), 1);
    assert!(
        matches!(
            watched.last().and_then(|e| e.kind.as_ref()),
            Some(Kind::Completed(_))
        ),
        "{watched:?}"
    );
    assert_eq!(
        text_of(&watched),
        expected_text(&RUNNING),
        "the resumed watcher has the whole text of the new attempt"
    );

    for (id, spec) in [
        (&running, &RUNNING),
        (&queued_1, &QUEUED[0]),
        (&queued_2, &QUEUED[1]),
    ] {
        let job = wait_for_job_on(&client, id, |j| j.status() == v1::JobStatus::Completed).await?;
        let r = result(&client, id).await?;
        assert_eq!(r.content, expected_text(spec), "job {id}");
        if id != &running {
            assert_eq!(job.attempts, 1, "a queued job runs once: {job:?}");
        }
    }

    // The interrupted attempt is on record: a SIGKILLed one was lost with its process
    // (`worker_lost`, counted against max_attempts); a graceful stop handed the job back
    // (`worker_shutdown`, not counted).
    let running_result = result(&client, &running).await?;
    assert_eq!(running_result.attempts, 2, "{running_result:?}");
    assert_eq!(attempts_started(&watched), [1, 2]);
    let attempt_errors: Vec<_> = running_result
        .attempt_errors
        .iter()
        .map(|e| (e.attempt, e.error.as_ref().map(|e| e.code.as_str())))
        .collect();
    let expected = if signal == "TERM" {
        "worker_shutdown"
    } else {
        "worker_lost"
    };
    assert_eq!(attempt_errors, [(1, Some(expected))], "{running_result:?}");

    // The job that had finished is exactly as it was, and a new watcher gets its text.
    assert_eq!(get(&client, &done).await?, done_job);
    assert_eq!(result(&client, &done).await?, done_result);
    assert_eq!(history(&client, &done).await?, done_history);
    let replay = resume(&client, &done, Vec::new()).await?;
    // The live log ended with the process; the store has it, token by token.
    assert!(
        !replay
            .iter()
            .any(|e| matches!(e.kind, Some(Kind::Snapshot(_)))),
        "a replay of a finished job is its stored log, not a snapshot: {replay:?}"
    );
    assert_well_formed(&replay, 0);
    assert!(
        replay
            .iter()
            .any(|e| matches!(e.kind, Some(Kind::TokenDelta(_)))),
        "{replay:?}"
    );
    assert_eq!(text_of(&replay), done_result.content);
    assert!(
        matches!(
            replay.last().and_then(|e| e.kind.as_ref()),
            Some(Kind::Completed(_))
        ),
        "{replay:?}"
    );

    // Nothing lost, nothing added.
    assert_eq!(
        all_jobs(&client).await?,
        ids.into_iter().collect::<BTreeSet<_>>()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_the_next_embedded_server_runs_every_unfinished_job() -> anyhow::Result<()> {
    jobs_survive_a_restart("KILL").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigterm_the_next_embedded_server_runs_every_unfinished_job() -> anyhow::Result<()> {
    jobs_survive_a_restart("TERM").await
}
