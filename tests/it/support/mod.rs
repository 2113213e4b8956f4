//! Test harness: a real llm-jobs (gateway + worker) on port 0 against real backends, each test
//! in its own Redis key prefix and its own database, with a real tonic client that sends an
//! admin API key (tenant `default`) made for the test.
//!
//! Backends (`LLMJOBS_TEST_BACKEND`): `redis`, the default, is production's Redis + Postgres;
//! `embedded` is the embedded mode's in-process queue, event log and rate limits with a
//! SQLite file per test (in the system's temporary directory). Tests about Redis or Postgres
//! themselves, or about several processes sharing Redis, live in a `servers` module of their
//! file, which the embedded pass filters out (see [`needs_servers`]). Tests that edit the database directly go through [`TestApp::sql`].
//!
//! Environment: `LLMJOBS_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`),
//! `LLMJOBS_TEST_POSTGRES_URL` (server URL without database, default
//! `postgres://postgres@127.0.0.1:5432`).

#![allow(dead_code)]

pub mod proxy;
pub mod upstream;

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use llm_jobs::{
    app,
    auth::{Role, client::Bearer},
    cli::{Cli, Command, client::Channel},
    proto::v1::{
        self, batch_service_client::BatchServiceClient, job_event::Kind,
        job_service_client::JobServiceClient, queue_admin_service_client::QueueAdminServiceClient,
    },
};
use secrecy::ExposeSecret;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

