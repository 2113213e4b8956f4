//! What the CLI's job commands print: `watch` and `submit --stream` end their text with a line
//! break and name where to resume, `status` shows only figures GetJob knows; values that
//! cannot be meant (zeros) are refused.

use std::time::Duration;

use llm_jobs::proto::v1;

use crate::support::{
    ChildWorker, PATIENCE, TestApp, request,
    upstream::{Reply, TestUpstream},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_names_the_sequence_to_resume_from_and_the_right_bound() -> anyhow::Result<()> {
    // Minutes of tokens: the job runs until it is cancelled.
    let upstream = TestUpstream::start(Reply::slow(10_000, 10, 20)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let job = app.submit(request("long", "gpt-4o-mini")).await?;
    app.wait_for_job(&job.id, |j| j.output_tokens >= 3).await?;

    // A running job has no last sequence yet (GetJob says 0): status shows none.
    let status = app.cli(&["status", &job.id])?;
    assert!(status.contains("status:        running"), "{status}");
    assert!(!status.contains("last sequence"), "{status}");

    // Ctrl-C: the text line is ended and the resume point named.
    let dir = std::env::temp_dir();
    let name = uuid::Uuid::new_v4().simple().to_string();
    let (out_path, err_path) = (
        dir.join(format!("llmjobs_it_cli_{name}.out")),
        dir.join(format!("llmjobs_it_cli_{name}.err")),
    );
    let mut watcher = ChildWorker(
        app.cli_command(&["watch", &job.id])
            .stdout(std::fs::File::create(&out_path)?)
            .stderr(std::fs::File::create(&err_path)?)
            .spawn()?,
    );
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while std::fs::metadata(&out_path)?.len() == 0 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "watch printed no text"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watcher.signal("INT")?;
    let exit = watcher.wait().await?;
    let stdout = std::fs::read_to_string(&out_path)?;
    let stderr = std::fs::read_to_string(&err_path)?;
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    assert!(!exit.success(), "interrupted: {stderr}");
    assert!(stdout.ends_with('\n'), "{stdout:?}");
    let named = stderr
        .split("--after ")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no resume point: {stderr}"));
    assert!(named > 2, "{stderr}");
    assert!(stderr.contains("interrupted at sequence"), "{stderr}");

    // Past the end: no suggestion to use the same bad value; the real bound instead.
    let mut c = app.client.clone();
    c.cancel_job(v1::CancelJobRequest {
        job_id: job.id.clone(),
        reason: String::new(),
    })
    .await?;
    let ended = app.wait_for_job(&job.id, |j| j.last_sequence > 0).await?;
    let (ok, _, stderr) = app.cli_outcome(&["watch", &job.id, "--after", "999999"])?;
    assert!(!ok);
    assert!(!stderr.contains("--after 999999`"), "{stderr}");
    assert!(
        stderr.contains(&format!("use --after {} or less", ended.last_sequence)),
        "{stderr}"
    );
    let status = app.cli(&["status", &job.id])?;
    assert!(
        status.contains(&format!("last sequence: {}", ended.last_sequence)),
        "{status}"
    );
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_stream_ends_its_output_with_a_line_break() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    for extra in [&[][..], &["--buffered"][..]] {
        let mut args = vec!["submit", "--stream", "--model", "sim"];
        args.extend_from_slice(extra);
        args.push("two words");
        let stdout = app.cli(&args)?;
        assert!(!stdout.trim().is_empty(), "{extra:?}");
        assert!(stdout.ends_with('\n'), "{extra:?}: {stdout:?}");
        assert!(!stdout.ends_with("\n\n"), "{extra:?}: {stdout:?}");
    }
    app.stop().await
}

/// Errors read as one clean line each: a missing key says how to give one, a field violation
/// shows once, and an unreachable server does not repeat its cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_errors_say_what_to_do_once() -> anyhow::Result<()> {
    let app = TestApp::builder().without_worker().start().await?;

    let out = app
        .cli_command(&["status", "0190b4d2-0000-7000-8000-000000000000"])
        .env_remove("LLMJOBS_API_KEY")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("set LLMJOBS_API_KEY or pass --api-key"),
        "{stderr}"
    );

    let (ok, _, stderr) = app.cli_outcome(&["status", "not-a-uuid"])?;
    assert!(!ok);
    assert_eq!(stderr.matches("must be a UUID").count(), 1, "{stderr}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
        .args(["status", "0190b4d2-0000-7000-8000-000000000000"])
        .args(["--server", "http://127.0.0.1:1"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for line in stderr.lines() {
        let parts: Vec<&str> = line.split(": ").collect();
        assert!(
            parts.windows(2).all(|w| w[0] != w[1]),
            "a cause repeats: {stderr}"
        );
    }
    app.stop().await
}

/// `watch --after N` where N is the job's last event: nothing more comes, and the CLI says the
/// job had ended there instead of advising the same resume again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_after_the_last_event_says_the_job_had_ended() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let job = app.submit(request("short", "sim")).await?;
    let done = app
        .wait_for_job(&job.id, |j| {
            j.status() == v1::JobStatus::Completed && j.last_sequence > 0
        })
        .await?;
    let last = done.last_sequence.to_string();
    let (ok, stdout, stderr) = app.cli_outcome(&["watch", &job.id, "--after", &last])?;
    assert!(ok, "{stderr}");
    assert!(stdout.trim().is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!("already ended (COMPLETED) at sequence {last}")),
        "{stderr}"
    );
    assert!(!stderr.contains("resume with"), "{stderr}");
    app.stop().await
}

/// Settings that cannot work are refused at start-up, naming the flag, instead of being
/// bent silently (no worker slots, no lease, no time for an attempt, empty batches).
#[test]
fn zero_where_zero_cannot_work_is_refused() -> anyhow::Result<()> {
    for (flag, env) in [
        ("--concurrency", "LLMJOBS_WORKER_CONCURRENCY"),
        ("--lease-secs", "LLMJOBS_LEASE_SECS"),
        ("--job-timeout-secs", "LLMJOBS_JOB_TIMEOUT_SECS"),
        ("--max-batch-jobs", "LLMJOBS_MAX_BATCH_JOBS"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
            .args(["serve", flag, "0"])
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(stderr.contains(flag), "{flag}: {stderr}");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
            .arg("serve")
            .env(env, "0")
            .output()?;
        assert_eq!(out.status.code(), Some(2), "{env}=0");
    }
    Ok(())
}

/// `cleanup --older-than 0` would delete every job that has ended: clap refuses it (exit 2,
/// naming the flag) before the store is opened, so a finished job is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_refuses_an_age_of_zero_and_deletes_nothing() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let job = app.submit(request("keep me", "sim")).await?;
    app.wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Completed)
        .await?;
    let jobs = app.count("jobs").await?;
    for zero in ["0", "0s", "0d"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
            .args(["cleanup", "--older-than", zero])
            .args(["--database-url", &app.database_url])
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{zero}: {stderr}");
        assert!(stderr.contains("--older-than"), "{zero}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{zero}: nothing deleted, nothing said"
        );
    }
    assert_eq!(app.count("jobs").await?, jobs);
    let kept = app.wait_for_job(&job.id, |_| true).await?;
    assert_eq!(kept.status(), v1::JobStatus::Completed);
    app.stop().await
}
