//! A dependency that is down: health says NOT_SERVING, submits answer UNAVAILABLE and leave no
//! half-written job behind, and nothing panics or hangs.

use diesel_async::RunQueryDsl;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::support::{TestApp, request};

/// Nothing listens here (port 1 needs root to bind and nothing runs on it).
const CLOSED: &str = "redis://127.0.0.1:1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_submits_are_unavailable_and_write_nothing() -> anyhow::Result<()> {
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

    let mut conn = app.db().await?;
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let rows: Vec<Count> = diesel::sql_query("SELECT count(*) AS n FROM jobs")
        .load(&mut conn)
        .await?;
    assert_eq!(rows[0].n, 0, "the failed submits left no job row");
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_down_the_service_starts_not_serving_and_refuses_submits()
-> anyhow::Result<()> {
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
