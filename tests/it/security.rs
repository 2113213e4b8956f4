//! Security: every RPC × every kind of caller (no key, malformed key, unknown key, revoked key,
//! user and admin of tenant A, user and admin of tenant B, operator), tenant isolation in listings, batches and
//! streams, and the audit log.

use llm_jobs::{
    auth::Role,
    proto::v1::{
        self, batch_service_client::BatchServiceClient, job_service_client::JobServiceClient,
        queue_admin_service_client::QueueAdminServiceClient,
    },
};
use tonic::Code;

use crate::support::{TestApp, request};

/// The callers of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    NoKey,
    Malformed,
    Unknown,
    Revoked,
    UserA,
    UserB,
    AdminA,
    AdminB,
    Operator,
}

/// Every RPC of the matrix; the ones on a job or batch target tenant A's.
const RPCS: &[&str] = &[
    "SubmitJob",
    "SubmitAndStream",
    "StreamJob",
    "GetJob",
    "GetJobResult",
    "ListJobs",
    "GetJobProgress",
    "ListJobProgressEvents",
    "CancelJob",
    "SubmitBatch",
    "GetBatch",
    "StreamBatch",
    "CancelBatch",
    "GetQueueStats",
    "PauseQueue",
    "ResumeQueue",
    "ToggleQueue",
    "PurgeQueue",
    "ListFailedJobs",
    "RetryJobs",
    "ForgetFailedJobs",
    "GetWorkload",
    "ListWorkers",
    "GetPerformanceMetrics",
    "GetSystemHealth",
    "GetDashboard",
    "WatchDashboard",
    "ListAuditEvents",
];

fn expected(caller: Caller, rpc: &str) -> Code {
    let admin_rpc = !matches!(
        rpc,
        "SubmitJob"
            | "SubmitAndStream"
            | "StreamJob"
            | "GetJob"
            | "GetJobResult"
            | "ListJobs"
            | "GetJobProgress"
            | "ListJobProgressEvents"
            | "CancelJob"
            | "SubmitBatch"
            | "GetBatch"
            | "StreamBatch"
            | "CancelBatch"
    );
    // A tenant's admin may call these on its own tenant (listings and filters, so they answer
    // OK to the admin of either tenant).
    let tenant_admin_rpc = matches!(
        rpc,
        "ListFailedJobs" | "RetryJobs" | "ForgetFailedJobs" | "ListAuditEvents"
    );
    let on_tenant_a = !matches!(
        rpc,
        "SubmitJob" | "SubmitAndStream" | "ListJobs" | "SubmitBatch"
    );
    match caller {
        Caller::NoKey | Caller::Malformed | Caller::Unknown | Caller::Revoked => {
            Code::Unauthenticated
        }
        Caller::Operator => Code::Ok,
        Caller::AdminA | Caller::AdminB if tenant_admin_rpc => Code::Ok,
        _ if admin_rpc => Code::PermissionDenied,
        Caller::UserB | Caller::AdminB if on_tenant_a => Code::NotFound,
        Caller::UserA | Caller::UserB | Caller::AdminA | Caller::AdminB => Code::Ok,
    }
}