/// Longest any test waits for something that should happen in well under a second; a guard
/// against hangs, not a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The test Redis's URL.
pub fn redis_url() -> String {
    std::env::var("LLMJOBS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `host:port` of the test Redis (to put a [`proxy::Proxy`] in front of it).
pub fn redis_host() -> String {
    redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned()
}

/// True when the suite runs against the embedded backends (`LLMJOBS_TEST_BACKEND=embedded`:
/// in-process queue and event log, SQLite store).
pub fn embedded() -> bool {
    std::env::var("LLMJOBS_TEST_BACKEND").is_ok_and(|b| b.trim() == "embedded")
}

/// Marks a test that needs Redis and Postgres servers (`reason`: what one process without them
/// cannot give). Such tests live in a `servers` module of their file, which the embedded pass
/// filters out by name (`-- --skip ::servers::`), so they show as filtered out there, never as
/// passed. Run under the embedded backends anyway, the test fails saying so.
pub fn needs_servers(reason: &str) {
    assert!(
        !embedded(),
        "this test needs Redis and Postgres ({reason}); the embedded pass skips it with \
         `-- --skip ::servers::` (scripts/test does)"
    );
}

/// [`needs_servers`] for a test that starts `llm-jobs worker` processes: they share the queue
/// through Redis, which one process without it cannot give.
pub fn needs_worker_processes() {
    needs_servers("starts `llm-jobs worker` processes, which share the queue through Redis");
}

/// The server URL (no database) of the test Postgres.
pub fn postgres_server_url() -> String {
    std::env::var("LLMJOBS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Builds a [`TestApp`].
pub struct TestAppBuilder {
    upstream: Option<String>,
    concurrency: usize,
    max_attempts: u32,
    job_types: String,
    extra: Vec<String>,
    worker: bool,
    wait_until_serving: bool,
    api_key: bool,
}

impl TestAppBuilder {
    /// Upstream base URL (`.../v1`).
    pub fn upstream(mut self, base_url: String) -> Self {
        self.upstream = Some(base_url);
        self
    }

    /// Worker slots.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Attempts per job.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Configured job types, comma-separated.
    pub fn job_types(mut self, types: &str) -> Self {
        self.job_types = types.into();
        self
    }

    /// Return as soon as the server answers health checks, whatever it answers (tests of a
    /// dependency that is down).
    pub fn without_waiting_for_serving(mut self) -> Self {
        self.wait_until_serving = false;
        self
    }

    /// Run as a fresh install would: no API key and the default OpenAI base URL.
    pub fn without_api_key(mut self) -> Self {
        self.api_key = false;
        self
    }

    /// Run without the in-process worker (tests that run workers as child processes, or
    /// whose jobs must stay queued). Under the in-process backends a gateway cannot run alone:
    /// the worker runs with every queue of the test's job types paused instead, so jobs still
    /// stay queued (tests that then start worker processes skip themselves).
    pub fn without_worker(mut self) -> Self {
        self.worker = false;
        self
    }

    /// A `serve` switch without a value.
    pub fn flag(mut self, flag: &str) -> Self {
        self.extra.push(flag.into());
        self
    }

    /// Any other `serve` flag.
    pub fn arg(mut self, flag: &str, value: &str) -> Self {
        self.extra.push(flag.into());
        self.extra.push(value.into());
        self
    }

    /// Starts gateway and worker and connects a client.
    pub async fn start(self) -> anyhow::Result<TestApp> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("it-{id}");
        let database = format!("llmjobs_it_{id}");
        let database_url = if embedded() {
            let file = std::env::temp_dir().join(format!("{database}.db"));
            format!("sqlite://{}", file.display())
        } else {
            format!("{}/{database}", postgres_server_url())
        };
        let redis_url = if embedded() {
            String::new()
        } else {
            redis_url()
        };
        let mut args: Vec<String> = [
            "llm-jobs",
            "serve",
            "--redis-url",
            &redis_url,
            "--redis-prefix",
            &prefix,
            "--database-url",
            &database_url,
            "--database-pool-size",
            "4",
            "--redis-pool-size",
            "8",
            "--job-types",
            &self.job_types,
            "--concurrency",
            &self.concurrency.to_string(),
            "--max-attempts",
            &self.max_attempts.to_string(),
            "--retry-base-ms",
            "10",
            "--retry-cap-ms",
            "50",
            "--sim-first-token-ms",
            "0",
            "--sim-tokens-per-second",
            "2000",
            "--shutdown-grace-secs",
            "2",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        if self.api_key {
            for a in [
                "--openai-api-key",
                "sk-test-key",
                "--openai-base-url",
                self.upstream.as_deref().unwrap_or("http://127.0.0.1:9/v1"),
                "--default-model",
                "gpt-4o-mini",
            ] {
                args.push(a.into());
            }
        }
        args.extend(self.extra);
        let serve_args = args[2..].to_vec();
        let Command::Serve(serve) = Cli::try_parse_from(&args)?.command else {
            anyhow::bail!("not a serve command");
        };
        let mut cfg = app::Config::from(serve);
        if !(self.worker || embedded()) {
            cfg.worker = None;
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let admin_listener = TcpListener::bind("127.0.0.1:0").await?;
        let metrics_addr = admin_listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let handle = tokio::spawn(async move {
            app::run(
                cfg,
                app::Listeners {
                    grpc: Some(listener),
                    admin: Some(admin_listener),
                },
                stop,
            )
            .await
        });
        let mut handle = handle;
        let channel = connect(addr, &mut handle, self.wait_until_serving).await?;
        let database_url_for_keys = database_url.clone();
        // With Postgres down no key can be made; a well-formed unknown one then meets the
        // same UNAVAILABLE as every other call.
        let key = match make_key(&database_url_for_keys, "default", Role::Operator).await {
            Ok(key) => key,
            Err(_) => format!("llmj_000000000000_{}", "0".repeat(64)),
        };
        let client = JobServiceClient::new(with_key(channel.clone(), Some(&key))?);
        if !self.worker && embedded() {
            let mut admin = QueueAdminServiceClient::new(with_key(channel.clone(), Some(&key))?);
            for job_type in self.job_types.split(',') {
                for priority in llm_jobs::job::Priority::CLAIM_ORDER {
                    let queue = llm_jobs::job::queue_name(job_type.trim(), priority);
                    admin.pause_queue(v1::PauseQueueRequest { queue }).await?;
                }
            }
        }
        Ok(TestApp {
            addr,
            metrics_addr,
            client,
            channel,
            key,
            shutdown,
            handle: Some(handle),
            database,
            database_url,
            prefix,
            serve_args,
        })
    }
}

/// The flags of `serve_args` (a `serve` command line after `serve`, as `--flag value` pairs
/// and switches) that `llm-jobs <command>` takes: each command offers only the flags of the
/// sides it runs, so a worker is not given `--max-attempts`, nor a gateway `--concurrency`.
pub fn args_for(command: &str, serve_args: &[String]) -> Vec<String> {
    use clap::CommandFactory;
    let cli = Cli::command();
    let find = |name: &str| {
        cli.find_subcommand(name)
            .unwrap_or_else(|| panic!("no `{name}` command"))
    };
    let (serve, wanted) = (find("serve"), find(command));
    let long = |c: &clap::Command, flag: &str| {
        c.get_arguments()
            .find(|a| a.get_long() == Some(flag.trim_start_matches("--")))
            .cloned()
    };
    let mut out = Vec::new();
    let mut rest = serve_args;
    while let Some(flag) = rest.first() {
        let takes_value = long(serve, flag).is_none_or(|a| a.get_action().takes_values());
        let n = if takes_value { 2 } else { 1 }.min(rest.len());
        if long(wanted, flag).is_some() {
            out.extend_from_slice(&rest[..n]);
        }
        rest = &rest[n..];
    }
    out
}

/// Connects once the server is ready: health answers SERVING (so migrations ran and Redis and
/// Postgres answer). A bare TCP connect is not enough: the test binds the port before the
/// server accepts on it.
async fn connect(
    addr: SocketAddr,
    handle: &mut JoinHandle<Result<(), app::Error>>,
    wait_until_serving: bool,
) -> anyhow::Result<tonic::transport::Channel> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if handle.is_finished() {
            match handle.await {
                Ok(Err(e)) => anyhow::bail!("the server stopped during start-up: {e}"),
                other => anyhow::bail!("the server stopped during start-up: {other:?}"),
            }
        }
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await
        {
            let serving = HealthClient::new(channel.clone())
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok_and(|r| {
                    !wait_until_serving || r.into_inner().status() == ServingStatus::Serving
                });
            if serving {
                return Ok(channel);
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "server did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Makes an API key of `tenant` with `role` in the database at `database_url`.
pub async fn make_key(database_url: &str, tenant: &str, role: Role) -> anyhow::Result<String> {
    make_key_with(database_url, tenant, role, Default::default()).await
}

/// Makes an API key of `tenant` with `role` and its own client `limits`.
pub async fn make_key_with(
    database_url: &str,
    tenant: &str,
    role: Role,
    limits: llm_jobs::auth::keys::KeyLimits,
) -> anyhow::Result<String> {
    let store = llm_jobs::store::open(&llm_jobs::config::Database {
        url: database_url.to_owned(),
        sqlite_path: Default::default(),
        pool_size: 1,
        no_migrate: true,
    })
    .await?;
    let key = llm_jobs::cli::keys::create(store.as_ref(), tenant, role, "test", limits).await?;
    Ok(key.key.expose_secret().to_owned())
}

/// `channel` sending `key` (none: no key) with every request.
pub fn with_key(channel: tonic::transport::Channel, key: Option<&str>) -> anyhow::Result<Channel> {
    Ok(InterceptedService::new(channel, Bearer::new(key)?))
}

/// A running service with a connected client.
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its admin HTTP listener (`/metrics`, `/healthz`, `/readyz`) listens.
    pub metrics_addr: SocketAddr,
    /// A JobService client sending the test's operator key.
    pub client: JobServiceClient<Channel>,
    /// The bare connection (no key).
    pub channel: tonic::transport::Channel,
    /// The test's operator key (tenant `default`).
    pub key: String,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<Result<(), app::Error>>>,
    /// Postgres database of this test.
    pub database: String,
    /// Its URL.
    pub database_url: String,
    /// Redis key prefix of this test.
    pub prefix: String,
    serve_args: Vec<String>,
}

impl TestApp {
    /// A builder with one job type `general`, 4 slots and 3 attempts.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            upstream: None,
            concurrency: 4,
            max_attempts: 3,
            job_types: "general".into(),
            extra: Vec::new(),
            worker: true,
            wait_until_serving: true,
            api_key: true,
        }
    }

    /// A new key of `tenant` with `role`.
    pub async fn key_for(&self, tenant: &str, role: Role) -> anyhow::Result<String> {
        make_key(&self.database_url, tenant, role).await
    }

    /// A new key of `tenant` with `role` and its own client `limits`.
    pub async fn key_with(
        &self,
        tenant: &str,
        role: Role,
        limits: llm_jobs::auth::keys::KeyLimits,
    ) -> anyhow::Result<String> {
        make_key_with(&self.database_url, tenant, role, limits).await
    }

    /// Starts `llm-jobs gateway` as a child process on this test's Redis prefix and database,
    /// with `extra` flags on top; returns it (killed when dropped) and a bare connection to it
    /// once it answers health checks.
    pub async fn spawn_gateway(
        &self,
        extra: &[&str],
    ) -> anyhow::Result<(ChildWorker, tonic::transport::Channel)> {
        let (child, addr) = self.spawn_gateway_process(extra)?;
        Ok((child, connect_when_healthy(&addr).await?))
    }

    /// Starts `llm-jobs gateway` as [`TestApp::spawn_gateway`] does, without waiting for it;
    /// returns it and the address it listens on. (Under the embedded backends no second
    /// server may use the store: tests that need one skip themselves.)
    pub fn spawn_gateway_process(&self, extra: &[&str]) -> anyhow::Result<(ChildWorker, String)> {
        self.spawn_server_process("gateway", extra, "warn", std::process::Stdio::inherit())
    }

    /// Starts `llm-jobs <command>` (`serve` or `gateway`) as a child process on this test's
    /// Redis prefix, database and upstream and a free port, with `extra` flags on top,
    /// `RUST_LOG=rust_log` and its log output (stderr) going to `stderr`; returns it (killed
    /// when dropped) and the address it listens on, without waiting for it.
    pub fn spawn_server_process(
        &self,
        command: &str,
        extra: &[&str],
        rust_log: &str,
        stderr: std::process::Stdio,
    ) -> anyhow::Result<(ChildWorker, String)> {
        let (mut cmd, addr) = self.server_command(command, extra)?;
        let child = cmd
            .env("RUST_LOG", rust_log)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawn llm-jobs {command}"))?;
        Ok((ChildWorker(child), addr))
    }

    /// The command line of `llm-jobs <command>` (`serve` or `gateway`) on this test's Redis
    /// prefix, database and upstream and a free port, with `extra` flags on top and no admin
    /// listener; and the address it will listen on. For tests that set more of its
    /// environment before spawning it.
    pub fn server_command(
        &self,
        command: &str,
        extra: &[&str],
    ) -> anyhow::Result<(std::process::Command, String)> {
        let addr = free_addr()?;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"));
        cmd.arg(command)
            .args(args_for(command, &self.serve_args))
            .args(["--listen", &addr])
            .args(extra)
            // No admin listener unless a test asks for one (`--metrics-listen`).
            .env("LLMJOBS_METRICS_LISTEN", "off")
            .stdin(std::process::Stdio::null());
        Ok((cmd, addr))
    }

    /// The connection sending `key` (none: no key).
    pub fn keyed(&self, key: Option<&str>) -> anyhow::Result<Channel> {
        with_key(self.channel.clone(), key)
    }

    /// A QueueAdminService client with the test's operator key.
    pub fn admin_client(&self) -> anyhow::Result<QueueAdminServiceClient<Channel>> {
        Ok(QueueAdminServiceClient::new(self.keyed(Some(&self.key))?))
    }

    /// A BatchService client with the test's operator key.
    pub fn batch_client(&self) -> anyhow::Result<BatchServiceClient<Channel>> {
        Ok(BatchServiceClient::new(self.keyed(Some(&self.key))?))
    }

    /// Starts `llm-jobs worker` as a child process on this test's Redis prefix, database and
    /// upstream, with `extra` flags on top. Killed when the handle is dropped.
    pub fn spawn_worker(&self, extra: &[&str]) -> anyhow::Result<ChildWorker> {
        self.spawn_worker_logging(extra, std::process::Stdio::inherit())
    }

    /// [`TestApp::spawn_worker`] with its log output (stderr, `RUST_LOG=warn`) going to
    /// `stderr`, for tests that read what it warned about.
    pub fn spawn_worker_logging(
        &self,
        extra: &[&str],
        stderr: std::process::Stdio,
    ) -> anyhow::Result<ChildWorker> {
        let child = self
            .worker_command(extra)
            .env("RUST_LOG", "warn")
            .stderr(stderr)
            .spawn()
            .context("spawn llm-jobs worker")?;
        Ok(ChildWorker(child))
    }

    /// The command line of `llm-jobs worker` on this test's Redis prefix, database and
    /// upstream, with `extra` flags on top and no admin listener, for tests that set more of
    /// its environment before spawning it.
    pub fn worker_command(&self, extra: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"));
        cmd.arg("worker")
            .args(args_for("worker", &self.serve_args))
            .args(extra)
            // No admin listener unless a test asks for one (`--metrics-listen`).
            .env("LLMJOBS_METRICS_LISTEN", "off")
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// The `llm-jobs` binary with `args`, pointed at this server with the test's operator key.
    pub fn cli_command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"));
        command
            .args(args)
            .args(["--server", &format!("http://{}", self.addr)])
            .env("LLMJOBS_API_KEY", &self.key);
        command
    }

    /// Runs the `llm-jobs` binary with `args` against this server, failing or not; returns
    /// (exit success, stdout, stderr).
    pub fn cli_outcome(&self, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
        let out = self.cli_command(args).output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Runs the `llm-jobs` binary with `args` against this server; its stdout, or an error
    /// with its stderr when it fails.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.cli_command(args).output()?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs the `llm-jobs` binary with `args` against this server on a terminal (see
    /// [`on_terminal`]) where a person types `typed`; returns (exit success, what the
    /// terminal showed).
    pub fn cli_on_terminal(&self, args: &[&str], typed: &str) -> anyhow::Result<(bool, String)> {
        on_terminal(&self.cli_command(args), typed)
    }

    /// Runs `llm-jobs keys <args>` on this test's database; its stdout, or an error with its
    /// stderr.
    pub fn keys_cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
            .args(["keys", "--database-url", &self.database_url])
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A direct connection to this test's Postgres database. Errors under the embedded
    /// backends (use [`TestApp::sql`] for what both stores answer).
    pub async fn db(&self) -> anyhow::Result<diesel_async::AsyncPgConnection> {
        use diesel_async::AsyncConnection;
        anyhow::ensure!(
            !embedded(),
            "no Postgres with LLMJOBS_TEST_BACKEND=embedded"
        );
        Ok(diesel_async::AsyncPgConnection::establish(&self.database_url).await?)
    }

    /// Runs `statement` on this test's database, whichever store it is, and returns the
    /// first column of every row it returns, as text (`CAST(… AS TEXT)` what is not text),
    /// or, for a statement that returns no rows, nothing. Write times with
    /// [`TestApp::now_sql`] and [`TestApp::ago_sql`]; the rest of the SQL the two share.
    pub async fn sql(&self, statement: &str) -> anyhow::Result<Vec<String>> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            v: String,
        }
        let returns = statement
            .trim_start()
            .to_ascii_uppercase()
            .starts_with("SELECT");
        if embedded() {
            let path = self.database_url.trim_start_matches("sqlite://").to_owned();
            let statement = statement.to_owned();
            return tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
                use diesel::{Connection, connection::SimpleConnection};
                let mut conn = diesel::SqliteConnection::establish(&path)?;
                conn.batch_execute("PRAGMA busy_timeout = 5000")?;
                let query = diesel::sql_query(statement);
                if returns {
                    let rows: Vec<Row> = diesel::RunQueryDsl::load(query, &mut conn)?;
                    Ok(rows.into_iter().map(|r| r.v).collect())
                } else {
                    diesel::RunQueryDsl::execute(query, &mut conn)?;
                    Ok(Vec::new())
                }
            })
            .await?;
        }
        use diesel_async::RunQueryDsl;
        let mut conn = self.db().await?;
        if returns {
            let rows: Vec<Row> = diesel::sql_query(statement).load(&mut conn).await?;
            Ok(rows.into_iter().map(|r| r.v).collect())
        } else {
            diesel::sql_query(statement).execute(&mut conn).await?;
            Ok(Vec::new())
        }
    }

    /// The current time as an SQL expression of this test's store (`now()` on Postgres,
    /// microseconds since the epoch on SQLite).
    pub fn now_sql(&self) -> String {
        self.ago_sql(0)
    }

    /// The time `secs` seconds ago as an SQL expression of this test's store.
    pub fn ago_sql(&self, secs: i64) -> String {
        if embedded() {
            format!("(CAST(unixepoch('subsec') * 1000000 AS INTEGER) - {secs} * 1000000)")
        } else {
            format!("(now() - make_interval(secs => {secs}))")
        }
    }

    /// Rows in `table` of this test's database.
    pub async fn count(&self, table: &str) -> anyhow::Result<i64> {
        let rows = self
            .sql(&format!("SELECT CAST(count(*) AS TEXT) AS v FROM {table}"))
            .await?;
        Ok(rows.first().context("count returned no row")?.parse()?)
    }

    /// A connection to the test Redis (this test's keys start with [`TestApp::prefix`]).
    /// Errors under the in-process backends: there is no Redis to look at.
    pub async fn redis(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        anyhow::ensure!(!embedded(), "no Redis with LLMJOBS_TEST_BACKEND=embedded");
        Ok(redis::Client::open(redis_url())?
            .get_multiplexed_async_connection()
            .await?)
    }

    /// Deletes every Redis key of this test (what FLUSHALL does to one tenant), leaving
    /// Postgres as it is.
    pub async fn flush_redis(&self) -> anyhow::Result<()> {
        let mut r = self.redis().await?;
        for pattern in [
            format!("{}:*", self.prefix),
            format!("{{{}}}:*", self.prefix),
        ] {
            let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut r).await?;
            if !keys.is_empty() {
                let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut r).await?;
            }
        }
        Ok(())
    }

    /// Submits a job and returns it.
    pub async fn submit(&self, req: v1::SubmitJobRequest) -> anyhow::Result<v1::Job> {
        let mut c = self.client.clone();
        c.submit_job(req)
            .await?
            .into_inner()
            .job
            .context("no job in response")
    }

    /// `StreamJob` from `after` to the end.
    pub async fn watch(&self, job_id: &str, after: u64) -> anyhow::Result<Vec<v1::JobEvent>> {
        watch_on(self.client.clone(), job_id.into(), after).await
    }

    /// A watcher from the start on a task of its own (the test goes on meanwhile): every
    /// event of the job once it ends, as [`TestApp::watch`] returns them.
    pub fn watch_in_background(
        &self,
        job_id: &str,
    ) -> JoinHandle<anyhow::Result<Vec<v1::JobEvent>>> {
        tokio::spawn(watch_on(self.client.clone(), job_id.into(), 0))
    }

    /// Polls `GetJob` until `done` holds for it.
    pub async fn wait_for_job(
        &self,
        job_id: &str,
        done: impl Fn(&v1::Job) -> bool,
    ) -> anyhow::Result<v1::Job> {
        wait_for_job_on(&self.client, job_id, done).await
    }

    /// `GetJobResult`.
    pub async fn result(&self, job_id: &str) -> anyhow::Result<v1::JobResult> {
        let mut c = self.client.clone();
        Ok(c.get_job_result(v1::GetJobResultRequest {
            job_id: job_id.into(),
        })
        .await?
        .into_inner())
    }

    /// Stops the service and drops its database and Redis keys.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(PATIENCE, h)
                .await
                .context("server did not stop")???;
        }
        if embedded() {
            let file = self.database_url.trim_start_matches("sqlite://");
            for suffix in ["", "-wal", "-shm", ".lock"] {
                let _ = std::fs::remove_file(format!("{file}{suffix}"));
            }
            return Ok(());
        }
        let admin = format!("{}/postgres", postgres_server_url());
        use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
        let mut conn = AsyncPgConnection::establish(&admin).await?;
        diesel::sql_query(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.database
        ))
        .execute(&mut conn)
        .await?;
        self.flush_redis().await
    }
}

