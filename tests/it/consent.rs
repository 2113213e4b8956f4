//! Commands that delete or change many jobs at once (`cleanup`, `admin retry` and `admin
//! forget` without ids) ask first on a terminal, refuse without one unless `--yes`, and count
//! what they would touch with `--dry-run`; `cleanup` needs a unit on its age.

use llm_jobs::proto::v1;

use crate::{
    admin::fail_one,
    support::{
        TestApp, on_terminal, request,
        upstream::{Reply, TestUpstream},
    },
};

/// `llm-jobs cleanup <args>` on this test's database (stdin: nothing, not a terminal).
fn cleanup(app: &TestApp, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"));
    command
        .arg("cleanup")
        .args(args)
        .args(["--database-url", &app.database_url])
        .stdin(std::process::Stdio::null());
    command
}

/// (exit code, stdout, stderr) of `command`.
fn run(mut command: std::process::Command) -> anyhow::Result<(Option<i32>, String, String)> {
    let out = command.output()?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_needs_a_unit_and_consent_and_counts_in_a_dry_run() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let mut old = Vec::new();
    for (prompt, days) in [("oldest", 40), ("old", 31)] {
        let job = app.submit(request(prompt, "sim")).await?;
        app.wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
        app.sql(&format!(
            "UPDATE jobs SET finished_at = {} WHERE id = '{}'",
            app.ago_sql(days * 86_400),
            job.id
        ))
        .await?;
        old.push(job);
    }
    let oldest_day = (chrono::Utc::now() - chrono::Duration::days(40))
        .format("%Y-%m-%d")
        .to_string();
    let recent = app.submit(request("recent", "sim")).await?;
    app.wait_for_job(&recent.id, |j| j.status() == v1::JobStatus::Completed)
        .await?;
    let jobs = app.count("jobs").await?;

    // A bare number is refused by clap (exit 2, naming the flag), whatever unit was meant.
    let (code, stdout, stderr) = run(cleanup(&app, &["--older-than", "30", "--yes"]))?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--older-than") && stderr.contains("no unit"),
        "{stderr}"
    );
    assert!(stdout.is_empty());

    // No terminal and no --yes: refused before anything is read or deleted.
    let (code, stdout, stderr) = run(cleanup(&app, &["--older-than", "30d"]))?;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("pass --yes"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(app.count("jobs").await?, jobs);

    // A dry run counts, names the oldest and newest end, and deletes nothing.
    let (code, stdout, stderr) = run(cleanup(&app, &["--older-than", "30d", "--dry-run"]))?;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("would delete 2 job(s)"), "{stdout}");
    assert!(
        stdout.contains(&format!("the oldest ended at {oldest_day}")),
        "{stdout}"
    );
    assert!(stdout.contains("nothing deleted"), "{stdout}");
    assert_eq!(app.count("jobs").await?, jobs);

    // On a terminal it asks, showing the same figures; anything but yes deletes nothing.
    let (ok, shown) = on_terminal(&cleanup(&app, &["--older-than", "30d"]), "n\n")?;
    assert!(!ok, "{shown}");
    assert!(
        shown.contains("Delete 2 job(s) that ended before") && shown.contains("[y/N]"),
        "{shown}"
    );
    assert!(shown.contains("not confirmed: nothing deleted"), "{shown}");
    assert_eq!(app.count("jobs").await?, jobs);
    let (ok, shown) = on_terminal(&cleanup(&app, &["--older-than", "30d"]), "y\n")?;
    assert!(ok, "{shown}");
    assert!(shown.contains("deleted 2 job(s)"), "{shown}");
    assert_eq!(app.count("jobs").await?, jobs - 2);
    let mut c = app.client.clone();
    for job in &old {
        let gone = c
            .get_job(v1::GetJobRequest {
                job_id: job.id.clone(),
            })
            .await
            .expect_err("deleted");
        assert_eq!(gone.code(), tonic::Code::NotFound);
    }

    // With nothing left to delete, nobody is asked.
    let (ok, shown) = on_terminal(&cleanup(&app, &["--older-than", "30d"]), "")?;
    assert!(ok, "{shown}");
    assert!(shown.contains("nothing to delete"), "{shown}");
    assert!(!shown.contains("[y/N]"), "{shown}");
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_and_forget_without_ids_ask_first() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::fixture("basic.sse")).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let first = fail_one(&app, &upstream, "first").await?;
    let second = fail_one(&app, &upstream, "second").await?;
    let failed = async || -> anyhow::Result<usize> {
        Ok(app
            .admin_client()?
            .list_failed_jobs(v1::ListFailedJobsRequest::default())
            .await?
            .into_inner()
            .failed_jobs
            .len())
    };

    // Without a terminal, every failed job is not touched without --yes.
    for verb in ["retry", "forget"] {
        let (ok, stdout, stderr) = app.cli_outcome(&["admin", verb])?;
        assert!(!ok, "{verb}: {stdout}");
        assert!(stderr.contains("pass --yes"), "{verb}: {stderr}");
    }
    assert_eq!(failed().await?, 2);

    // A dry run counts them (and names when they failed), through the same filter.
    let out = app.cli(&["admin", "retry", "--dry-run"])?;
    assert!(
        out.starts_with("2 failed job(s) (failed between ") && out.contains("nothing changed"),
        "{out}"
    );
    let out = app.cli(&[
        "admin",
        "forget",
        "--dry-run",
        "--queue",
        "openai-general-high",
    ])?;
    assert!(out.starts_with("0 failed job(s)"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&app.cli(&["admin", "--json", "retry", "--dry-run"])?)?;
    assert_eq!(
        json["failedJobs"].as_array().map_or(0, Vec::len),
        2,
        "{json}"
    );
    assert_eq!(failed().await?, 2);

    // Ids and a filter or a dry run do not mix: the ids alone would decide.
    let (ok, _, stderr) = app.cli_outcome(&["admin", "retry", &first.id, "--dry-run"])?;
    assert!(!ok && stderr.contains("cannot be used with"), "{stderr}");

    // On a terminal it asks; a no leaves them.
    let (ok, shown) = app.cli_on_terminal(&["admin", "forget"], "no\n")?;
    assert!(!ok, "{shown}");
    assert!(shown.contains("Forget 2 failed job(s)"), "{shown}");
    assert!(
        shown.contains("not confirmed: nothing forgotten"),
        "{shown}"
    );
    assert_eq!(failed().await?, 2);

    // --yes goes ahead, within the filter.
    let out = app.cli(&["admin", "retry", "--yes", "--queue", "openai-general-high"])?;
    assert!(out.starts_with("0 job(s) queued again"), "{out}");
    let out = app.cli(&["admin", "retry", "--yes", "--queue", "openai-general"])?;
    assert!(out.starts_with("2 job(s) queued again"), "{out}");
    for job in [&first, &second] {
        app.wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Completed)
            .await?;
    }

    // A yes on the terminal goes ahead too.
    fail_one(&app, &upstream, "third").await?;
    let (ok, shown) = app.cli_on_terminal(&["admin", "forget"], "y\n")?;
    assert!(ok, "{shown}");
    assert!(shown.contains("1 failed job(s) forgotten"), "{shown}");
    assert_eq!(failed().await?, 0);
    app.stop().await
}

