//! What the CLI's job commands print: `watch` and `submit --stream` end their text with a line
//! break and name where to resume, `status` shows only figures GetJob knows; every command
//! that prints a job speaks protobuf JSON with `--json` (JSON lines for event streams);
//! `jobs` keeps its columns aligned; colour only on a terminal without `NO_COLOR`; values
//! that cannot be meant (zeros) are refused.

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

/// A metadata key given twice is refused before anything is sent, rather than one of its
/// values being dropped silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_refuses_a_metadata_key_given_twice() -> anyhow::Result<()> {
    let app = TestApp::builder().without_worker().start().await?;
    let (ok, _, stderr) = app.cli_outcome(&[
        "submit",
        "--metadata",
        "k=first",
        "--metadata",
        "k=second",
        "hello",
    ])?;
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("\"k\" is given twice"), "{stderr}");
    let page: serde_json::Value = serde_json::from_str(&app.cli(&["jobs", "--json"])?)?;
    assert_eq!(
        page["jobs"].as_array().map_or(0, Vec::len),
        0,
        "nothing was submitted: {page}"
    );
    app.stop().await
}

/// Flags take what a user types: a priority in any case, and negative numbers as values (a
/// seed may be negative; a negative `--top-p` reaches the server, which refuses it naming the
/// field, instead of being taken for an unknown flag). An empty `--model`, `--job-type` or
/// `--idempotency-key`, or an empty list filter, is refused before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_takes_priorities_in_any_case_and_negative_numbers() -> anyhow::Result<()> {
    let app = TestApp::builder().without_worker().start().await?;
    let job: serde_json::Value = serde_json::from_str(&app.cli(&[
        "submit",
        "--json",
        "--priority",
        "HIGH",
        "--seed",
        "-7",
        "hello",
    ])?)?;
    assert_eq!(job["queue"], "openai-general-high", "{job}");
    assert_eq!(job["generationConfig"]["seed"], "-7", "{job}");

    let (ok, _, stderr) = app.cli_outcome(&["submit", "--top-p", "-1", "hello"])?;
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("top_p"),
        "the server names the field: {stderr}"
    );
    // An empty value is refused before anything is sent, rather than quietly meaning the
    // default (the server's model, `general`, no key).
    for flag in ["--model", "--job-type", "--idempotency-key"] {
        let (ok, _, stderr) = app.cli_outcome(&["submit", flag, "", "hello"])?;
        assert!(!ok, "{stderr}");
        assert!(stderr.contains(flag), "{stderr}");
    }
    // Nor does an empty filter (or one of spaces) quietly mean "any", or match nothing.
    for (command, flag) in [
        (&["jobs"][..], "--job-type"),
        (&["jobs"], "--tag"),
        (&["admin", "failed"], "--queue"),
        (&["admin", "failed"], "--job-type"),
        (&["admin", "failed"], "--error-code"),
        (&["admin", "audit"], "--tenant"),
        (&["admin", "audit"], "--actor"),
        (&["admin", "audit"], "--action"),
        (&["admin", "audit"], "--outcome"),
    ] {
        for value in ["", "  "] {
            let args = [command, &[flag, value]].concat();
            let (ok, _, stderr) = app.cli_outcome(&args)?;
            assert!(!ok, "{args:?}: {stderr}");
            assert!(
                stderr.contains(flag) && stderr.contains("empty filter"),
                "{stderr}"
            );
        }
    }
    let (ok, _, stderr) = app.cli_outcome(&["admin", "audit", "--since", "0m"])?;
    assert!(!ok && stderr.contains("would select nothing"), "{stderr}");
    // A negative count is a bad value of its flag, not an unknown flag.
    let (ok, _, stderr) = app.cli_outcome(&["submit", "--max-tokens", "-1", "hello"])?;
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("invalid value '-1' for '--max-tokens"),
        "{stderr}"
    );

    let page: serde_json::Value = serde_json::from_str(&app.cli(&["jobs", "--json"])?)?;
    assert_eq!(
        page["jobs"].as_array().map_or(0, Vec::len),
        1,
        "only the first was submitted: {page}"
    );
    app.stop().await
}

/// Runs the `llm-jobs` binary with `args` in `dir`, with no store named in the environment
/// (so the default SQLite file there).
fn in_dir_without_store(
    dir: &std::path::Path,
    args: &[&str],
) -> std::io::Result<std::process::Output> {
    std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("LLMJOBS_SQLITE_PATH")
        .output()
}