/// A bare connection to the server at `addr` once it answers health checks (whatever it
/// answers).
pub async fn connect_when_healthy(addr: &str) -> anyhow::Result<tonic::transport::Channel> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await
            && HealthClient::new(channel.clone())
                .check(HealthCheckRequest::default())
                .await
                .is_ok()
        {
            return Ok(channel);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the server at {addr} did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A worker child process; SIGKILLed when dropped.
pub struct ChildWorker(pub std::process::Child);

impl ChildWorker {
    /// Sends a signal (`STOP`, `CONT`, `TERM`, `KILL`) with the `kill` command.
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.0.id().to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{name} failed");
        Ok(())
    }

    /// Waits for the process to exit (with a deadline); returns its exit status.
    pub async fn wait(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.0.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "worker did not exit"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ChildWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// `StreamJob` on `client` from `after` to the end.
async fn watch_on(
    mut client: JobServiceClient<Channel>,
    job_id: String,
    after: u64,
) -> anyhow::Result<Vec<v1::JobEvent>> {
    let stream = client
        .stream_job(v1::StreamJobRequest {
            job_id,
            after_sequence: after,
        })
        .await?
        .into_inner();
    collect(stream).await
}

/// Collects a stream to its end (error statuses fail).
pub async fn collect(
    mut stream: tonic::Streaming<v1::JobEvent>,
) -> anyhow::Result<Vec<v1::JobEvent>> {
    let mut out = Vec::new();
    let run = async {
        while let Some(ev) = stream.next().await {
            out.push(ev?);
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::time::timeout(PATIENCE, run)
        .await
        .context("stream did not end")??;
    Ok(out)
}

/// The text a client assembles from events: deltas appended, reset on a new attempt.
pub fn text_of(events: &[v1::JobEvent]) -> String {
    let mut text = String::new();
    for ev in events {
        match &ev.kind {
            Some(Kind::Started(_)) => text.clear(),
            Some(Kind::TokenDelta(d)) => text.push_str(&d.text),
            Some(Kind::Snapshot(s)) => text = s.content.clone(),
            _ => {}
        }
    }
    text
}

/// The events that carry the job itself (queued, started, deltas, failures, terminal), without
/// the progress reporting (stage changes, milestones, progress updates) whose number depends
/// on timing.
pub fn core_events(events: &[v1::JobEvent]) -> Vec<&v1::JobEvent> {
    events
        .iter()
        .filter(|e| {
            !matches!(
                e.kind,
                Some(Kind::StageChanged(_) | Kind::Milestone(_) | Kind::Progress(_))
            )
        })
        .collect()
}

/// Asserts sequences rise by one from `after + 1` and exactly one terminal event ends the list.
pub fn assert_well_formed(events: &[v1::JobEvent], after: u64) {
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(
            ev.sequence,
            after + 1 + i as u64,
            "sequence gap or duplicate at {i}: {events:?}"
        );
    }
    let terminal: Vec<_> = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                Some(Kind::Completed(_) | Kind::Failed(_) | Kind::Cancelled(_))
            )
        })
        .collect();
    assert_eq!(terminal.len(), 1, "exactly one terminal event: {events:?}");
    assert!(
        std::ptr::eq(terminal[0], events.last().expect("events")),
        "terminal event is last"
    );
}

