//! A dependency that is down: health says NOT_SERVING, submits answer UNAVAILABLE and leave no
//! half-written job behind, reads that need only Postgres go on while Redis is away (the client
//! rate limits fail open), and nothing panics or hangs.

use llm_jobs::{
    auth::{Role, keys::KeyLimits},
    proto::v1::{self, job_service_client::JobServiceClient},
};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::support::{PATIENCE, TestApp, proxy::Proxy, redis_host, request};

/// Nothing listens here (port 1 needs root to bind and nothing runs on it).
const CLOSED: &str = "redis://127.0.0.1:1";

/// Tests about Redis or Postgres themselves, or about processes sharing them: the embedded
/// pass filters them out by name (`-- --skip ::servers::`, as `scripts/test` does).
mod servers {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_redis_down_submits_are_unavailable_and_write_nothing() -> anyhow::Result<()> {
        crate::support::needs_servers("a Redis outage");
        let app = TestApp::builder()
            .arg("--redis-url", CLOSED)
            .without_waiting_for_serving()
            .start()
            .await?;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))?
            .connect()
            .await?;
        let status = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::NotServing);

        let mut c = app.client.clone();
        let err = c
            .submit_job(request("hello", "sim"))
            .await
            .expect_err("Redis is down");
        assert_eq!(err.code(), Code::Unavailable);
        assert!(
            !err.message().contains("redis://"),
            "no internals leak: {}",
            err.message()
        );
        let err = c
            .submit_and_stream(request("hello", "sim"))
            .await
            .expect_err("Redis is down");
        assert_eq!(err.code(), Code::Unavailable);

        assert_eq!(
            app.count("jobs").await?,
            0,
            "the failed submits left no job row"
        );
        app.stop().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_postgres_down_the_service_starts_not_serving_and_refuses_submits()
    -> anyhow::Result<()> {
        crate::support::needs_servers("an unreachable Postgres server");
        let app = TestApp::builder()
            .arg("--database-url", "postgres://postgres@127.0.0.1:1/none")
            .flag("--no-migrate")
            .without_waiting_for_serving()
            .start()
            .await?;
        let mut c = app.client.clone();
        let err = c
            .submit_job(request("hello", "sim"))
            .await
            .expect_err("Postgres is down");
        assert_eq!(err.code(), Code::Unavailable);
        let err = c
            .get_job(llm_jobs::proto::v1::GetJobRequest {
                job_id: uuid::Uuid::now_v7().to_string(),
            })
            .await
            .expect_err("Postgres is down");
        assert_eq!(err.code(), Code::Unavailable);
        app.stop().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_redis_gone_reads_pass_the_rate_limit_unchecked() -> anyhow::Result<()> {
        crate::support::needs_servers("a Redis outage");
        let proxy = Proxy::start(&redis_host()).await?;
        let app = TestApp::builder()
            .arg("--redis-url", &format!("redis://{}", proxy.addr))
            .start()
            .await?;
        let job = app.submit(request("before the outage", "sim")).await?;
        app.wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Completed)
            .await?;

        // A key allowed 2 requests a minute: the third is refused while Redis answers.
        let limited = app
            .key_with(
                "default",
                Role::User,
                KeyLimits {
                    requests_per_minute: Some(2),
                    ..Default::default()
                },
            )
            .await?;
        let mut c = JobServiceClient::new(app.keyed(Some(&limited))?);
        let get = v1::GetJobRequest {
            job_id: job.id.clone(),
        };
        for _ in 0..2 {
            c.get_job(get.clone()).await?;
        }
        let s = c.get_job(get.clone()).await.expect_err("over the rate");
        assert_eq!(s.code(), Code::ResourceExhausted);

        // Redis gone: the limit cannot be checked, so reads that need only Postgres go through.
        proxy.cut();
        for _ in 0..3 {
            let got = c.get_job(get.clone()).await?.into_inner();
            assert_eq!(got.status(), v1::JobStatus::Completed);
        }
        c.get_job_result(v1::GetJobResultRequest {
            job_id: job.id.clone(),
        })
        .await?;
        let listed = c.list_jobs(v1::ListJobsRequest::default()).await?;
        assert!(listed.into_inner().jobs.iter().any(|j| j.id == job.id));
        // A submit needs the queue itself.
        let s = app
            .client
            .clone()
            .submit_job(request("during the outage", "sim"))
            .await
            .expect_err("no queue");
        assert_eq!(s.code(), Code::Unavailable);

        // Redis back: the limit holds again.
        proxy.restore();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match c.get_job(get.clone()).await {
                Err(s) if s.code() == Code::ResourceExhausted => break,
                Ok(_) => {}
                Err(s) => anyhow::bail!("unexpected {s:?}"),
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the limit never came back"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        app.stop().await
    }

    /// While Postgres is unreachable, a key verified before the outage still works (its cache
    /// entry has expired, yet the store cannot answer), and a new `StreamJob` follows a job whose
    /// log Redis has, checked against the tenant its log names: the owner gets the tokens, another
    /// tenant gets the same UNAVAILABLE as for a job that does not exist. The stream ends once
    /// Postgres is back and the result is stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_postgres_down_a_known_key_streams_its_own_jobs_only() -> anyhow::Result<()> {
        use crate::support::upstream::{Reply, TestUpstream};
        use tokio_stream::StreamExt;
        crate::support::needs_servers("makes a Postgres database refuse connections");
        let upstream = TestUpstream::start(Reply::slow(60, 10, 40)).await?;
        let app = TestApp::builder()
            .upstream(upstream.base_url())
            .arg("--key-cache-ms", "1")
            .start()
            .await?;
        let owner =
            JobServiceClient::new(app.keyed(Some(&app.key_for("tenant-a", Role::User).await?))?);
        let mut other =
            JobServiceClient::new(app.keyed(Some(&app.key_for("tenant-b", Role::User).await?))?);
        let job = owner
            .clone()
            .submit_job(request("a long story", "gpt-4o-mini"))
            .await?
            .into_inner()
            .job
            .expect("a job");
        app.wait_for_job(&job.id, |j| j.output_tokens >= 2).await?;
        // The other tenant's key is verified before the outage too.
        let before = other
            .get_job(v1::GetJobRequest {
                job_id: job.id.clone(),
            })
            .await
            .expect_err("not its job");
        assert_eq!(before.code(), Code::NotFound);

        let admin = crate::support::postgres_server_url();
        let mut conn = {
            use diesel_async::AsyncConnection;
            diesel_async::AsyncPgConnection::establish(&format!("{admin}/postgres")).await?
        };
        let sql = |s: String| diesel::sql_query(s);
        {
            use diesel_async::RunQueryDsl;
            sql(format!(
                "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS false",
                app.database
            ))
            .execute(&mut conn)
            .await?;
            sql(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
                app.database
            ))
            .execute(&mut conn)
            .await?;
        }
        let outage = async {
            let refused = other
                .stream_job(v1::StreamJobRequest {
                    job_id: job.id.clone(),
                    after_sequence: 0,
                })
                .await
                .expect_err("another tenant's job");
            anyhow::ensure!(refused.code() == Code::Unavailable, "got {refused:?}");
            let mut stream = owner
                .clone()
                .stream_job(v1::StreamJobRequest {
                    job_id: job.id.clone(),
                    after_sequence: 0,
                })
                .await?
                .into_inner();
            let mut deltas = 0;
            while deltas < 3 {
                let event = tokio::time::timeout(PATIENCE, stream.next())
                    .await?
                    .expect("the stream goes on")?;
                if matches!(event.kind, Some(v1::job_event::Kind::TokenDelta(_))) {
                    deltas += 1;
                }
            }
            Ok(stream)
        }
        .await;
        {
            use diesel_async::RunQueryDsl;
            sql(format!(
                "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS true",
                app.database
            ))
            .execute(&mut conn)
            .await?;
        }
        let mut stream = outage?;
        let mut last = None;
        while let Some(event) = tokio::time::timeout(PATIENCE, stream.next()).await? {
            last = Some(event?);
        }
        assert!(
            matches!(
                last.and_then(|e| e.kind),
                Some(v1::job_event::Kind::Completed(_))
            ),
            "the stream ends with the job's completion once Postgres is back"
        );
        app.stop().await
    }
}
