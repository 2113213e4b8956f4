//! `llm-jobs status`, `result`, `cancel` and `jobs`: one call each, printed for people or as
//! protobuf JSON.

use super::{Connection, connect, error_text, status_error, status_name};
use crate::{cli::style, proto::v1};

/// Arguments of commands that name one job.
#[derive(clap::Args, Clone, Debug)]
pub struct JobArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: Connection,
    /// The job's id.
    pub job_id: String,
    /// Print the response as canonical protobuf JSON.
    #[arg(long)]
    pub json: bool,
}

/// `cancel` arguments.
#[derive(clap::Args, Clone, Debug)]
pub struct CancelArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: Connection,
    /// The job's id.
    pub job_id: String,
    /// Why (kept with the cancelled event).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Print the job as canonical protobuf JSON.
    #[arg(long)]
    pub json: bool,
}

/// `jobs` arguments.
#[derive(clap::Args, Clone, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: Connection,
    /// Only this status (queued, running, completed, failed, cancelled).
    #[arg(long)]
    pub status: Option<String>,
    /// Only this job type.
    #[arg(long = "job-type", value_parser = crate::cli::parse_filter)]
    pub job_type: Option<String>,
    /// Only jobs with this tag.
    #[arg(long, value_parser = crate::cli::parse_filter)]
    pub tag: Option<String>,
    /// Jobs to show (newest first).
    #[arg(long, default_value_t = 20, allow_negative_numbers = true)]
    pub limit: i32,
    /// Continue after a previous page (the token it printed).
    #[arg(long = "page-token", default_value = "")]
    pub page_token: String,
    /// Print the page as canonical protobuf JSON (a ListJobsResponse).
    #[arg(long)]
    pub json: bool,
}

/// `status`.
pub async fn status(a: JobArgs) -> anyhow::Result<()> {
    let mut client = connect(&a.connection).await?;
    let job = client
        .get_job(v1::GetJobRequest { job_id: a.job_id })
        .await
        .map_err(status_error)?
        .into_inner();
    if a.json {
        return crate::cli::print_json("llmjobs.v1.Job", &job);
    }
    println!("id:            {}", job.id);
    anstream::println!("status:        {}", style::status(&status_name(job.status)));
    println!("queue:         {}", job.queue);
    println!("attempts:      {}", job.attempts);
    println!("output tokens: {}", job.output_tokens);
    // GetJob knows the last sequence once the job has ended (0 before): no figure until then.
    if job.last_sequence > 0 {
        println!("last sequence: {}", job.last_sequence);
    }
    let time = |t: Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(crate::api::convert::datetime)
            .map_or("-".to_owned(), |t| t.to_rfc3339())
    };
    println!("created:       {}", time(job.create_time));
    println!("started:       {}", time(job.start_time));
    println!("ended:         {}", time(job.end_time));
    if let Some(e) = job.error {
        println!("error:         {}", error_text(&e));
    }
    Ok(())
}

/// `result`.
pub async fn result(a: JobArgs) -> anyhow::Result<()> {
    let mut client = connect(&a.connection).await?;
    let r = client
        .get_job_result(v1::GetJobResultRequest { job_id: a.job_id })
        .await
        .map_err(status_error)?
        .into_inner();
    if a.json {
        crate::cli::print_json("llmjobs.v1.JobResult", &r)?;
        return completed(&r);
    }
    println!("{}", r.content);
    let outcome = completed(&r);
    print_details(r);
    outcome
}

