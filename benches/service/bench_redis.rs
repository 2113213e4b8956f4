//! The Redis of the cost and scale scenarios: a `redis-server` of their own on a free loopback
//! port (nothing kept on disk, as `scripts/ensure-services` starts the shared one), so that its
//! command counters and CPU time hold nothing but the system being measured, while other test
//! runs use the shared Redis. Without `redis-server` on `PATH` it is the shared Redis
//! (`LLMJOBS_TEST_REDIS_URL`), and the report says so.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

/// The Redis that llm-jobs and the BullMQ peer share in the cost and scale scenarios.
pub(crate) struct BenchRedis {
    child: Option<tokio::process::Child>,
    dir: Option<std::path::PathBuf>,
    url: String,
    port: u16,
}

impl BenchRedis {
    /// Starts a private `redis-server`, or falls back to the shared Redis.
    pub(crate) async fn start() -> anyhow::Result<BenchRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!(
            "llmjobs-bench-redis-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)?;
        let spawned = tokio::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(err) => {
                let _ = std::fs::remove_dir_all(&dir);
                let url = std::env::var("LLMJOBS_TEST_REDIS_URL")
                    .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
                eprintln!(
                    "bench: cannot start redis-server ({err}); cost and scale use the shared \
                     Redis at {url}: commands of other clients count too"
                );
                let port = match redis::Client::open(url.as_str())?
                    .get_connection_info()
                    .addr()
                {
                    redis::ConnectionAddr::Tcp(_, port) => *port,
                    _ => anyhow::bail!("the shared Redis {url} is not on TCP"),
                };
                return Ok(BenchRedis {
                    child: None,
                    dir: None,
                    url,
                    port,
                });
            }
        };
        let redis = BenchRedis {
            child: Some(child),
            dir: Some(dir),
            url: format!("redis://127.0.0.1:{port}"),
            port,
        };
        redis.wait_until_ready().await?;
        Ok(redis)
    }

    async fn wait_until_ready(&self) -> anyhow::Result<()> {
        let client = redis::Client::open(self.url.as_str())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut c).await;
                if pong.is_ok() {
                    return Ok(());
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "redis-server did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Its TCP port (for the BullMQ peer's `REDIS_PORT`).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The private `redis-server`'s process id (`None` for the shared Redis, whose CPU time
    /// is not the benchmark's alone).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// Whether it is the benchmark's own (else the shared one, used by others too).
    pub(crate) fn private(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the private `redis-server` and removes its directory.
    pub(crate) async fn stop(mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill().await;
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