/// `cleanup`, `keys list` and `keys revoke` work on an existing store: run where there is no
/// SQLite file, they say where they looked, and leave no empty store behind (`cleanup` used
/// to fail on a missing table, `keys list` to list an empty store it had just made).
#[test]
fn commands_on_an_existing_store_refuse_a_missing_sqlite_file() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("llmjobs_it_nostore_{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for args in [
        &["cleanup", "--older-than", "30d", "--dry-run"][..],
        &["keys", "list"][..],
        &["keys", "revoke", "llmj_nothing"][..],
    ] {
        let out = in_dir_without_store(&dir, args)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.contains("no store at llm-jobs.db"),
            "{args:?}: {stderr}"
        );
    }
    assert!(
        std::fs::read_dir(&dir)?.next().is_none(),
        "nothing was created"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// A tenant of spaces only is refused, as an empty one is: it would be a tenant nobody can
/// type back. `keys list` refuses such a tenant filter too.
#[test]
fn keys_create_refuses_a_tenant_of_spaces() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("llmjobs_it_spaces_{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let out = in_dir_without_store(
        &dir,
        &["keys", "create", "--tenant", "  ", "--role", "admin"],
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--tenant must be"), "{stderr}");
    assert!(out.stdout.is_empty(), "no key printed");
    // Listing with such a tenant would list nothing, as if there were no keys.
    for tenant in ["", "  "] {
        let out = in_dir_without_store(&dir, &["keys", "list", "--tenant", tenant])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("empty filter"), "{stderr}");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Errors read as one clean line each: a missing key says how to give one, a field violation
/// and its status code show once, a usage error does not list the key taken from the
/// environment as a flag to pass, an unreachable server does not repeat its cause, an unknown
/// status lists the known ones, and a URL with a scheme other than http(s) is refused.
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
    // The status code once, not as a name and again as words.
    let words = stderr
        .to_lowercase()
        .replace("invalidargument", "invalid argument");
    assert_eq!(words.matches("invalid argument").count(), 1, "{stderr}");

    // A key in the environment is not a flag the usage line asks for.
    let out = app.cli_command(&["status"]).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("<JOB_ID>"), "{stderr}");
    assert!(!stderr.contains("--api-key"), "{stderr}");

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

    // A value out of a set names the set.
    let (ok, _, stderr) = app.cli_outcome(&["jobs", "--status", "bogus"])?;
    assert!(!ok);
    assert!(
        stderr.contains("one of queued, running, completed, failed, cancelled"),
        "{stderr}"
    );

    // A scheme other than http or https is refused, not taken for plaintext.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
        .args(["status", "0190b4d2-0000-7000-8000-000000000000"])
        .args(["--server", &format!("ftp://{}", app.addr)])
        .env("LLMJOBS_API_KEY", &app.key)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the scheme must be http:// or https://"),
        "{stderr}"
    );
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

