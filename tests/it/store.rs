//! The store's contract, checked on whichever store the suite runs against (Postgres by
//! default, SQLite with `LLMJOBS_TEST_BACKEND=embedded`): the conditional updates that keep a
//! stale attempt from overwriting a newer one, idempotency keys, and the reconciler's paging.

use std::sync::Arc;

use llm_jobs::{
    job::{ChatMessage, GenerationParams, JobError, JobStatus, NewJob, Outcome, Priority},
    store::{Finish, Store},
};

use crate::support::{ChildWorker, TestApp, connect_when_healthy, free_addr};

/// A test app without a worker (nothing takes the jobs) and its store, opened directly.
async fn store() -> anyhow::Result<(TestApp, Arc<dyn Store>)> {
    let app = TestApp::builder().without_worker().start().await?;
    let store = llm_jobs::store::open(&llm_jobs::config::Database {
        url: app.database_url.clone(),
        sqlite_path: Default::default(),
        pool_size: 2,
        no_migrate: true,
    })
    .await?;
    Ok((app, store))
}

fn new_job(prompt: &str, idempotency_key: Option<&str>) -> NewJob {
    NewJob {
        id: uuid::Uuid::now_v7(),
        job_type: "general".into(),
        priority: Priority::Normal,
        queue: llm_jobs::job::queue_name("general", Priority::Normal),
        messages: vec![ChatMessage {
            role: "user".into(),
            content: prompt.into(),
        }],
        params: GenerationParams {
            model: "sim".into(),
            ..Default::default()
        },
        streaming_mode: Default::default(),
        metadata: [("k".to_owned(), "v".to_owned())].into(),
        idempotency_key: idempotency_key.map(str::to_owned),
        max_attempts: 3,
        timeout: Some(std::time::Duration::from_secs(7)),
        tags: vec!["a".into(), "b".into()],
        tenant: "default".into(),
        discard_prompt: false,
        trace_context: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_attempt_cannot_end_or_requeue_a_newer_one() -> anyhow::Result<()> {
    let (app, store) = store().await?;
    let job = new_job("hello", None);
    let stored = store.insert_job(&job).await?.job;
    assert_eq!(
        (stored.status, stored.attempts, stored.tags.clone()),
        (JobStatus::Queued, 0, job.tags.clone())
    );
    assert_eq!(stored.timeout, job.timeout);
    assert_eq!(stored.metadata, job.metadata);
    assert_eq!(
        store.start_attempt(job.id).await?.map(|j| j.attempts),
        Some(1)
    );
    // The lease was lost and another worker started attempt 2.
    assert_eq!(
        store.start_attempt(job.id).await?.map(|j| j.attempts),
        Some(2)
    );
    let outcome = Outcome {
        content: "stale".into(),
        ..Default::default()
    };
    let stale = store
        .finish_attempt(
            job.id,
            1,
            Finish::Completed(outcome),
            &[],
            Some(3),
            Some(&log_of(1, 3)),
        )
        .await?;
    assert!(stale.is_none(), "attempt 1 no longer owns the job");
    let error = JobError {
        code: "upstream_error".into(),
        message: "boom".into(),
    };
    assert!(!store.retry_attempt(job.id, 1, &error, &[]).await?);
    assert!(
        store
            .get_result(job.id)
            .await?
            .is_some_and(|r| r.outcome.is_none())
    );

    let outcome = Outcome {
        content: "fresh".into(),
        ..Default::default()
    };
    let log = log_of(40, 3);
    let done = store
        .finish_attempt(
            job.id,
            2,
            Finish::Completed(outcome),
            &[],
            Some(42),
            Some(&log),
        )
        .await?
        .expect("attempt 2 owns the job");
    // The log goes with the result (the stale attempt's did not).
    assert_eq!(store.event_log(job.id).await?, Some(log));
    let replaced = log_of(41, 5);
    store
        .store_event_logs(&[(job.id, replaced.clone())])
        .await?;
    assert_eq!(store.event_log(job.id).await?, Some(replaced));
    assert_eq!(
        store.get_job(job.id).await?.map(|j| j.last_sequence),
        Some(45),
        "a log stored later sets the terminal sequence too"
    );
    store.set_last_sequence(job.id, 42).await?;
    assert_eq!(done.status, JobStatus::Completed);
    // The terminal sequence known ahead is stored with the result (the stale one was not).
    assert_eq!(done.last_sequence, 42);
    assert_eq!(
        store.get_job(job.id).await?.map(|j| j.last_sequence),
        Some(42)
    );
    assert!(done.finished_at.is_some());
    let result = store.get_result(job.id).await?.expect("known job");
    assert_eq!(result.outcome.map(|o| o.content).as_deref(), Some("fresh"));
    // Terminal: no attempt starts again, and a cancel changes nothing.
    assert!(store.start_attempt(job.id).await?.is_none());
    assert!(store.cancel_queued(job.id).await?.is_none());
    app.stop().await
}

/// Writes of many jobs at once are group-committed; one that the store refuses (here a job
/// whose id is taken) must fail alone, and every other write of its batch must land whole:
/// job, start, end, result and history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_land_together_and_a_refused_one_fails_alone() -> anyhow::Result<()> {
    use llm_jobs::{
        api::event_codec::ProtoCodec,
        events::Codec,
        progress::{Milestone, MilestoneKind, ProgressEvent, ProgressEventKind as Kind},
    };
    let (app, store) = store().await?;
    let taken = store.insert_job(&new_job("first", None)).await?.job.id;
    let jobs: Vec<NewJob> = (0..120)
        .map(|i| new_job(&format!("job {i}"), None))
        .collect();
    let mut clash = new_job("same id", None);
    clash.id = taken;
    let inserts = futures::future::join_all(
        jobs.iter()
            .chain(std::iter::once(&clash))
            .map(|j| store.insert_job(j)),
    )
    .await;
    let (refused, fresh) = inserts.split_last().expect("121 answers");
    assert!(refused.is_err(), "a second job with a taken id is refused");
    for (job, inserted) in jobs.iter().zip(fresh) {
        let inserted = inserted.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
        assert!(inserted.created);
        assert_eq!(inserted.job.id, job.id);
        assert_eq!(inserted.job.messages[0].content, job.messages[0].content);
    }
    let starts = futures::future::join_all(jobs.iter().map(|j| store.start_attempt(j.id))).await;
    for started in starts {
        let started = started?.expect("a queued job starts");
        assert_eq!((started.status, started.attempts), (JobStatus::Running, 1));
    }
    let milestone = |i: u32| ProgressEvent {
        kind: Kind::Milestone(Milestone {
            kind: MilestoneKind::FirstToken,
            attempt: 1,
            output_tokens: 0,
            fraction: None,
            detail: format!("m{i}"),
        }),
        time: None,
    };
    let ends = futures::future::join_all(jobs.iter().enumerate().map(|(i, j)| {
        let outcome = Outcome {
            content: format!("answer {i}"),
            ..Default::default()
        };
        let history = ProtoCodec.progress_records(vec![milestone(1), milestone(2)]);
        let store = store.clone();
        let id = j.id;
        async move {
            store
                .finish_attempt(id, 1, Finish::Completed(outcome), &history, None, None)
                .await
        }
    }))
    .await;
    for (i, (job, ended)) in jobs.iter().zip(ends).enumerate() {
        assert_eq!(ended?.map(|j| j.status), Some(JobStatus::Completed));
        let stored = store.get_result(job.id).await?.expect("stored");
        let content = stored.outcome.map(|o| o.content);
        assert_eq!(content.as_deref(), Some(format!("answer {i}").as_str()));
        let history = store.progress_history(job.id, None, 10).await?;
        assert_eq!(
            history.len(),
            2,
            "the attempt's history is stored with its end"
        );
    }
    // The refused write changed nothing.
    let first = store.get_job(taken).await?.expect("still there");
    assert_eq!(first.messages[0].content, "first");
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_returns_the_first_job_and_failures_are_kept_in_order()
-> anyhow::Result<()> {
    let (app, store) = store().await?;
    let first = store.insert_job(&new_job("one", Some("key-1"))).await?;
    let again = store.insert_job(&new_job("two", Some("key-1"))).await?;
    assert!(first.created && !again.created);
    assert_eq!(again.job.id, first.job.id);
    assert_eq!(again.job.messages[0].content, "one");
    let other = store.insert_job(&new_job("three", Some("key-2"))).await?;
    assert!(other.created);

    let id = first.job.id;
    for attempt in 1..=2 {
        store.start_attempt(id).await?;
        let error = JobError {
            code: format!("e{attempt}"),
            message: format!("attempt {attempt} failed"),
        };
        assert!(store.retry_attempt(id, attempt, &error, &[]).await?);
    }
    let failures = store.attempt_failures(id).await?;
    let codes: Vec<_> = failures
        .iter()
        .map(|(n, e)| (*n, e.code.as_str()))
        .collect();
    assert_eq!(codes, [(1, "e1"), (2, "e2")]);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_jobs_page_by_id_and_each_comes_once() -> anyhow::Result<()> {
    let (app, store) = store().await?;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            store
                .insert_job(&new_job(&format!("job {i}"), None))
                .await?
                .job
                .id,
        );
    }
    // One ended job is not unfinished.
    store.cancel_queued(ids[3]).await?.expect("queued");
    let before = chrono::Utc::now() + chrono::Duration::seconds(1);
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.unfinished(before, after, 2).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        seen.extend(page.iter().map(|j| j.id));
    }
    let mut want = ids.clone();
    want.remove(3);
    assert_eq!(seen, want, "every unfinished job once, in id order");
    // Nothing changed before an earlier moment.
    let early = chrono::Utc::now() - chrono::Duration::hours(1);
    assert!(store.unfinished(early, None, 10).await?.is_empty());
    app.stop().await
}

