//! Bad input gets the right status code naming the field, and writes nothing.

use llm_jobs::proto::v1;
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::{TestApp, request};

fn violated_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submissions_are_invalid_argument_with_the_field() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let mut c = app.client.clone();
    let cases: Vec<(&str, v1::SubmitJobRequest)> = vec![
        ("prompt", request("", "sim")),
        ("prompt", request("   ", "sim")),
        (
            "job_type",
            v1::SubmitJobRequest {
                job_type: "nope".into(),
                ..request("hi", "sim")
            },
        ),
        (
            "generation_config.max_tokens",
            v1::SubmitJobRequest {
                generation_config: Some(v1::GenerationConfig {
                    max_tokens: Some(0),
                    ..Default::default()
                }),
                ..request("hi", "sim")
            },
        ),
        (
            "generation_config.temperature",
            v1::SubmitJobRequest {
                generation_config: Some(v1::GenerationConfig {
                    temperature: Some(3.0),
                    ..Default::default()
                }),
                ..request("hi", "sim")
            },
        ),
        (
            "priority",
            v1::SubmitJobRequest {
                priority: 42,
                ..request("hi", "sim")
            },
        ),
        ("prompt", request(&"x".repeat(1024 * 1024 + 1), "sim")),
    ];
    for (field, req) in cases {
        for stream in [false, true] {
            let status = if stream {
                c.submit_and_stream(req.clone()).await.err()
            } else {
                c.submit_job(req.clone()).await.err()
            }
            .expect("rejected");
            assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
            assert!(
                violated_fields(&status).contains(&field.to_owned()),
                "{field}: {status:?}"
            );
        }
    }
    // An oversized metadata entry is named, with which part is too long.
    let mut req = request("hi", "sim");
    req.metadata.insert("owner".into(), "x".repeat(5000));
    req.metadata.insert(String::new(), "v".into());
    let status = c.submit_job(req).await.expect_err("rejected");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let described: Vec<String> = status
        .get_details_bad_request()
        .map(|b| {
            b.field_violations
                .into_iter()
                .map(|v| v.description)
                .collect()
        })
        .unwrap_or_default();
    assert!(
        described
            .iter()
            .any(|d| d.contains("\"owner\"") && d.contains("value is 5000 bytes")),
        "{described:?}"
    );
    assert!(
        described.iter().any(|d| d.contains("empty key")),
        "{described:?}"
    );
    // A message over the decode limit is refused by the transport, not accepted.
    let huge = request(&"x".repeat(5 * 1024 * 1024), "sim");
    let status = c.submit_job(huge).await.expect_err("too large");
    assert_eq!(status.code(), Code::OutOfRange);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_job_ids() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let mut c = app.client.clone();
    let unknown = uuid::Uuid::now_v7().to_string();
    let s = c
        .get_job(v1::GetJobRequest {
            job_id: unknown.clone(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(s.code(), Code::NotFound);
    let s = c
        .get_job_result(v1::GetJobResultRequest {
            job_id: unknown.clone(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(s.code(), Code::NotFound);
    let s = c
        .cancel_job(v1::CancelJobRequest {
            job_id: unknown.clone(),
            reason: String::new(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(s.code(), Code::NotFound);
    let s = c
        .stream_job(v1::StreamJobRequest {
            job_id: unknown,
            after_sequence: 0,
        })
        .await
        .expect_err("unknown");
    assert_eq!(s.code(), Code::NotFound);
    for bad in ["", "not-a-uuid", "'; DROP TABLE jobs; --"] {
        let s = c
            .get_job(v1::GetJobRequest { job_id: bad.into() })
            .await
            .expect_err("malformed");
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&s), ["job_id"]);
    }
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_wait_for_the_end_and_idempotency_keys_dedupe() -> anyhow::Result<()> {
    let upstream =
        crate::support::upstream::TestUpstream::start(crate::support::upstream::Reply::Slow {
            tokens: 1,
            first_token_delay: std::time::Duration::from_secs(60),
            interval: std::time::Duration::from_millis(1),
        })
        .await?;
    let app = TestApp::builder()
        .upstream(upstream.base_url())
        .start()
        .await?;
    let mut req = request("hi", "gpt-4o-mini");
    req.idempotency_key = "order-42".into();
    let first = app.submit(req.clone()).await?;
    let second = app.submit(req.clone()).await?;
    assert_eq!(first.id, second.id, "same idempotency key, same job");
    // The same key for another request is a client bug, not a retry: refused, naming the key
    // and the job it belongs to.
    let mut other = req.clone();
    other.prompt = "something else".into();
    let mut c = app.client.clone();
    let refused = c.submit_job(other).await.expect_err("another request");
    assert_eq!(refused.code(), Code::AlreadyExists);
    assert!(
        refused.message().contains("order-42"),
        "{}",
        refused.message()
    );
    assert!(
        refused.message().contains(&first.id),
        "{}",
        refused.message()
    );
    let mut hotter = req;
    hotter.priority = v1::Priority::Urgent.into();
    let refused = c.submit_job(hotter).await.expect_err("another priority");
    assert_eq!(refused.code(), Code::AlreadyExists);
    app.wait_for_job(&first.id, |j| j.status() == v1::JobStatus::Running)
        .await?;
    let mut c = app.client.clone();
    let s = c
        .get_job_result(v1::GetJobResultRequest {
            job_id: first.id.clone(),
        })
        .await
        .expect_err("not finished");
    assert_eq!(s.code(), Code::FailedPrecondition);
    // RUNNING comes just before the upstream request goes out.
    assert!(
        upstream
            .wait_for_requests(1, crate::support::PATIENCE)
            .await,
        "the job's request reached the upstream"
    );
    assert_eq!(upstream.requests().len(), 1, "one job, one request");
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicate_submits_with_one_key_make_one_job() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let mut req = request("once", "sim");
    req.idempotency_key = "concurrent-key".into();
    let submits = (0..16).map(|_| {
        let mut c = app.client.clone();
        let req = req.clone();
        async move { c.submit_job(req).await }
    });
    let ids: Vec<String> = futures::future::try_join_all(submits)
        .await?
        .into_iter()
        .map(|r| r.into_inner().job.map(|j| j.id).unwrap_or_default())
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0] && !id.is_empty()),
        "{ids:?}"
    );
    app.wait_for_job(&ids[0], |j| j.status() == v1::JobStatus::Completed)
        .await?;

    // After the 24 h window the key starts a new job.
    app.sql(&format!(
        "UPDATE jobs SET created_at = {}",
        app.ago_sql(25 * 3_600)
    ))
    .await?;
    let later = app.submit(req).await?;
    assert_ne!(later.id, ids[0], "an expired key makes a new job");
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_input_limits_and_the_model_allow_list_apply_to_jobs_and_batches()
-> anyhow::Result<()> {
    // The server's default model (gpt-4o-mini here) must be allowed, or it does not start.
    assert!(
        TestApp::builder()
            .arg("--allowed-models", "sim")
            .start()
            .await
            .is_err(),
        "a default model outside the allow-list is a configuration error"
    );
    // Job types name queues and keys: a space or a path is a configuration error.
    for bad in ["a b,general", "../x,general"] {
        let started = TestApp::builder().job_types(bad).start().await;
        let Err(e) = started else {
            panic!("job types {bad:?} accepted");
        };
        assert!(format!("{e:#}").contains("LLMJOBS_JOB_TYPES"), "{e:#}");
    }
    let app = TestApp::builder()
        .arg("--allowed-models", "sim,gpt-4o-mini")
        .arg("--max-prompt-bytes", "64")
        .arg("--max-tags", "1")
        .start()
        .await?;
    let mut c = app.client.clone();
    app.submit(request(&"x".repeat(64), "sim")).await?;
    for (field, req) in [
        ("generation_config.model", request("hi", "gpt-4o")),
        ("prompt", request(&"x".repeat(65), "sim")),
        (
            "tags",
            v1::SubmitJobRequest {
                tags: vec!["a".into(), "b".into()],
                ..request("hi", "sim")
            },
        ),
    ] {
        let status = c.submit_job(req).await.expect_err("rejected");
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(violated_fields(&status), [field], "{status:?}");
    }

    // A batch goes through the same checks, all or nothing.
    let status = app
        .batch_client()?
        .submit_batch(v1::SubmitBatchRequest {
            requests: vec![
                request("fine", "sim"),
                request("hi", "gpt-4o"),
                request(&"x".repeat(65), "gpt-4o-mini"),
            ],
            ..Default::default()
        })
        .await
        .expect_err("rejected");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        violated_fields(&status),
        ["requests[1].generation_config.model", "requests[2].prompt"]
    );
    let listed = c
        .list_jobs(v1::ListJobsRequest::default())
        .await?
        .into_inner()
        .jobs;
    assert_eq!(listed.len(), 1, "only the valid single job was stored");
    app.stop().await
}

/// Bytes out and in, as they are: lets a test send what no generated client would.
#[derive(Clone, Default)]
struct RawCodec;

struct Raw;

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_is_not_protobuf_is_an_invalid_argument() -> anyhow::Result<()> {
    let app = TestApp::builder().start().await?;
    let mut grpc = tonic::client::Grpc::new(app.keyed(Some(&app.key))?);
    // Field 1 as a length-delimited string that claims 100 bytes and has 2: truncated.
    let garbage = vec![0x0a, 100, b'h', b'i'];
    for path in [
        "/llmjobs.v1.JobService/SubmitJob",
        "/llmjobs.v1.JobService/StreamJob",
        "/llmjobs.v1.QueueAdminService/GetQueueStats",
    ] {
        grpc.ready().await?;
        let err = grpc
            .unary(
                tonic::Request::new(garbage.clone()),
                path.parse()?,
                RawCodec,
            )
            .await
            .expect_err("garbage must be refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{path}: {err:?}");
        assert!(
            err.message().contains("Request message"),
            "{path}: names the message: {}",
            err.message()
        );
    }
    // Nothing was stored.
    assert_eq!(app.count("jobs").await?, 0);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_a_prompt_too_long_for_a_command_line_from_stdin() -> anyhow::Result<()> {
    use std::io::Write;
    let app = TestApp::builder().without_worker().start().await?;
    // Linux refuses a single argument over 128 KiB; this prompt is 200 KB.
    let prompt = format!("{}END-OF-PROMPT", "word ".repeat(40_000));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
        .args(["submit", "-", "--model", "sim"])
        .args(["--server", &format!("http://{}", app.addr)])
        .env("LLMJOBS_API_KEY", &app.key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(prompt.as_bytes())?;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let stored = app
        .sql(&format!(
            "SELECT CAST(messages AS TEXT) AS v FROM jobs WHERE id = '{}'",
            uuid::Uuid::parse_str(&id)?
        ))
        .await?;
    let messages = stored.first().map(String::as_str).unwrap_or_default();
    assert!(messages.len() > 200_000, "{} bytes stored", messages.len());
    assert!(
        messages.contains("END-OF-PROMPT"),
        "the whole prompt arrived"
    );
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_tags_and_list_filters_are_checked_naming_the_field() -> anyhow::Result<()> {
    let app = TestApp::builder().without_worker().start().await?;
    let mut c = app.client.clone();
    let assistant_only = v1::SubmitJobRequest {
        messages: vec![v1::ChatMessage {
            role: "assistant".into(),
            content: "I will continue myself".into(),
        }],
        ..request("", "sim")
    };
    let repeated_tag = v1::SubmitJobRequest {
        tags: vec!["nightly".into(), "nightly".into()],
        ..request("hi", "sim")
    };
    for (field, req) in [("messages", assistant_only), ("tags", repeated_tag)] {
        let status = c.submit_job(req).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(violated_fields(&status), [field], "{status:?}");
    }

    let at = |seconds, nanos| Some(prost_types::Timestamp { seconds, nanos });
    let lists: Vec<(Vec<&str>, v1::ListJobsRequest)> = vec![
        (
            vec!["created_after", "created_before"],
            v1::ListJobsRequest {
                created_after: at(1_700_000_000, -1),
                created_before: at(i64::MAX, 0),
                ..Default::default()
            },
        ),
        (
            vec!["tag"],
            v1::ListJobsRequest {
                tag: "t".repeat(1024 * 1024),
                ..Default::default()
            },
        ),
        (
            vec!["job_type"],
            v1::ListJobsRequest {
                job_type: "j".repeat(100_000),
                ..Default::default()
            },
        ),
    ];
    for (fields, req) in lists {
        let status = c.list_jobs(req).await.expect_err("refused");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{fields:?}: {status:?}"
        );
        assert_eq!(violated_fields(&status), fields, "{status:?}");
    }

    let mut admin = app.admin_client()?;
    let status = admin
        .list_audit_events(v1::ListAuditEventsRequest {
            since: at(0, -1),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(violated_fields(&status), ["since"], "{status:?}");
    let status = admin
        .retry_jobs(v1::RetryJobsRequest {
            filter: Some(v1::ListFailedJobsRequest {
                error_code: "e".repeat(100_000),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(
        violated_fields(&status),
        ["filter.error_code"],
        "{status:?}"
    );
    app.stop().await
}

/// An id is the hyphenated form the API writes, in either case (RFC 9562: case-insensitive on
/// input). Other spellings of the same UUID (braces, `urn:uuid:`, no hyphens) would be read as
/// the same job while logs and clients' maps held them as different ids; they are refused,
/// naming the field and the form to send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_in_any_form_but_the_canonical_one_are_refused_naming_the_field() -> anyhow::Result<()>
{
    let app = TestApp::builder().start().await?;
    let mut c = app.client.clone();
    let job = app.submit(request("hi", "sim")).await?;
    app.wait_for_job(&job.id, |j| j.status() == v1::JobStatus::Completed)
        .await?;
    let canonical = job.id.clone();
    let simple = canonical.replace('-', "");
    // Upper case is the same spelling.
    let upper = c
        .get_job(v1::GetJobRequest {
            job_id: canonical.to_uppercase(),
        })
        .await?
        .into_inner();
    assert_eq!(upper.id, canonical);
    let others = [
        format!("{{{canonical}}}"),
        format!("urn:uuid:{canonical}"),
        simple.clone(),
        simple.to_uppercase(),
    ];
    let refused = |s: &tonic::Status, field: &str, other: &str| {
        assert_eq!(s.code(), Code::InvalidArgument, "{other}: {s:?}");
        assert_eq!(violated_fields(s), [field], "{other}");
        assert!(s.message().contains(&canonical), "{other}: {}", s.message());
    };
    let mut admin = app.admin_client()?;
    let mut batches = app.batch_client()?;
    for other in &others {
        let s = c
            .get_job(v1::GetJobRequest {
                job_id: other.clone(),
            })
            .await
            .expect_err("non-canonical");
        refused(&s, "job_id", other);
        let s = c
            .cancel_job(v1::CancelJobRequest {
                job_id: other.clone(),
                reason: String::new(),
            })
            .await
            .expect_err("non-canonical");
        refused(&s, "job_id", other);
        let s = admin
            .retry_jobs(v1::RetryJobsRequest {
                job_ids: vec![canonical.clone(), other.clone()],
                filter: None,
            })
            .await
            .expect_err("non-canonical");
        refused(&s, "job_ids[1]", other);
        // Batch ids follow the same rule, in their own RPCs and as a list filter.
        let s = batches
            .get_batch(v1::GetBatchRequest {
                batch_id: other.clone(),
            })
            .await
            .expect_err("non-canonical");
        refused(&s, "batch_id", other);
        let s = c
            .list_jobs(v1::ListJobsRequest {
                batch_id: other.clone(),
                ..Default::default()
            })
            .await
            .expect_err("non-canonical");
        refused(&s, "batch_id", other);
    }
    // The canonical form works, and the refusals changed nothing.
    let got = c
        .get_job(v1::GetJobRequest {
            job_id: canonical.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(got.status(), v1::JobStatus::Completed);
    // The CLI passes ids through: its error names the form to send.
    let (ok, _, stderr) = app.cli_outcome(&["status", &others[0]])?;
    assert!(!ok);
    assert!(
        stderr.contains("job_id") && stderr.contains(&canonical),
        "{stderr}"
    );
    app.stop().await
}