/// A job that did not complete fails `watch` as it fails `result`: a cancelled job exits
/// non-zero from both, in text and in JSON, followed from the start or resumed at its last
/// event, and the error says it was cancelled; a completed job exits zero from both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_result_both_fail_for_a_cancelled_job() -> anyhow::Result<()> {
    // Minutes of tokens: the job runs until it is cancelled.
    let upstream = TestUpstream::start(Reply::slow(10_000, 10, 20)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let job = app.submit(request("long", "gpt-4o-mini")).await?;
    app.wait_for_job(&job.id, |j| j.output_tokens >= 3).await?;
    let mut c = app.client.clone();
    c.cancel_job(v1::CancelJobRequest {
        job_id: job.id.clone(),
        reason: "enough".into(),
    })
    .await?;
    let ended = app
        .wait_for_job(&job.id, |j| {
            j.status() == v1::JobStatus::Cancelled && j.last_sequence > 0
        })
        .await?;
    let last = ended.last_sequence.to_string();
    let id = job.id.as_str();
    let commands: [&[&str]; 5] = [
        &["result", id],
        &["result", "--json", id],
        &["watch", id],
        &["watch", "--json", id],
        &["watch", id, "--after", &last],
    ];
    for args in commands {
        let (ok, stdout, stderr) = app.cli_outcome(args)?;
        assert!(!ok, "{args:?} exits non-zero: {stdout}{stderr}");
        assert!(
            stderr.to_lowercase().contains("cancelled"),
            "{args:?}: {stderr}"
        );
    }
    let (_, stdout, _) = app.cli_outcome(&["watch", "--json", id])?;
    assert!(
        stdout
            .lines()
            .last()
            .is_some_and(|l| l.contains("\"cancelled\"")),
        "the log still ends with its cancelled event: {stdout}"
    );

    let done = app.submit(request("short", "sim")).await?;
    let done = app
        .wait_for_job(&done.id, |j| {
            j.status() == v1::JobStatus::Completed && j.last_sequence > 0
        })
        .await?;
    let last = done.last_sequence.to_string();
    let id = done.id.as_str();
    let commands: [&[&str]; 5] = [
        &["result", id],
        &["result", "--json", id],
        &["watch", id],
        &["watch", "--json", id],
        &["watch", id, "--after", &last],
    ];
    for args in commands {
        let (ok, stdout, stderr) = app.cli_outcome(args)?;
        assert!(ok, "{args:?} exits zero: {stdout}{stderr}");
    }
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
        ("--queue-cap", "LLMJOBS_QUEUE_CAP"),
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

/// The lines of `text` as JSON values. Errors: a line that is not JSON.
fn json_lines(text: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    text.lines()
        .map(|l| serde_json::from_str(l).map_err(|e| anyhow::anyhow!("{e}: {l:?}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_that_prints_a_job_speaks_json() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;

    let job: serde_json::Value = serde_json::from_str(
        &app.cli(&["submit", "--json", "--model", "sim", "--tag", "t1", "hi"])?,
    )?;
    let id = job["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(id.len(), 36, "{job}");
    assert_eq!(job["queue"], "openai-general", "{job}");
    assert_eq!(job["tags"], serde_json::json!(["t1"]), "{job}");
    app.wait_for_job(&id, |j| j.status() == v1::JobStatus::Completed)
        .await?;

    // watch: one JobEvent per line, the whole log in order, ending with its terminal event.
    let events = json_lines(&app.cli(&["watch", "--json", &id])?)?;
    let sequences: Vec<u64> = events
        .iter()
        .map(|e| {
            e["sequence"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        })
        .collect();
    assert_eq!(
        sequences,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "{events:?}"
    );
    assert!(events.iter().all(|e| e["jobId"] == id.as_str()));
    assert!(events[0].get("queued").is_some(), "{:?}", events[0]);
    assert!(events.last().is_some_and(|e| e.get("completed").is_some()));
    // Resuming prints only what follows.
    let rest = json_lines(&app.cli(&["watch", "--json", &id, "--after", "2"])?)?;
    assert_eq!(rest.len(), events.len() - 2);
    assert_eq!(rest[0]["sequence"], events[2]["sequence"]);

    let streamed =
        json_lines(&app.cli(&["submit", "--stream", "--json", "--model", "sim", "hi"])?)?;
    assert!(streamed[0].get("queued").is_some(), "{streamed:?}");
    assert!(
        streamed
            .last()
            .is_some_and(|e| e.get("completed").is_some())
    );

    let status: serde_json::Value = serde_json::from_str(&app.cli(&["status", "--json", &id])?)?;
    assert_eq!(
        (status["id"].as_str(), status["status"].as_str()),
        (Some(id.as_str()), Some("JOB_STATUS_COMPLETED"))
    );
    let cancelled: serde_json::Value = serde_json::from_str(&app.cli(&["cancel", "--json", &id])?)?;
    assert_eq!(
        cancelled["status"], "JOB_STATUS_COMPLETED",
        "an ended job is returned unchanged"
    );
    let page: serde_json::Value =
        serde_json::from_str(&app.cli(&["jobs", "--json", "--tag", "t1"])?)?;
    let listed: Vec<&str> = page["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["id"].as_str())
        .collect();
    assert_eq!(listed, [id.as_str()], "{page}");

    // A failed job's log ends with its failed event on stdout, and the command fails.
    let failing = app
        .submit(request("no such upstream", "gpt-4o-mini"))
        .await?;
    let (ok, stdout, stderr) = app.cli_outcome(&["watch", "--json", &failing.id])?;
    assert!(!ok, "{stdout}");
    let events = json_lines(&stdout)?;
    assert!(
        events.last().is_some_and(|e| e.get("failed").is_some()),
        "{stdout}"
    );
    assert!(stderr.contains("job failed after"), "{stderr}");
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_aligns_its_columns_and_colours_only_on_a_terminal() -> anyhow::Result<()> {
    let long = "a_job_type_whose_name_is_long_enough_to_overflow_old_columns";
    let app = TestApp::builder()
        .job_types(&format!("general,{long}"))
        .start()
        .await?;
    for job_type in ["general", long] {
        let job = app
            .submit(v1::SubmitJobRequest {
                job_type: job_type.into(),
                ..request("hi", "sim")
            })
            .await?;
        app.wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
    }

    // Piped: plain text, every column starting where its header does.
    let table = app.cli(&["jobs"])?;
    assert!(!table.contains('\u{1b}'), "{table:?}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    for header in ["ATTEMPTS", "CREATED", "TAGS"] {
        let at = lines[0]
            .find(header)
            .unwrap_or_else(|| panic!("{header}: {table}"));
        for row in &lines[1..] {
            let cell = row.get(at..).unwrap_or("");
            assert!(
                row.as_bytes().get(at.wrapping_sub(1)) == Some(&b' ') && !cell.starts_with(' '),
                "{header} at {at}: {table}"
            );
        }
    }
    let created = lines[0].find("CREATED").unwrap_or(0);
    assert!(lines[1][created..].starts_with(&today), "{table}");
    assert!(
        lines.iter().any(|l| l.contains(&format!("openai-{long} "))),
        "{table}"
    );

    // On a terminal the status is coloured, and errors say so in colour; NO_COLOR turns it off.
    let on_terminal = |no_color: bool, args: &[&str]| {
        let mut command = app.cli_command(args);
        command.env("TERM", "xterm").env_remove("CLICOLOR_FORCE");
        if no_color {
            command.env("NO_COLOR", "1");
        } else {
            command.env_remove("NO_COLOR");
        }
        crate::support::on_terminal(&command, "")
    };
    let (ok, shown) = on_terminal(false, &["jobs"])?;
    assert!(ok, "{shown}");
    assert!(shown.contains("\u{1b}[32mcompleted\u{1b}[0m"), "{shown:?}");
    let (ok, shown) = on_terminal(false, &["status", "not-a-uuid"])?;
    assert!(!ok);
    assert!(
        shown.contains("\u{1b}[1m\u{1b}[31merror\u{1b}[0m") || shown.contains("\u{1b}[31;1merror"),
        "{shown:?}"
    );
    for args in [&["jobs"][..], &["status", "not-a-uuid"]] {
        let (_, shown) = on_terminal(true, args)?;
        assert!(!shown.contains('\u{1b}'), "NO_COLOR {args:?}: {shown:?}");
    }
    let (ok, _, stderr) = app.cli_outcome(&["status", "not-a-uuid"])?;
    assert!(!ok && stderr.starts_with("error: "), "{stderr:?}");
    app.stop().await
}

/// `llm-jobs <command> --help`.
fn help(command: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
        .args([command, "--help"])
        .output()?;
    anyhow::ensure!(out.status.success(), "{command} --help failed");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Each server command offers the flags of the sides it runs and no others; the environment
/// variables of flags a command does not have are ignored by it, so one environment can
/// serve a gateway and a worker alike.
#[test]
fn each_command_offers_only_the_flags_it_uses() -> anyhow::Result<()> {
    let gateway_only = [
        "--listen",
        "--cors-allowed-origins",
        "--max-connections",
        "--auth",
        "--tls-cert",
        "--max-attempts",
        "--default-model",
        "--max-prompt-bytes",
        "--client-requests-per-minute",
        "--prompt-storage",
    ];
    let worker_only = [
        "--concurrency",
        "--shutdown-grace-secs",
        "--retry-base-ms",
        "--sim-first-token-ms",
        "--upstream-rpm",
        "--pricing-file",
        "--reconcile-secs",
    ];
    let both = [
        "--redis-url",
        "--database-url",
        "--job-types",
        "--lease-secs",
        "--openai-api-key",
        "--openai-base-url",
        "--redact-patterns",
        "--metrics-listen",
    ];
    let offers = |text: &str, flag: &str| text.contains(&format!("{flag} "));
    let (serve, gateway, worker) = (help("serve")?, help("gateway")?, help("worker")?);
    for flag in gateway_only.iter().chain(&worker_only).chain(&both) {
        assert!(offers(&serve, flag), "serve offers {flag}");
    }
    for flag in &both {
        assert!(offers(&gateway, flag) && offers(&worker, flag), "{flag}");
    }
    for flag in &gateway_only {
        assert!(offers(&gateway, flag), "gateway offers {flag}");
        assert!(
            !offers(&worker, flag),
            "worker does not offer {flag}:\n{worker}"
        );
    }
    for flag in &worker_only {
        assert!(offers(&worker, flag), "worker offers {flag}");
        assert!(
            !offers(&gateway, flag),
            "gateway does not offer {flag}:\n{gateway}"
        );
    }
    // Client commands take no server settings.
    let submit = help("submit")?;
    for flag in ["--redis-url", "--listen", "--concurrency"] {
        assert!(!offers(&submit, flag), "{flag}");
    }

    // A flag of the other side is refused...
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
        .args(["worker", "--listen", "127.0.0.1:0"])
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
    // ...but its environment variable is ignored, while the command's own are still read:
    // each process below stops at its own zero, not at the other side's bad value.
    for (command, own, own_flag, other) in [
        (
            "worker",
            "LLMJOBS_WORKER_CONCURRENCY",
            "--concurrency",
            "LLMJOBS_LISTEN",
        ),
        (
            "gateway",
            "LLMJOBS_MAX_BATCH_JOBS",
            "--max-batch-jobs",
            "LLMJOBS_WORKER_CONCURRENCY",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
            .arg(command)
            .env(own, "0")
            .env(other, "not a value")
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(stderr.contains(own_flag), "{command}: {stderr}");
    }
    Ok(())
}
