//! The audit log: admin reads are recorded like admin writes, and a flood of bad keys costs a
//! handful of rows that still account for every refusal.

use futures::StreamExt;
use llm_jobs::proto::v1::{self, job_service_client::JobServiceClient};
use tonic::Code;

use crate::support::{PATIENCE, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reads_are_audited() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let mut admin = app.admin_client()?;
    admin
        .get_queue_stats(v1::GetQueueStatsRequest::default())
        .await?;
    admin
        .list_failed_jobs(v1::ListFailedJobsRequest::default())
        .await?;
    admin
        .get_system_health(v1::GetSystemHealthRequest::default())
        .await?;
    let refused = admin
        .watch_dashboard(v1::WatchDashboardRequest {
            interval_seconds: 61,
        })
        .await
        .expect_err("interval out of range");
    assert_eq!(refused.code(), Code::InvalidArgument);
    admin
        .list_audit_events(v1::ListAuditEventsRequest::default())
        .await?;
    let events = admin
        .list_audit_events(v1::ListAuditEventsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .audit_events;
    let actor = &app.key[5..17];
    for (action, outcome) in [
        ("GetQueueStats", "ok"),
        ("ListFailedJobs", "ok"),
        ("GetSystemHealth", "ok"),
        ("WatchDashboard", "error"),
        ("ListAuditEvents", "ok"),
    ] {
        assert!(
            events
                .iter()
                .any(|e| e.action == action && e.outcome == outcome && e.actor == actor),
            "no {action} {outcome} by {actor}: {events:?}"
        );
    }
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_keys_is_counted_in_a_few_audit_rows() -> anyhow::Result<()> {
    const FLOOD: u64 = 500;
    let app = TestApp::builder()
        .arg("--audit-refusal-window-ms", "2000")
        .start()
        .await?;
    let unknown = format!("llmj_{}_{}", "a".repeat(12), "b".repeat(64));
    let channel = app.keyed(Some(&unknown))?;
    let codes: Vec<Code> = futures::stream::iter(0..FLOOD)
        .map(|_| {
            let mut c = JobServiceClient::new(channel.clone());
            async move {
                c.list_jobs(v1::ListJobsRequest::default())
                    .await
                    .map_or_else(|s| s.code(), |_| Code::Ok)
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    assert!(codes.iter().all(|c| *c == Code::Unauthenticated));

    // The server still answers good keys; once the window has passed, the rows account for
    // every refusal: the first of a window in a row of its own, the rest as "N more: ...".
    let mut admin = app.admin_client()?;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let rows = admin
            .list_audit_events(v1::ListAuditEventsRequest {
                action: "authenticate".into(),
                page_size: 1000,
                ..Default::default()
            })
            .await?
            .into_inner()
            .audit_events;
        let counted: u64 = rows
            .iter()
            .map(|e| {
                assert_eq!(e.outcome, "denied");
                e.detail
                    .split_once(" more: ")
                    .and_then(|(n, _)| n.parse::<u64>().ok())
                    .unwrap_or(1)
            })
            .sum();
        assert!(counted <= FLOOD, "refusals counted twice: {rows:?}");
        if counted == FLOOD {
            assert!(rows.len() <= 50, "{} rows for {FLOOD} refusals", rows.len());
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{counted} of {FLOOD} refusals in the audit log: {rows:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    app.stop().await
}

/// `llm-jobs admin audit` lists the audit log with its filters, as a table or protobuf JSON,
/// and refuses an age without a unit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_command_lists_and_filters_the_log() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let mut admin = app.admin_client()?;
    admin
        .list_failed_jobs(v1::ListFailedJobsRequest::default())
        .await?;
    admin
        .pause_queue(v1::PauseQueueRequest {
            queue: "openai-general-low".into(),
        })
        .await?;
    let actor = &app.key[5..17];

    let table = app.cli(&["admin", "audit", "--since", "1h"])?;
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.contains("ACTOR") && header.contains("OUTCOME"),
        "{table}"
    );
    for action in ["ListFailedJobs", "PauseQueue"] {
        assert!(
            table
                .lines()
                .any(|l| l.contains(action) && l.contains(actor) && l.contains("ok")),
            "no {action} by {actor}: {table}"
        );
    }
    assert!(
        table
            .lines()
            .any(|l| l.contains("PauseQueue") && l.contains("openai-general-low")),
        "the target is shown: {table}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&app.cli(&["admin", "--json", "audit", "--action", "PauseQueue"])?)?;
    let events = json["auditEvents"].as_array().cloned().unwrap_or_default();
    assert!(!events.is_empty(), "{json}");
    assert!(
        events.iter().all(|e| e["action"] == "PauseQueue"),
        "only the action asked for: {json}"
    );

    let nothing = app.cli(&["admin", "audit", "--outcome", "denied", "--actor", actor])?;
    assert_eq!(nothing.lines().count(), 1, "only the header: {nothing}");

    let (ok, _, stderr) = app.cli_outcome(&["admin", "audit", "--since", "30"])?;
    assert!(!ok && stderr.contains("--since"), "{stderr}");
    app.stop().await
}