/// A request for `prompt` on `model`.
pub fn request(prompt: &str, model: &str) -> v1::SubmitJobRequest {
    v1::SubmitJobRequest {
        prompt: prompt.into(),
        generation_config: Some(v1::GenerationConfig {
            model: model.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Follows a job like a well-behaved client: on UNAVAILABLE it reconnects after the last
/// sequence it saw.
pub async fn watch_resuming(app: &TestApp, job_id: &str) -> anyhow::Result<Vec<v1::JobEvent>> {
    let mut events: Vec<v1::JobEvent> = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE * 2;
    loop {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "never reached the end: {events:?}"
        );
        let after = events.last().map_or(0, |e| e.sequence);
        let mut c = app.client.clone();
        let stream = c
            .stream_job(v1::StreamJobRequest {
                job_id: job_id.into(),
                after_sequence: after,
            })
            .await;
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(s) => return Err(s.into()),
        };
        loop {
            match stream.message().await {
                Ok(Some(ev)) if matches!(ev.kind, Some(Kind::Heartbeat(_))) => {}
                Ok(Some(ev)) => {
                    let terminal = matches!(
                        ev.kind,
                        Some(Kind::Completed(_) | Kind::Failed(_) | Kind::Cancelled(_))
                    );
                    events.push(ev);
                    if terminal {
                        return Ok(events);
                    }
                }
                Ok(None) => anyhow::bail!("stream ended without a terminal event"),
                Err(s) if s.code() == tonic::Code::Unavailable => break,
                Err(s) => return Err(s.into()),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `GetJob` through `client` until `done` holds for the job (at most [`PATIENCE`]).
pub async fn wait_for_job_on(
    client: &JobServiceClient<Channel>,
    job_id: &str,
    done: impl Fn(&v1::Job) -> bool,
) -> anyhow::Result<v1::Job> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut c = client.clone();
    loop {
        let job = c
            .get_job(v1::GetJobRequest {
                job_id: job_id.into(),
            })
            .await?
            .into_inner();
        if done(&job) {
            return Ok(job);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "job {job_id} never reached the expected state; last: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sets the cancel flag of `job_id` in the test Redis with `reason`: what `CancelJob` does for
/// a running job, less the pub/sub message to the worker (a signal lost on the way). Errors
/// under the in-process backends, which have no Redis (see [`needs_servers`]).
pub async fn set_cancel_flag(app: &TestApp, job_id: &str, reason: &str) -> anyhow::Result<()> {
    let id: llm_jobs::job::JobId = job_id.parse()?;
    let flag = llm_jobs::redis::Keys::new(&app.prefix).cancel_flag(&id);
    let mut r = app.redis().await?;
    let () = redis::cmd("SET")
        .arg(&flag)
        .arg(reason)
        .arg("EX")
        .arg(3600)
        .query_async(&mut r)
        .await?;
    Ok(())
}

/// The attempt numbers of the `started` events in `events`, in order.
pub fn attempts_started(events: &[v1::JobEvent]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Started(s)) => Some(s.attempt),
            _ => None,
        })
        .collect()
}

/// A loopback address (`127.0.0.1:PORT`) with a port free a moment ago, for a server process
/// a test starts.
pub fn free_addr() -> anyhow::Result<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(format!("127.0.0.1:{port}"))
}

/// Runs `command` with a pseudo-terminal as its standard input and output, as a person at a
/// terminal would, typing `typed`; returns (exit success, everything the terminal showed,
/// standard error included). Uses util-linux's `script` (in every Debian install:
/// bsdutils is essential), so no pty code lives in the tests.
pub fn on_terminal(command: &std::process::Command, typed: &str) -> anyhow::Result<(bool, String)> {
    use std::io::Write;
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"));
    let line: Vec<String> = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(quote)
        .collect();
    let mut script = std::process::Command::new("script");
    script
        .args([
            "--quiet",
            "--return",
            "--command",
            &line.join(" "),
            "/dev/null",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (key, value) in command.get_envs() {
        match value {
            Some(v) => script.env(key, v),
            None => script.env_remove(key),
        };
    }
    let mut child = script
        .spawn()
        .context("`script` (util-linux) runs commands on a terminal in tests")?;
    child
        .stdin
        .take()
        .context("stdin is piped")?
        .write_all(typed.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &*String::from_utf8_lossy(&out.stderr),
    ))
}