/// Prints what `result` says about a job besides its text, on stderr: status, model, usage,
/// timings, cost, streaming figures, structured output, attempt errors.
fn print_details(r: v1::JobResult) {
    let u = r.usage.unwrap_or_default();
    eprintln!(
        "status={} finish_reason={} model={} provider={}{} attempts={}",
        status_name(r.status),
        r.finish_reason,
        r.model,
        r.provider,
        if r.simulated { " (simulated)" } else { "" },
        r.attempts
    );
    eprintln!(
        "input_tokens={} output_tokens={}{} time_to_first_token_ms={} duration_ms={} output_tokens_per_second={:.1} queue_wait_ms={}",
        u.input_tokens,
        u.output_tokens,
        if u.estimated { " (estimated)" } else { "" },
        r.time_to_first_token_ms
            .map_or("-".into(), |v| v.to_string()),
        r.duration_ms,
        r.output_tokens_per_second,
        r.queue_wait_ms
    );
    if let Some(cost) = r.cost_usd {
        eprintln!("cost_usd={cost:.6}");
    }
    if let Some(s) = r.streaming_stats {
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        eprintln!(
            "chunks={} bytes={} inter_token_latency_p50_ms={} p95_ms={}",
            s.chunks,
            s.bytes,
            ms(s.inter_token_latency_p50_ms),
            ms(s.inter_token_latency_p95_ms)
        );
    }
    if !r.upstream_request_id.is_empty() {
        eprintln!("upstream_request_id={}", r.upstream_request_id);
    }
    if let Some(so) = r.structured_output {
        eprintln!("structured_output valid={}", so.valid);
        for e in so.errors {
            eprintln!(
                "  {} {}",
                if e.path.is_empty() { "/" } else { &e.path },
                e.message
            );
        }
    }
    for f in r.attempt_errors {
        let e = f.error.unwrap_or_default();
        eprintln!("attempt {} failed: {}", f.attempt, error_text(&e));
    }
    if let Some(e) = r.error {
        eprintln!("error: {}", error_text(&e));
    }
}

/// Scripts tell a completed job from a failed or cancelled one by `result`'s exit code.
fn completed(r: &v1::JobResult) -> anyhow::Result<()> {
    if r.status() != v1::JobStatus::Completed {
        anyhow::bail!("the job did not complete: {}", status_name(r.status));
    }
    Ok(())
}

/// `jobs`: the newest jobs, filtered.
pub async fn list(a: ListArgs) -> anyhow::Result<()> {
    let status = match a.status.as_deref() {
        None => v1::JobStatus::Unspecified,
        Some(s) => v1::JobStatus::from_str_name(&format!("JOB_STATUS_{}", s.to_uppercase()))
            .filter(|status| *status != v1::JobStatus::Unspecified)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown status {s:?}: one of queued, running, completed, failed, cancelled"
                )
            })?,
    };
    let mut client = connect(&a.connection).await?;
    let r = client
        .list_jobs(v1::ListJobsRequest {
            page_size: a.limit,
            status: status.into(),
            job_type: a.job_type.unwrap_or_default(),
            tag: a.tag.unwrap_or_default(),
            page_token: a.page_token,
            ..Default::default()
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if a.json {
        return crate::cli::print_json("llmjobs.v1.ListJobsResponse", &r);
    }
    let rows = r.jobs.iter().map(|j| {
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            j.id,
            style::status(&status_name(j.status)),
            j.queue,
            j.attempts,
            j.create_time
                .as_ref()
                .and_then(crate::api::convert::datetime)
                .map_or("-".to_owned(), |t| t
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            j.tags.join(",")
        )
    });
    let header = "JOB\tSTATUS\tQUEUE\tATTEMPTS\tCREATED\tTAGS".to_owned();
    anstream::print!("{}", style::table(std::iter::once(header).chain(rows)));
    if !r.next_page_token.is_empty() {
        eprintln!("more: --page-token {}", r.next_page_token);
    }
    Ok(())
}

/// `cancel`.
pub async fn cancel(a: CancelArgs) -> anyhow::Result<()> {
    let mut client = connect(&a.connection).await?;
    let job = client
        .cancel_job(v1::CancelJobRequest {
            job_id: a.job_id,
            reason: a.reason,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if a.json {
        return crate::cli::print_json("llmjobs.v1.Job", &job);
    }
    anstream::println!("{} {}", job.id, style::status(&status_name(job.status)));
    Ok(())
}