/// `admin purge` cancels every pending job of a queue: it asks first as retry and forget do
/// (found by a new user's trial: it went ahead with nobody asked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_asks_first_and_counts_in_a_dry_run() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let queue = "openai-general-low";
    app.cli(&["admin", "pause", queue])?;
    let mut ids = Vec::new();
    for prompt in ["one", "two"] {
        let job = app
            .submit(v1::SubmitJobRequest {
                priority: v1::Priority::Low.into(),
                ..request(prompt, "sim")
            })
            .await?;
        ids.push(job.id);
    }
    let still_queued = async || -> anyhow::Result<bool> {
        let mut all = true;
        for id in &ids {
            let job = app
                .client
                .clone()
                .get_job(v1::GetJobRequest { job_id: id.clone() })
                .await?
                .into_inner();
            all &= job.status() == v1::JobStatus::Queued;
        }
        Ok(all)
    };

    let (ok, stdout, stderr) = app.cli_outcome(&["admin", "purge", queue])?;
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("pass --yes"), "{stderr}");
    assert!(still_queued().await?, "refused: nothing cancelled");

    let dry = app.cli(&["admin", "purge", queue, "--dry-run"])?;
    assert!(dry.contains("2 pending job(s) would be cancelled"), "{dry}");
    assert!(still_queued().await?, "a dry run cancels nothing");

    let done = app.cli(&["admin", "purge", queue, "--yes"])?;
    assert!(done.contains("2 pending job(s) cancelled"), "{done}");
    for id in &ids {
        let job = app
            .client
            .clone()
            .get_job(v1::GetJobRequest { job_id: id.clone() })
            .await?
            .into_inner();
        assert_eq!(job.status(), v1::JobStatus::Cancelled);
    }
    app.stop().await
}
