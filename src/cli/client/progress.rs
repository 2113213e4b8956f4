//! `llm-jobs progress`: a job's stage, tokens against the estimate, speed and ETA, or with
//! `--history` its stored stage changes and milestones.

use super::{Channel, JobArgs, connect, enum_name, status_error, status_name};
use crate::proto::v1::{self, job_service_client::JobServiceClient};

/// `progress` arguments.
#[derive(clap::Args, Clone, Debug)]
pub struct ProgressArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub job: JobArgs,
    /// Print the stored history of stage changes and milestones instead.
    #[arg(long)]
    pub history: bool,
}

/// `progress`.
pub async fn progress(a: ProgressArgs) -> anyhow::Result<()> {
    let mut client = connect(&a.job.connection).await?;
    if a.history {
        return history(&mut client, &a.job).await;
    }
    let p = client
        .get_job_progress(v1::GetJobProgressRequest {
            job_id: a.job.job_id,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if a.job.json {
        return crate::cli::print_json("llmjobs.v1.JobProgress", &p);
    }
    print_progress(&p);
    Ok(())
}

/// `progress --history`: every stored stage change and milestone of the job, page by page.
async fn history(client: &mut JobServiceClient<Channel>, job: &JobArgs) -> anyhow::Result<()> {
    let mut page_token = String::new();
    loop {
        let page = client
            .list_job_progress_events(v1::ListJobProgressEventsRequest {
                job_id: job.job_id.clone(),
                page_size: 1000,
                page_token,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        for e in &page.events {
            if job.json {
                crate::cli::print_json("llmjobs.v1.ProgressEvent", e)?;
                continue;
            }
            print_event(e);
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}

/// One stored progress event as a line: its time, then the stage change or the milestone.
fn print_event(e: &v1::ProgressEvent) {
    let time = e
        .time
        .as_ref()
        .and_then(crate::api::convert::datetime)
        .map_or("-".to_owned(), |t| t.format("%H:%M:%S%.3f").to_string());
    match &e.kind {
        Some(v1::progress_event::Kind::StageChanged(c)) => {
            let cur = c.current.unwrap_or_default();
            let cancelled = cur.stage() == v1::Stage::Cancelled;
            let prev = c.previous.map_or(String::new(), |p| {
                format!(
                    " (after {} {} in {} ms)",
                    enum_name(p.stage().as_str_name(), "STAGE_"),
                    stage_status_name(p.status(), cancelled),
                    p.duration_ms.unwrap_or(0)
                )
            });
            println!(
                "{time} attempt {} stage {}{prev}",
                c.attempt,
                enum_name(cur.stage().as_str_name(), "STAGE_")
            );
        }
        Some(v1::progress_event::Kind::Milestone(m)) => println!(
            "{time} attempt {} milestone {} at {} tokens{}{}",
            m.attempt,
            enum_name(m.kind().as_str_name(), "MILESTONE_KIND_"),
            m.output_tokens,
            m.fraction
                .map_or(String::new(), |f| format!(" ({:.0} %)", f * 100.0)),
            if m.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", m.detail)
            }
        ),
        None => {}
    }
}

/// The job's progress now, for people: status, stage, tokens, speed, ETA, worker, stages.
fn print_progress(p: &v1::JobProgress) {
    println!("status:         {}", status_name(p.status));
    println!(
        "stage:          {} (attempt {}/{})",
        enum_name(p.stage().as_str_name(), "STAGE_"),
        p.attempt,
        p.max_attempts
    );
    println!("output tokens:  {}", output_tokens(p));
    if let Some(f) = p.fraction {
        println!("progress:       {:.0} %", f * 100.0);
    }
    println!("tokens/s:       {:.1}", p.output_tokens_per_second);
    if let Some(t) = p.time_to_first_token_ms {
        println!("first token:    {t} ms");
    }
    if let Some(eta) = p
        .estimated_completion_time
        .as_ref()
        .and_then(crate::api::convert::datetime)
    {
        println!("eta:            {}", eta.to_rfc3339());
    }
    if let Some(w) = &p.worker {
        println!(
            "worker:         {} rss={} cpu={}",
            w.worker_id,
            w.resident_memory_mib
                .map_or("-".to_owned(), |m| format!("{m:.1} MiB")),
            w.cpu_percent
                .map_or("-".to_owned(), |c| format!("{c:.1} %"))
        );
    }
    let cancelled = p.stage() == v1::Stage::Cancelled;
    for s in &p.stages {
        println!(
            "  {:<22} {:<10} {}",
            enum_name(s.stage().as_str_name(), "STAGE_"),
            stage_status_name(s.status(), cancelled),
            s.duration_ms.map_or(String::new(), |d| format!("{d} ms"))
        );
    }
}

/// The output tokens of `progress`: so far, and of about how many with what the estimate
/// rests on when there is one (`12 of ~200 (recent_jobs, 30 jobs)`); only the count without.
fn output_tokens(p: &v1::JobProgress) -> String {
    let Some(total) = p.estimated_output_tokens else {
        return p.output_tokens.to_string();
    };
    let sample = if p.estimate_sample_size > 0 {
        format!(", {} jobs", p.estimate_sample_size)
    } else {
        String::new()
    };
    format!(
        "{} of ~{total} ({}{sample})",
        p.output_tokens,
        enum_name(p.estimate_basis().as_str_name(), "ESTIMATE_BASIS_"),
    )
}

/// A stage's status as shown to people. The wire calls a stage a cancel ended "failed" (the
/// attempt ended there without finishing it); in a cancelled job's history that reads as an
/// error, so it shows as "stopped".
fn stage_status_name(status: v1::StageStatus, cancelled: bool) -> String {
    if cancelled && status == v1::StageStatus::Failed {
        return "stopped".into();
    }
    enum_name(status.as_str_name(), "STAGE_STATUS_")
}

#[cfg(test)]
mod tests;
