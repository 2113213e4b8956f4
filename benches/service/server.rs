//! The service under test: a child `llm-jobs serve` process on Redis + Postgres (a new database
//! of its own) or embedded (a SQLite file in a new temporary directory), with an operator key made
//! on its store, and what the benchmark reads of it (`/proc`, health, clients).

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;
use tonic::{metadata::MetadataValue, transport::Channel};

use crate::{
    harness::{Bearer, Client},
    meter,
    upstream::TestUpstream,
};
use llm_jobs::proto::v1::job_service_client::JobServiceClient;

/// The Postgres server of the benchmark (`LLMJOBS_TEST_POSTGRES_URL`, without a database).
pub(crate) fn postgres_url() -> String {
    std::env::var("LLMJOBS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Where a server keeps its queue, event logs and jobs.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    /// Redis at this URL and a new Postgres database on [`postgres_url`].
    RedisPostgres {
        /// `redis://host:port`.
        redis_url: String,
    },
    /// Neither: the in-process queue and a SQLite file in a new temporary directory.
    Embedded,
}

impl Backend {
    /// Redis + Postgres on the services of the test suite (`LLMJOBS_TEST_REDIS_URL`).
    pub(crate) fn shared_redis_postgres() -> Backend {
        Backend::RedisPostgres {
            redis_url: std::env::var("LLMJOBS_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        }
    }
}

/// The store of one server, removed when it stops.
#[derive(Clone, Debug)]
pub(crate) enum Store {
    /// A database on [`postgres_url`].
    Postgres {
        /// Its name.
        database: String,
    },
    /// A SQLite file.
    Sqlite {
        /// The temporary directory holding it.
        dir: PathBuf,
        /// The file.
        path: PathBuf,
    },
}

/// A running `llm-jobs serve` child process.
pub(crate) struct Server {
    child: tokio::process::Child,
    addr: String,
    /// Where it keeps its jobs.
    pub(crate) store: Store,
    /// Its Redis key prefix (Redis + Postgres only).
    redis_prefix: Option<String>,
    bearer: Bearer,
}

impl Server {
    /// Starts a server with `slots` worker slots, streaming from `upstream`, waits until it
    /// serves, and makes an operator key on its store.
    pub(crate) async fn start(
        upstream: &TestUpstream,
        backend: Backend,
        slots: usize,
    ) -> anyhow::Result<Server> {
        Server::start_with(upstream, backend, slots, &[]).await
    }

    /// As [`Server::start`], with these environment variables set as well.
    pub(crate) async fn start_with(
        upstream: &TestUpstream,
        backend: Backend,
        slots: usize,
        env: &[(&str, String)],
    ) -> anyhow::Result<Server> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = tokio::process::Command::new(binary());
        cmd.arg("serve")
            .env("LLMJOBS_LISTEN", &addr)
            .env("OPENAI_API_KEY", "sk-bench")
            .env("OPENAI_BASE_URL", upstream.base_url())
            .env("LLMJOBS_WORKER_CONCURRENCY", slots.to_string())
            // Auth stays on, as in production; the benchmark's key has no client limits.
            .env("LLMJOBS_CLIENT_REQUESTS_PER_MINUTE", "0")
            .env("LLMJOBS_CLIENT_MAX_CONCURRENT_JOBS", "0")
            .env("LLMJOBS_CLIENT_MAX_OPEN_STREAMS", "0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let mut prefix = None;
        let store = match backend {
            Backend::RedisPostgres { redis_url } => {
                prefix = Some(format!("bench-{id}"));
                let prefix = prefix.as_deref().unwrap_or_default();
                let database = format!("llmjobs_bench_{id}");
                cmd.env("DATABASE_URL", format!("{}/{database}", postgres_url()))
                    .env("REDIS_URL", redis_url)
                    .env("LLMJOBS_REDIS_PREFIX", prefix)
                    .env("LLMJOBS_DATABASE_POOL_SIZE", "32")
                    .env("LLMJOBS_REDIS_POOL_SIZE", "64");
                Store::Postgres { database }
            }
            Backend::Embedded => {
                let dir = std::env::temp_dir().join(format!("llmjobs-bench-{id}"));
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                let path = dir.join("llm-jobs.db");
                cmd.arg("--sqlite-path")
                    .arg(&path)
                    .env_remove("REDIS_URL")
                    .env_remove("DATABASE_URL");
                Store::Sqlite { dir, path }
            }
        };
        let child = cmd.spawn().context("cannot start llm-jobs serve")?;
        let mut server = Server {
            child,
            addr,
            store,
            redis_prefix: prefix,
            bearer: Bearer(MetadataValue::from_static("Bearer none")),
        };
        server.wait_until_serving().await?;
        let key = server.create_key().await?;
        server.bearer = Bearer(format!("Bearer {key}").parse()?);
        Ok(server)
    }

    /// `llm-jobs keys create` on the server's store: an operator key for the benchmark.
    async fn create_key(&self) -> anyhow::Result<String> {
        let mut cmd = tokio::process::Command::new(binary());
        cmd.args(["keys", "create", "--tenant", "bench", "--role", "operator"]);
        match &self.store {
            Store::Postgres { database } => {
                cmd.env("DATABASE_URL", format!("{}/{database}", postgres_url()));
            }
            Store::Sqlite { path, .. } => {
                cmd.arg("--sqlite-path")
                    .arg(path)
                    .env_remove("DATABASE_URL");
            }
        }
        let out = cmd
            .output()
            .await
            .context("cannot run llm-jobs keys create")?;
        anyhow::ensure!(out.status.success(), "keys create failed: {out:?}");
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }

    async fn wait_until_serving(&self) -> anyhow::Result<()> {
        use tonic_health::pb::{
            HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(ch) = self.channel().await {
                let ok = HealthClient::new(ch)
                    .check(HealthCheckRequest::default())
                    .await
                    .is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving);
                if ok {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the server did not become ready")
    }

    async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))?
                .connect()
                .await?,
        )
    }

    /// A client on a new connection.
    pub(crate) async fn client(&self) -> anyhow::Result<Client> {
        Ok(JobServiceClient::with_interceptor(
            self.channel().await?,
            self.bearer.clone(),
        ))
    }

    /// Its Redis key prefix, when it runs on Redis.
    pub(crate) fn redis_prefix(&self) -> Option<&str> {
        self.redis_prefix.as_deref()
    }

    /// The server's process id (until it has been waited for).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Resident memory (KiB) from /proc/PID/status.
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// User + system CPU time used so far (ms), from /proc/PID/stat.
    pub(crate) fn cpu_ms(&self) -> Option<f64> {
        meter::process_cpu_ms(self.pid()?)
    }

    /// Stops the server (SIGTERM, then SIGKILL after 15 s) and removes its store.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.pid() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
        let _ = self.child.kill().await;
        match &self.store {
            Store::Postgres { database } => {
                use diesel_async::{AsyncConnection, RunQueryDsl};
                if let Ok(mut conn) = diesel_async::AsyncPgConnection::establish(&format!(
                    "{}/postgres",
                    postgres_url()
                ))
                .await
                {
                    let _ = diesel::sql_query(format!(
                        "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
                    ))
                    .execute(&mut conn)
                    .await;
                }
            }
            Store::Sqlite { dir, .. } => {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        Ok(())
    }
}

/// The `llm-jobs` binary the benchmark runs: this build's, or `LLMJOBS_BENCH_SERVER_BIN`, so
/// that two builds (before and after a change) are measured by the same benchmark in one
/// sitting.
fn binary() -> std::ffi::OsString {
    std::env::var_os("LLMJOBS_BENCH_SERVER_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_llm-jobs").into())
}