/// Starts `llm-jobs serve` with the in-process queue on the store `database_url` twice and
/// checks that the second refuses while the first runs, and starts once the first is gone.
async fn a_second_in_process_server_refuses(database_url: &str) -> anyhow::Result<()> {
    let serve = |addr: &str, stderr: std::process::Stdio| {
        std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
            .args(["serve", "--redis-url", "", "--database-url", database_url])
            .args(["--listen", addr])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
    };
    let addr = free_addr()?;
    let mut first = ChildWorker(serve(&addr, std::process::Stdio::null())?);
    connect_when_healthy(&addr).await?;
    let second = serve(&free_addr()?, std::process::Stdio::piped())?;
    let out = tokio::task::spawn_blocking(move || second.wait_with_output()).await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second server must not run");
    assert!(
        stderr.contains("another llm-jobs server"),
        "says why: {stderr}"
    );
    // The first one is unaffected, and once it is gone the store can be used again.
    first.signal("TERM")?;
    assert!(first.wait().await?.success());
    let addr = free_addr()?;
    let mut again = ChildWorker(serve(&addr, std::process::Stdio::null())?);
    connect_when_healthy(&addr).await?;
    again.signal("TERM")?;
    assert!(again.wait().await?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_embedded_server_on_the_same_sqlite_file_refuses_to_start() -> anyhow::Result<()> {
    // Two in-process queues on one store would each re-run the other's unfinished jobs.
    let dir = scratch_dir("lock")?;
    let url = format!("sqlite://{}", dir.join("jobs.db").display());
    a_second_in_process_server_refuses(&url).await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// A new directory of its own under the system's temporary directory (`llmjobs_it_{label}_`
/// and a UUID), for a test's SQLite files; the test removes it.
fn scratch_dir(label: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("llmjobs_it_{label}_{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Drops a Postgres database a test made outside the harness.
pub(crate) async fn drop_database(database: &str) -> anyhow::Result<()> {
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    let admin = format!("{}/postgres", crate::support::postgres_server_url());
    let mut conn = AsyncPgConnection::establish(&admin).await?;
    diesel::sql_query(format!(
        "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
    ))
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// Deletes the Redis keys of `prefix`.
pub(crate) async fn delete_redis_keys(prefix: &str) -> anyhow::Result<()> {
    let url = crate::support::redis_url();
    let mut r = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    for pattern in [format!("{prefix}:*"), format!("{{{prefix}}}:*")] {
        let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut r).await?;
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut r).await?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_claim_sees_through_symlinks_and_keeps_redis_servers_off_an_embedded_store()
-> anyhow::Result<()> {
    let dir = scratch_dir("claim")?;
    let file = dir.join("jobs.db");
    let alias = dir.join("alias.db");
    let bin = env!("CARGO_BIN_EXE_llm-jobs");
    let outcome = async {
        let addr = free_addr()?;
        let mut embedded = ChildWorker(
            std::process::Command::new(bin)
                .args(["serve", "--redis-url", "", "--sqlite-path"])
                .arg(&file)
                .args(["--listen", &addr])
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?,
        );
        connect_when_healthy(&addr).await?;
        std::os::unix::fs::symlink(&file, &alias)?;
        let mut refused = vec![(
            "a second embedded server through a symlink",
            std::process::Command::new(bin)
                .args(["serve", "--redis-url", "", "--sqlite-path"])
                .arg(&alias)
                .args(["--listen", &free_addr()?])
                .output()?,
        )];
        if !crate::support::embedded() {
            let redis = crate::support::redis_url();
            refused.push((
                "a server on Redis",
                std::process::Command::new(bin)
                    .args(["serve", "--redis-url", &redis, "--redis-prefix"])
                    .arg(format!("it-{}", uuid::Uuid::new_v4().simple()))
                    .arg("--sqlite-path")
                    .arg(&file)
                    .args(["--listen", &free_addr()?])
                    .output()?,
            ));
        }
        for (who, out) in refused {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{who} must not start");
            assert!(stderr.contains("in-process queue"), "{who}: {stderr}");
        }
        embedded.signal("TERM")?;
        embedded.wait().await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_sqlite_store_and_its_companion_files_are_private() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // A server process under the usual umask 022 (files 0644 unless the server says
    // otherwise) creates and migrates a new store, whichever backend the suite runs on.
    let dir = scratch_dir("mode")?;
    let db = dir.join("jobs.db");
    let addr = free_addr()?;
    let mut server = ChildWorker(
        std::process::Command::new("sh")
            .args(["-c", "umask 022 && exec \"$0\" \"$@\""])
            .arg(env!("CARGO_BIN_EXE_llm-jobs"))
            .args(["serve", "--redis-url", "", "--listen", &addr])
            .arg("--database-url")
            .arg(format!("sqlite://{}", db.display()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?,
    );
    connect_when_healthy(&addr).await?;
    let mut seen = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal", ".lock"] {
        let path = dir.join(format!("jobs.db{suffix}"));
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
        seen.push(suffix);
    }
    assert!(
        seen.contains(&"") && seen.contains(&"-wal"),
        "the store and its write-ahead log exist: {seen:?}"
    );
    server.signal("TERM")?;
    assert!(server.wait().await?.success());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// A SQLite path that names a directory is refused saying so, not after a warning about the
/// directory's permissions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_path_naming_a_directory_is_refused_saying_so() -> anyhow::Result<()> {
    let dir = scratch_dir("dir-as-store")?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
        .args(["keys", "list"])
        .env_remove("DATABASE_URL")
        .env("LLMJOBS_SQLITE_PATH", &dir)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("is a directory"), "{stderr}");
    assert!(!stderr.contains("chmod"), "{stderr}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Tests about Redis or Postgres themselves, or about processes sharing them: the embedded
/// pass filters them out by name (`-- --skip ::servers::`, as `scripts/test` does).
mod servers {
    use super::*;

    /// A Postgres that hangs (a frozen server, a path that drops packets) rather than refuses:
    /// a hot-path write answers UNAVAILABLE in bounded time instead of holding its caller.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_to_a_hung_postgres_fails_in_bounded_time() -> anyhow::Result<()> {
        crate::support::needs_servers("a Postgres server that hangs");
        let app = TestApp::builder().without_worker().start().await?;
        let server = crate::support::postgres_server_url();
        let host = server.rsplit('@').next().unwrap_or(&server).to_owned();
        let proxy = crate::support::proxy::Proxy::start(&host).await?;
        let store = llm_jobs::store::open(&llm_jobs::config::Database {
            url: app.database_url.replace(&host, &proxy.addr),
            sqlite_path: Default::default(),
            pool_size: 2,
            no_migrate: true,
        })
        .await?;
        store.insert_job(&new_job("before", None)).await?;
        proxy.hold();
        let during = tokio::time::timeout(
            crate::support::PATIENCE,
            store.insert_job(&new_job("during", None)),
        )
        .await
        .expect("the write answers while Postgres hangs");
        let e = during.expect_err("a hung Postgres stores nothing");
        assert!(e.is_unavailable(), "{e}");
        proxy.release();
        // The store recovers once Postgres answers again.
        let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
        while let Err(e) = store.insert_job(&new_job("after", None)).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the store did not recover: {e}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        app.stop().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_in_process_server_on_the_same_postgres_database_refuses_to_start()
    -> anyhow::Result<()> {
        crate::support::needs_servers("needs a Postgres server");
        let database = format!("llmjobs_it_{}", uuid::Uuid::new_v4().simple());
        let url = format!("{}/{database}", crate::support::postgres_server_url());
        let outcome = a_second_in_process_server_refuses(&url).await;
        drop_database(&database).await?;
        outcome
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_embedded_store_copied_into_postgres_keeps_its_jobs_results_and_keys()
    -> anyhow::Result<()> {
        crate::support::needs_servers("copies into a Postgres server");
        use llm_jobs::proto::v1::{self, job_service_client::JobServiceClient};
        let dir = scratch_dir("copy")?;
        let file = dir.join("jobs.db");
        let sqlite = format!("sqlite://{}", file.display());
        let database = format!("llmjobs_it_{}", uuid::Uuid::new_v4().simple());
        let postgres = format!("{}/{database}", crate::support::postgres_server_url());
        let prefix = format!("it-{}", uuid::Uuid::new_v4().simple());
        let bin = env!("CARGO_BIN_EXE_llm-jobs");
        let serve = |args: &[&str]| -> anyhow::Result<(ChildWorker, String)> {
            let addr = free_addr()?;
            let child = std::process::Command::new(bin)
                .arg("serve")
                .args(args)
                .args(["--listen", &addr, "--sim-first-token-ms", "0"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?;
            Ok((ChildWorker(child), addr))
        };
        let outcome = async {
            // An embedded server with two finished jobs, submitted with a key of tenant `acme`.
            let (mut embedded, addr) = serve(&["--redis-url", "", "--database-url", &sqlite])?;
            let channel = connect_when_healthy(&addr).await?;
            let key = crate::support::make_key(&sqlite, "acme", llm_jobs::auth::Role::User).await?;
            let mut c = JobServiceClient::new(crate::support::with_key(channel, Some(&key))?);
            let mut before = Vec::new();
            for prompt in ["first", "second"] {
                let events = crate::support::collect(
                    c.submit_and_stream(crate::support::request(prompt, "sim"))
                        .await?
                        .into_inner(),
                )
                .await?;
                let id = events.first().map(|e| e.job_id.clone()).unwrap_or_default();
                let result = c
                    .get_job_result(v1::GetJobResultRequest { job_id: id })
                    .await?
                    .into_inner();
                before.push(result);
            }
            embedded.signal("TERM")?;
            anyhow::ensure!(embedded.wait().await?.success(), "embedded server failed");

            let copy = |target: &str| {
                std::process::Command::new(bin)
                    .args(["copy-store", "--sqlite-path"])
                    .arg(&file)
                    .args(["--to", target])
                    .output()
            };
            let out = copy(&postgres)?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                stdout.starts_with("copied 2 job(s) (2 result(s)"),
                "{stdout}"
            );
            // A second copy into the same database is refused: nothing doubles.
            let again = copy(&postgres)?;
            assert!(!again.status.success());
            assert!(String::from_utf8_lossy(&again.stderr).contains("already holds"));

            // Redis + Postgres on the copy: the same key works and sees the same results.
            let redis = crate::support::redis_url();
            let (mut server, addr) = serve(&[
                "--redis-url",
                &redis,
                "--redis-prefix",
                &prefix,
                "--database-url",
                &postgres,
            ])?;
            let channel = connect_when_healthy(&addr).await?;
            let mut c = JobServiceClient::new(crate::support::with_key(channel, Some(&key))?);
            for old in &before {
                let now = c
                    .get_job_result(v1::GetJobResultRequest {
                        job_id: old.job_id.clone(),
                    })
                    .await?
                    .into_inner();
                assert_eq!(now.content, old.content);
                assert_eq!(now.usage, old.usage);
                assert_eq!(now.status, old.status);
            }
            let listed = c
                .list_jobs(v1::ListJobsRequest::default())
                .await?
                .into_inner();
            assert_eq!(listed.jobs.len(), 2, "the key's tenant sees its two jobs");
            server.signal("TERM")?;
            server.wait().await?;
            Ok::<_, anyhow::Error>(())
        }
        .await;
        drop_database(&database).await?;
        delete_redis_keys(&prefix).await?;
        let _ = std::fs::remove_dir_all(&dir);
        outcome
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_with_sqlite_lets_a_gateway_and_a_worker_process_share_one_file()
    -> anyhow::Result<()> {
        crate::support::needs_servers("needs Redis");
        use llm_jobs::proto::v1::{self, job_service_client::JobServiceClient};
        let dir = scratch_dir("mixed")?;
        let sqlite = format!("sqlite://{}", dir.join("jobs.db").display());
        let prefix = format!("it-{}", uuid::Uuid::new_v4().simple());
        let redis = crate::support::redis_url();
        let addr = free_addr()?;
        let spawn = |command: &str, own: &[&str]| -> anyhow::Result<ChildWorker> {
            Ok(ChildWorker(
                std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
                    .arg(command)
                    .args(["--redis-url", &redis, "--redis-prefix", &prefix])
                    .args(["--database-url", &sqlite])
                    .args(own)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()?,
            ))
        };
        let outcome = async {
            let migrated = std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
                .args(["migrate", "--database-url", &sqlite])
                .output()?;
            anyhow::ensure!(migrated.status.success(), "migrate failed");
            let mut gateway = spawn("gateway", &["--listen", &addr])?;
            let mut worker = spawn("worker", &["--sim-first-token-ms", "0"])?;
            let key = crate::support::make_key(&sqlite, "t", llm_jobs::auth::Role::User).await?;
            let channel = connect_when_healthy(&addr).await?;
            let mut c = JobServiceClient::new(crate::support::with_key(channel, Some(&key))?);
            let events = crate::support::collect(
                c.submit_and_stream(crate::support::request("mixed", "sim"))
                    .await?
                    .into_inner(),
            )
            .await?;
            let id = events.first().map(|e| e.job_id.clone()).unwrap_or_default();
            let result = c
                .get_job_result(v1::GetJobResultRequest { job_id: id })
                .await?
                .into_inner();
            assert_eq!(result.status(), v1::JobStatus::Completed);
            assert!(!result.content.is_empty());
            assert_eq!(crate::support::text_of(&events), result.content);
            for p in [&mut gateway, &mut worker] {
                p.signal("TERM")?;
                p.wait().await?;
            }
            Ok::<_, anyhow::Error>(())
        }
        .await;
        delete_redis_keys(&prefix).await?;
        let _ = std::fs::remove_dir_all(&dir);
        outcome
    }
}

/// A stored log of `count` token deltas from `first`.
pub(crate) fn log_of(first: u64, count: u64) -> llm_jobs::events::archive::Archive {
    use llm_jobs::events::{EventKind, event::TokenDelta};
    let codec = llm_jobs::api::event_codec::ProtoCodec;
    let mut log = llm_jobs::events::archive::Builder::new(first);
    for i in 0..count {
        log.push(
            &codec,
            &llm_jobs::events::event(EventKind::TokenDelta(TokenDelta {
                text: format!("t{i}"),
                output_tokens: i + 1,
                ..Default::default()
            })),
        );
    }
    log.finish().expect("a first sequence")
}

/// The health report's upstream error rate counts the attempts the upstream failed, not those
/// lost with their worker, stopped by a shutdown, timed out as a whole or ended by a bug
/// (`admin health` blamed the upstream for those with only the simulator in use).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_error_rate_counts_only_what_the_upstream_failed() -> anyhow::Result<()> {
    let (app, store) = store().await?;
    let id = store.insert_job(&new_job("rate", None)).await?.job.id;
    let window = std::time::Duration::from_secs(300);
    let fail = |code: &str| JobError {
        code: code.into(),
        message: "m".into(),
    };
    for (attempt, code) in [
        (1, "worker_lost"),
        (2, "worker_shutdown"),
        (3, "timeout"),
        (4, "internal_error"),
    ] {
        store
            .record_attempt_failure(id, attempt, &fail(code))
            .await?;
    }
    assert_eq!(store.upstream_error_rate(window).await?, 0.0);
    store
        .record_attempt_failure(id, 5, &fail("upstream_server_error"))
        .await?;
    store
        .record_attempt_failure(id, 6, &fail("first_token_timeout"))
        .await?;
    assert_eq!(store.upstream_error_rate(window).await?, 1.0);
    app.stop().await
}
