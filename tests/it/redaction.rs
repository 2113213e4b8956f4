//! Secrets in prompts: how prompts are kept in Postgres with `--prompt-storage redacted` and
//! `none`.

use llm_jobs::proto::v1;

use crate::support::{
    PATIENCE, TestApp, request,
    upstream::{Reply, TestUpstream},
};

/// An OpenAI-style key, as a user might paste it into a prompt.
const SECRET: &str = "sk-proj-Zq8xT4mN2vR7kL1pW9sY3bC6";
/// The part of [`SECRET`] that must never show where it is masked.
const SECRET_TAIL: &str = "Zq8xT4mN2vR7kL1pW9sY3bC6";

/// The conversation stored for `job_id`, as JSON text.
async fn stored_messages(app: &TestApp, job_id: &str) -> anyhow::Result<String> {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        messages: String,
    }
    let row: Row = diesel::sql_query("SELECT messages::text AS messages FROM jobs WHERE id = $1")
        .bind::<diesel::sql_types::Uuid, _>(uuid::Uuid::parse_str(job_id)?)
        .get_result(&mut app.db().await?)
        .await?;
    Ok(row.messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redacted_storage_masks_keys_before_the_prompt_is_stored_or_sent() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::slow(2, 0, 1)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .arg("--prompt-storage", "redacted")
        .start()
        .await?;
    let job = app
        .submit(v1::SubmitJobRequest {
            system_prompt: format!("the key is {SECRET}"),
            ..request(&format!("summarise: {SECRET}"), "gpt-4o-mini")
        })
        .await?;
    let job = app
        .wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Completed)
        .await?;
    let stored = stored_messages(&app, &job.id).await?;
    assert!(
        stored.contains("summarise: sk-[redacted]")
            && stored.contains("the key is sk-[redacted]")
            && !stored.contains(SECRET_TAIL),
        "{stored}"
    );
    let sent = upstream.requests();
    assert!(
        sent.len() == 1
            && sent[0]
                .body
                .to_string()
                .contains("summarise: sk-[redacted]")
            && !sent[0].body.to_string().contains(SECRET_TAIL),
        "what was stored is what was sent: {sent:?}"
    );
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_none_keeps_the_prompt_only_while_the_job_can_run() -> anyhow::Result<()> {
    let upstream = TestUpstream::start(Reply::slow(2, 0, 1)).await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .arg("--prompt-storage", "none")
        .start()
        .await?;
    let mut c = app.client.clone();

    // Running: the worker read the whole prompt from the store; cancelled: it is gone.
    upstream.push_reply(Reply::slow(10_000, 0, 20));
    let running = app
        .submit(request("first secret plan", "gpt-4o-mini"))
        .await?;
    app.wait_for_job(&running.id, |j| j.status() == v1::JobStatus::Running)
        .await?;
    assert!(upstream.wait_for_requests(1, PATIENCE).await);
    assert!(
        stored_messages(&app, &running.id)
            .await?
            .contains("first secret plan")
    );
    c.cancel_job(v1::CancelJobRequest {
        job_id: running.id.clone(),
        reason: String::new(),
    })
    .await?;
    app.wait_for_job(&running.id, |j| j.status() == v1::JobStatus::Cancelled)
        .await?;
    assert_eq!(stored_messages(&app, &running.id).await?, "[]");

    // Completed: the upstream got the prompt as submitted; the store keeps none of it.
    let done = app
        .submit(request("second secret plan", "gpt-4o-mini"))
        .await?;
    app.wait_for_job(&done.id, |j| j.status() == v1::JobStatus::Completed)
        .await?;
    assert_eq!(stored_messages(&app, &done.id).await?, "[]");
    assert!(
        upstream.requests()[1]
            .body
            .to_string()
            .contains("second secret plan")
    );
    assert!(!app.result(&done.id).await?.content.is_empty());

    // Failed: nothing left to run again, so an admin retry leaves it failed.
    upstream.push_reply(Reply::Status {
        status: 400,
        error_type: "invalid_request_error",
        retry_after_secs: None,
    });
    let failed = app
        .submit(request("third secret plan", "gpt-4o-mini"))
        .await?;
    app.wait_for_job(&failed.id, |j| j.status() == v1::JobStatus::Failed)
        .await?;
    assert_eq!(stored_messages(&app, &failed.id).await?, "[]");
    let retried = app
        .admin_client()?
        .retry_jobs(v1::RetryJobsRequest {
            job_ids: vec![failed.id.clone()],
            ..Default::default()
        })
        .await?
        .into_inner()
        .retried_job_ids;
    assert!(retried.is_empty(), "{retried:?}");
    let job = app.wait_for_job(&failed.id, |_| true).await?;
    assert_eq!(job.status(), v1::JobStatus::Failed);
    app.stop().await
}
