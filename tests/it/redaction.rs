//! Secrets in prompts: what a running server's log shows of them, and how prompts are kept
//! in Postgres with `--prompt-storage redacted` and `none`; secrets in the environment:
//! `--help` does not print them.

use anyhow::Context;
use llm_jobs::proto::v1::{self, job_service_client::JobServiceClient};

use crate::support::{
    PATIENCE, TestApp, connect_when_healthy, request,
    upstream::{Reply, TestUpstream},
    with_key,
};

/// An OpenAI-style key, as a user might paste it into a prompt.
const SECRET: &str = "sk-proj-Zq8xT4mN2vR7kL1pW9sY3bC6";
/// The part of [`SECRET`] that must never show where it is masked.
const SECRET_TAIL: &str = "Zq8xT4mN2vR7kL1pW9sY3bC6";

/// The conversation stored for `job_id`, as JSON text.
async fn stored_messages(app: &TestApp, job_id: &str) -> anyhow::Result<String> {
    let id = uuid::Uuid::parse_str(job_id)?;
    let rows = app
        .sql(&format!(
            "SELECT CAST(messages AS TEXT) AS v FROM jobs WHERE id = '{id}'"
        ))
        .await?;
    rows.into_iter().next().context("no such job")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redacted_storage_masks_keys_before_the_prompt_is_stored_or_sent() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::slow(2, 0, 1)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .arg("--prompt-storage", "redacted")
        .start()
        .await?;
    let job = app
        .submit(v1::SubmitJobRequest {
            system_prompt: format!("the key is {SECRET}"),
            ..request(&format!("summarise: {SECRET}"), "gpt-4o-mini")
        })
        .await?;
    let job = app
        .wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Completed)
        .await?;
    let stored = stored_messages(&app, &job.id).await?;
    assert!(
        stored.contains("summarise: sk-[redacted]")
            && stored.contains("the key is sk-[redacted]")
            && !stored.contains(SECRET_TAIL),
        "{stored}"
    );
    let sent = upstream.requests();
    assert!(
        sent.len() == 1
            && sent[0]
                .body
                .to_string()
                .contains("summarise: sk-[redacted]")
            && !sent[0].body.to_string().contains(SECRET_TAIL),
        "what was stored is what was sent: {sent:?}"
    );
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_none_keeps_the_prompt_only_while_the_job_can_run() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::slow(2, 0, 1)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .arg("--prompt-storage", "none")
        .start()
        .await?;
    let mut c = app.client.clone();

    // Running: the worker read the whole prompt from the store; cancelled: it is gone.
    upstream.push_reply(Reply::slow(10_000, 0, 20));
    let running = app
        .submit(request("first secret plan", "gpt-4o-mini"))
        .await?;
    app.wait_for_job(&running.id, |j| j.status() == v1::JobStatus::Running)
        .await?;
    assert!(upstream.wait_for_requests(1, PATIENCE).await);
    assert!(
        stored_messages(&app, &running.id)
            .await?
            .contains("first secret plan")
    );
    c.cancel_job(v1::CancelJobRequest {
        job_id: running.id.clone(),
        reason: String::new(),
    })
    .await?;
    app.wait_for_job(&running.id, |j| j.status() == v1::JobStatus::Cancelled)
        .await?;
    assert_eq!(stored_messages(&app, &running.id).await?, "[]");

    // Completed: the upstream got the prompt as submitted; the store keeps none of it.
    let keyed = v1::SubmitJobRequest {
        idempotency_key: "plan-2".into(),
        ..request("second secret plan", "gpt-4o-mini")
    };
    let done = app.submit(keyed.clone()).await?;
    app.wait_for_job(&done.id, |j| j.status() == v1::JobStatus::Completed)
        .await?;
    assert_eq!(stored_messages(&app, &done.id).await?, "[]");
    // A retry of the same request still finds its job, though the prompt to compare is gone.
    assert_eq!(app.submit(keyed).await?.id, done.id);
    assert!(
        upstream.requests()[1]
            .body
            .to_string()
            .contains("second secret plan")
    );
    assert!(!app.result(&done.id).await?.content.is_empty());

    // Failed: nothing left to run again, so an admin retry leaves it failed.
    upstream.push_reply(Reply::Status {
        status: 400,
        error_type: "invalid_request_error",
        retry_after_secs: None,
    });
    let failed = app
        .submit(request("third secret plan", "gpt-4o-mini"))
        .await?;
    app.wait_for_job(&failed.id, |j| j.status() == v1::JobStatus::Failed)
        .await?;
    assert_eq!(stored_messages(&app, &failed.id).await?, "[]");
    let retried = app
        .admin_client()?
        .retry_jobs(v1::RetryJobsRequest {
            job_ids: vec![failed.id.clone()],
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(retried.retried_job_ids.is_empty(), "{retried:?}");
    assert!(
        retried.skipped.len() == 1 && retried.skipped[0].reason.contains("prompt was discarded"),
        "{retried:?}"
    );
    let job = app.wait_for_job(&failed.id, |_| true).await?;
    assert_eq!(job.status(), v1::JobStatus::Failed);
    app.stop().await
}

#[test]
fn help_never_prints_the_secrets_in_the_environment() -> anyhow::Result<()> {
    let secret = "hunter2-do-not-print";
    for command in [
        &["serve", "--help"][..],
        &["gateway", "--help"],
        &["worker", "--help"],
        &["migrate", "--help"],
        &["cleanup", "--help"],
        &["keys", "create", "--help"],
        &["submit", "--help"],
        &["admin", "stats", "--help"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
            .args(command)
            .env("REDIS_URL", format!("redis://:{secret}@127.0.0.1:6379"))
            .env(
                "DATABASE_URL",
                format!("postgres://llm:{secret}@127.0.0.1:5432/llm_jobs"),
            )
            .env("OPENAI_API_KEY", format!("sk-{secret}"))
            .env("LLMJOBS_API_KEY", format!("llmj_000000000000_{secret}"))
            .output()?;
        let printed = String::from_utf8_lossy(&out.stdout).into_owned()
            + String::from_utf8_lossy(&out.stderr).as_ref();
        assert!(out.status.success(), "{command:?}: {printed}");
        assert!(
            !printed.contains(secret),
            "{command:?} prints a secret from the environment:\n{printed}"
        );
    }
    Ok(())
}

/// Tests about Redis or Postgres themselves, or about processes sharing them: the embedded
/// pass filters them out by name (`-- --skip ::servers::`, as `scripts/test` does).
mod servers {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_running_server_logs_a_prompts_key_only_redacted() -> anyhow::Result<()> {
        crate::support::needs_servers(
            "a server process beside the test's own on one store; the embedded mode allows one \
         server per store",
        );
        // The upstream refuses the request and quotes the prompt back, as real servers do in
        // their error messages, so the key reaches the worker's error handling and its log.
        let refusal = serde_json::json!({"error": {
            "message": format!("cannot process the prompt 'summarise: {SECRET}'"),
            "type": "invalid_request_error", "param": null, "code": null,
        }});
        let upstream = TestUpstream::start(Reply::raw(
            400,
            Some("application/json"),
            refusal.to_string(),
        ))
        .await?;
        // The in-process app makes the database and the key; the job runs in the child process.
        let app = TestApp::builder()
            .upstream(upstream.base_url())
            .without_worker()
            .start()
            .await?;
        let log_path = std::env::temp_dir().join(format!("llm-jobs-{}.log", app.prefix));
        let log = std::fs::File::create(&log_path)?;
        let (mut server, addr) = app.spawn_server_process("serve", &[], "trace", log.into())?;
        let mut client = JobServiceClient::new(with_key(
            connect_when_healthy(&addr).await?,
            Some(&app.key),
        )?);
        let job = client
            .submit_job(request(&format!("summarise: {SECRET}"), "gpt-4o-mini"))
            .await?
            .into_inner()
            .job
            .context("no job")?;
        let job = app
            .wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Failed)
            .await?;
        let error = job.error.unwrap_or_default();
        assert_eq!(error.code, "upstream_invalid_request", "{error:?}");
        assert!(error.message.contains("sk-[redacted]"), "{error:?}");
        let sent = upstream.requests();
        assert!(
            sent.len() == 1 && sent[0].body.to_string().contains(SECRET),
            "the prompt went upstream as submitted (full storage)"
        );

        server.signal("TERM")?;
        server.wait().await?;
        let logged = std::fs::read_to_string(&log_path)?;
        std::fs::remove_file(&log_path)?;
        assert!(
            logged.contains(&job.id) && logged.contains("attempt failed"),
            "the capture holds the server's log of the job: {logged}"
        );
        assert!(
            logged.contains("sk-[redacted]"),
            "the key was logged, masked: {logged}"
        );
        // Nor in a form redaction cannot see: bytes as numbers (the database driver's DEBUG log
        // of statement parameters did that to every prompt).
        let as_numbers = |s: &str| {
            s.bytes()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        for secret in [
            SECRET_TAIL,
            app.key.rsplit('_').next().unwrap_or_default(),
            "sk-test-key",
        ] {
            assert!(!logged.contains(secret), "{secret} leaked into the log");
            assert!(
                !logged.contains(&as_numbers(secret)),
                "{secret} leaked into the log as bytes"
            );
        }
        app.stop().await
    }
}