/// Calls `rpc` with `channel`; the code of its response (for streams: of the call itself).
async fn call(channel: llm_jobs::cli::client::Channel, rpc: &str, job: &str, batch: &str) -> Code {
    let mut jobs = JobServiceClient::new(channel.clone());
    let mut batches = BatchServiceClient::new(channel.clone());
    let mut admin = QueueAdminServiceClient::new(channel);
    let job_id = || job.to_owned();
    let batch_id = || batch.to_owned();
    let queue = || "openai-general-low".to_owned();
    fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
        r.map_or_else(|s| s.code(), |_| Code::Ok)
    }
    match rpc {
        "SubmitJob" => code(jobs.submit_job(request("hi", "sim")).await),
        "SubmitAndStream" => code(jobs.submit_and_stream(request("hi", "sim")).await),
        "StreamJob" => code(
            jobs.stream_job(v1::StreamJobRequest {
                job_id: job_id(),
                after_sequence: 0,
            })
            .await,
        ),
        "GetJob" => code(jobs.get_job(v1::GetJobRequest { job_id: job_id() }).await),
        "GetJobResult" => code(
            jobs.get_job_result(v1::GetJobResultRequest { job_id: job_id() })
                .await,
        ),
        "ListJobs" => code(jobs.list_jobs(v1::ListJobsRequest::default()).await),
        "GetJobProgress" => code(
            jobs.get_job_progress(v1::GetJobProgressRequest { job_id: job_id() })
                .await,
        ),
        "ListJobProgressEvents" => code(
            jobs.list_job_progress_events(v1::ListJobProgressEventsRequest {
                job_id: job_id(),
                ..Default::default()
            })
            .await,
        ),
        "CancelJob" => code(
            jobs.cancel_job(v1::CancelJobRequest {
                job_id: job_id(),
                reason: String::new(),
            })
            .await,
        ),
        "SubmitBatch" => code(
            batches
                .submit_batch(v1::SubmitBatchRequest {
                    requests: vec![request("b", "sim")],
                    ..Default::default()
                })
                .await,
        ),
        "GetBatch" => code(
            batches
                .get_batch(v1::GetBatchRequest {
                    batch_id: batch_id(),
                })
                .await,
        ),
        "StreamBatch" => code(
            batches
                .stream_batch(v1::StreamBatchRequest {
                    batch_id: batch_id(),
                })
                .await,
        ),
        "CancelBatch" => code(
            batches
                .cancel_batch(v1::CancelBatchRequest {
                    batch_id: batch_id(),
                    reason: String::new(),
                })
                .await,
        ),
        "GetQueueStats" => code(admin.get_queue_stats(v1::GetQueueStatsRequest {}).await),
        "PauseQueue" => code(
            admin
                .pause_queue(v1::PauseQueueRequest { queue: queue() })
                .await,
        ),
        "ResumeQueue" => code(
            admin
                .resume_queue(v1::ResumeQueueRequest { queue: queue() })
                .await,
        ),
        "ToggleQueue" => code(
            admin
                .toggle_queue(v1::ToggleQueueRequest { queue: queue() })
                .await,
        ),
        "PurgeQueue" => code(
            admin
                .purge_queue(v1::PurgeQueueRequest { queue: queue() })
                .await,
        ),
        "ListFailedJobs" => code(
            admin
                .list_failed_jobs(v1::ListFailedJobsRequest::default())
                .await,
        ),
        "RetryJobs" => code(admin.retry_jobs(v1::RetryJobsRequest::default()).await),
        "ForgetFailedJobs" => code(
            admin
                .forget_failed_jobs(v1::ForgetFailedJobsRequest::default())
                .await,
        ),
        "GetWorkload" => code(admin.get_workload(v1::GetWorkloadRequest {}).await),
        "ListWorkers" => code(admin.list_workers(v1::ListWorkersRequest {}).await),
        "GetPerformanceMetrics" => code(
            admin
                .get_performance_metrics(v1::GetPerformanceMetricsRequest {})
                .await,
        ),
        "GetSystemHealth" => code(admin.get_system_health(v1::GetSystemHealthRequest {}).await),
        "GetDashboard" => code(admin.get_dashboard(v1::GetDashboardRequest {}).await),
        "WatchDashboard" => code(
            admin
                .watch_dashboard(v1::WatchDashboardRequest {
                    interval_seconds: 1,
                })
                .await,
        ),
        "ListAuditEvents" => code(
            admin
                .list_audit_events(v1::ListAuditEventsRequest::default())
                .await,
        ),
        other => panic!("no such RPC in the matrix: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_every_caller_as_the_matrix_says() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let user_a = app.key_for("tenant-a", Role::User).await?;
    let user_b = app.key_for("tenant-b", Role::User).await?;
    let admin_a = app.key_for("tenant-a", Role::Admin).await?;
    let admin_b = app.key_for("tenant-b", Role::Admin).await?;
    let revoked = app.key_for("tenant-a", Role::User).await?;
    app.keys_cli(&["revoke", &revoked])?;

    // Tenant A's job (finished) and batch.
    let mut a_jobs = JobServiceClient::new(app.keyed(Some(&user_a))?);
    let job = a_jobs
        .submit_job(request("tenant A's secret plan", "sim"))
        .await?
        .into_inner()
        .job
        .expect("job");
    app.wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Completed)
        .await?;
    let batch = BatchServiceClient::new(app.keyed(Some(&user_a))?)
        .submit_batch(v1::SubmitBatchRequest {
            requests: vec![request("tenant A's batch", "sim")],
            ..Default::default()
        })
        .await?
        .into_inner();

    let unknown = format!("llmj_{}_{}", "a".repeat(12), "b".repeat(64));
    let callers = [
        (Caller::NoKey, None),
        (Caller::Malformed, Some("sk-not-ours")),
        (Caller::Unknown, Some(unknown.as_str())),
        (Caller::Revoked, Some(revoked.as_str())),
        (Caller::UserA, Some(user_a.as_str())),
        (Caller::UserB, Some(user_b.as_str())),
        (Caller::AdminA, Some(admin_a.as_str())),
        (Caller::AdminB, Some(admin_b.as_str())),
        (Caller::Operator, Some(app.key.as_str())),
    ];
    let mut wrong = Vec::new();
    for (caller, key) in callers {
        for rpc in RPCS {
            let got = call(app.keyed(key)?, rpc, &job.id, &batch.id).await;
            let want = expected(caller, rpc);
            if got != want {
                wrong.push(format!("{caller:?} {rpc}: got {got:?}, want {want:?}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "matrix cells wrong:\n{}",
        wrong.join("\n")
    );

    // Listings: B sees none of A's jobs; A and the operator see them.
    let list = |key: &str| {
        let channel = app.keyed(Some(key));
        async move {
            let mut c = JobServiceClient::new(channel?);
            let jobs = c
                .list_jobs(v1::ListJobsRequest {
                    page_size: 1000,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .jobs;
            Ok::<_, anyhow::Error>(jobs.into_iter().map(|j| j.id).collect::<Vec<_>>())
        }
    };
    assert!(list(&user_a).await?.contains(&job.id));
    assert!(list(&app.key).await?.contains(&job.id));
    let seen_by_b = list(&user_b).await?;
    assert!(!seen_by_b.contains(&job.id));
    assert!(!seen_by_b.iter().any(|id| batch.job_ids.contains(id)));

    // B's own idempotency key does not return A's job.
    let keyed_request = |key: &str| v1::SubmitJobRequest {
        idempotency_key: key.into(),
        ..request("same key", "sim")
    };
    let a_first = a_jobs
        .submit_job(keyed_request("k1"))
        .await?
        .into_inner()
        .job;
    let mut b_jobs = JobServiceClient::new(app.keyed(Some(&user_b))?);
    let b_first = b_jobs
        .submit_job(keyed_request("k1"))
        .await?
        .into_inner()
        .job;
    assert_ne!(a_first.map(|j| j.id), b_first.map(|j| j.id));

    // The audit log has the refusals, the cancels and the key operations.
    let events = app
        .admin_client()?
        .list_audit_events(v1::ListAuditEventsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .audit_events;
    let has = |action: &str, outcome: &str| {
        events
            .iter()
            .any(|e| e.action == action && e.outcome == outcome && !e.peer.is_empty())
    };
    for (action, outcome) in [
        ("authenticate", "denied"),
        ("authorize", "denied"),
        ("CancelJob", "ok"),
        ("CancelJob", "denied"),
        ("CancelBatch", "ok"),
        ("PauseQueue", "ok"),
        ("keys.revoke", "ok"),
        ("keys.create", "ok"),
    ] {
        assert!(
            has(action, outcome),
            "no {action} {outcome} in the audit log"
        );
    }
    assert!(
        events.iter().all(|e| !e.detail.contains(&user_a[18..])),
        "no secret in the audit log"
    );
    let denied_auth = app
        .admin_client()?
        .list_audit_events(v1::ListAuditEventsRequest {
            action: "authenticate".into(),
            page_size: 2,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(denied_auth.audit_events.len(), 2);
    assert!(
        !denied_auth.next_page_token.is_empty(),
        "more than one page"
    );
    assert!(
        denied_auth
            .audit_events
            .iter()
            .all(|e| e.action == "authenticate")
    );
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_off_every_caller_is_a_local_operator() -> anyhow::Result<()> {
    let app = TestApp::builder()
        .flag("--insecure-no-auth")
        .start()
        .await?;
    let job = JobServiceClient::new(app.keyed(None)?)
        .submit_job(request("hello", "sim"))
        .await?
        .into_inner()
        .job
        .expect("job");
    assert!(!job.id.is_empty());
    let stats = QueueAdminServiceClient::new(app.keyed(None)?)
        .get_queue_stats(v1::GetQueueStatsRequest {})
        .await;
    assert!(stats.is_ok());
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_jobs_per_key_are_capped_until_some_end() -> anyhow::Result<()> {
    use tonic_types::StatusExt;
    let app = TestApp::builder().without_worker().start().await?;
    let key = app
        .key_with(
            "tenant-a",
            Role::User,
            llm_jobs::auth::keys::KeyLimits {
                requests_per_minute: None,
                max_concurrent_jobs: Some(2),
            },
        )
        .await?;
    let mut c = JobServiceClient::new(app.keyed(Some(&key))?);
    let first = c
        .submit_job(request("one", "sim"))
        .await?
        .into_inner()
        .job
        .expect("job");
    c.submit_job(request("two", "sim")).await?;
    let refused = c
        .submit_job(request("three", "sim"))
        .await
        .expect_err("two are waiting");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.get_details_retry_info().is_some());
    let batch = BatchServiceClient::new(app.keyed(Some(&key))?)
        .submit_batch(v1::SubmitBatchRequest {
            requests: vec![request("b", "sim")],
            ..Default::default()
        })
        .await
        .expect_err("batches count too");
    assert_eq!(batch.code(), Code::ResourceExhausted);
    // Once one ends, there is room again (after the short grace that protects fresh ones).
    c.cancel_job(v1::CancelJobRequest {
        job_id: first.id,
        reason: String::new(),
    })
    .await?;
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    loop {
        match c.submit_job(request("three", "sim")).await {
            Ok(_) => break,
            Err(s) if s.code() == Code::ResourceExhausted => {
                anyhow::ensure!(tokio::time::Instant::now() < deadline, "never admitted");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(s) => return Err(s.into()),
        }
    }
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_stops_working_within_the_key_cache_time() -> anyhow::Result<()> {
    let app = TestApp::builder()
        .arg("--key-cache-ms", "300")
        .start()
        .await?;
    let key = app.key_for("tenant-a", Role::User).await?;
    let mut c = JobServiceClient::new(app.keyed(Some(&key))?);
    let list = || v1::ListJobsRequest::default();
    c.list_jobs(list()).await?;
    app.keys_cli(&["revoke", &key])?;
    // Read within the last 300 ms, the key may still be honoured; after that, never. Polled:
    // refused within the cache time plus a margin for a busy machine, and refused for good.
    let revoked = tokio::time::Instant::now();
    let e = loop {
        match c.list_jobs(list()).await {
            Err(e) => break e,
            Ok(_) => {
                anyhow::ensure!(
                    revoked.elapsed() < std::time::Duration::from_secs(2),
                    "a revoked key still works 2 s later (key cache: 300 ms)"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    };
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let again = c.list_jobs(list()).await.expect_err("still revoked");
    assert_eq!(again.code(), tonic::Code::Unauthenticated);
    app.stop().await?;

    // Without a cache, revocation takes effect at once.
    let app = TestApp::builder()
        .arg("--key-cache-ms", "0")
        .start()
        .await?;
    let key = app.key_for("tenant-a", Role::User).await?;
    let mut c = JobServiceClient::new(app.keyed(Some(&key))?);
    c.list_jobs(list()).await?;
    app.keys_cli(&["revoke", &key])?;
    let e = c.list_jobs(list()).await.expect_err("revoked");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    app.stop().await
}

/// Tests about Redis or Postgres themselves, or about processes sharing them: the embedded
/// pass filters them out by name (`-- --skip ::servers::`, as `scripts/test` does).
mod servers {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn request_rates_are_shared_by_every_gateway_and_answer_with_retry_info()
    -> anyhow::Result<()> {
        crate::support::needs_servers("two gateway processes sharing rate limits through Redis");
        use tonic_types::StatusExt;
        let app = TestApp::builder().start().await?;
        let (_second, channel) = app.spawn_gateway(&[]).await?;
        let key = app
            .key_with(
                "tenant-a",
                Role::User,
                llm_jobs::auth::keys::KeyLimits {
                    requests_per_minute: Some(4),
                    max_concurrent_jobs: None,
                },
            )
            .await?;
        let mut one = JobServiceClient::new(app.keyed(Some(&key))?);
        let mut two = JobServiceClient::new(crate::support::with_key(channel, Some(&key))?);
        let list = || v1::ListJobsRequest::default();
        // Four requests, two through each gateway, fit in the minute; the fifth does not.
        one.list_jobs(list()).await?;
        two.list_jobs(list()).await?;
        one.list_jobs(list()).await?;
        two.list_jobs(list()).await?;
        let refused = one.list_jobs(list()).await.expect_err("over the limit");
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        let retry = refused
            .get_details_retry_info()
            .and_then(|r| r.retry_delay)
            .expect("RetryInfo with a delay");
        assert!(retry > std::time::Duration::ZERO && retry <= std::time::Duration::from_secs(60));
        let refused = two
            .list_jobs(list())
            .await
            .expect_err("shared across gateways");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        // Other keys are not affected.
        app.client.clone().list_jobs(list()).await?;
        app.stop().await
    }
}
