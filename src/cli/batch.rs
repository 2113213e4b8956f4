//! `llm-jobs batch …`: submit a JSONL file of jobs as one batch, follow it with a progress bar,
//! read and cancel it, over `BatchService`.

use std::path::PathBuf;

use super::client::Channel;
use anyhow::Context;

use super::{
    client::{Connection, status_error},
    to_json,
};
use crate::proto::v1::{self, batch_event, batch_service_client::BatchServiceClient, job_event};

/// `batch` arguments.
#[derive(clap::Args, Clone, Debug)]
pub struct BatchArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: Connection,
    /// Print protobuf JSON instead of text (`watch`: one BatchEvent per line; `submit --watch`:
    /// the Batch on one line first).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: BatchCommand,
}

/// Batch commands.
#[derive(clap::Subcommand, Clone, Debug)]
pub enum BatchCommand {
    /// Submit the jobs of a JSONL file (`-` for stdin) as one batch: each non-empty line is a
    /// SubmitJobRequest in protobuf JSON, e.g. {"prompt":"Hi","priority":"PRIORITY_LOW"}.
    /// All or nothing: one bad line or request rejects the batch. Prints the batch id.
    Submit {
        /// The JSONL file.
        file: PathBuf,
        /// Name shown with the batch.
        #[arg(long)]
        name: Option<String>,
        /// Resubmitting with the same key within 24 h returns the first batch.
        #[arg(long = "idempotency-key", value_parser = clap::builder::NonEmptyStringValueParser::new())]
        idempotency_key: Option<String>,
        /// Then follow it as `batch watch` does.
        #[arg(long)]
        watch: bool,
    },
    /// Follow a batch with a progress bar until every job ended, then print a summary.
    /// Exits non-zero when a job failed.
    Watch {
        /// The batch's id.
        batch_id: String,
    },
    /// Print a batch's counts, tokens, cost and estimated completion.
    Get {
        /// The batch's id.
        batch_id: String,
    },
    /// Cancel every unfinished job of a batch.
    Cancel {
        /// The batch's id.
        batch_id: String,
        /// Why (kept with each job's cancelled event).
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// A BatchService client whose requests may be as large as the server accepts.
async fn connect(c: &Connection) -> anyhow::Result<BatchServiceClient<Channel>> {
    let client = BatchServiceClient::new(c.channel().await?);
    Ok(client.max_encoding_message_size(crate::server::MAX_BATCH_DECODING_MESSAGE_BYTES))
}

/// Runs a `batch` command.
pub async fn run(a: BatchArgs) -> anyhow::Result<()> {
    let json = a.json;
    match a.command {
        BatchCommand::Submit {
            file,
            name,
            idempotency_key,
            watch,
        } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let requests = parse_jsonl(&text)?;
            let request = v1::SubmitBatchRequest {
                requests,
                display_name: name.unwrap_or_default(),
                idempotency_key: idempotency_key.unwrap_or_default(),
                ..Default::default()
            };
            // Checked here: an oversized message is cut off by the transport, which clients
            // see only as an HTTP/2 protocol error.
            let size = prost::Message::encoded_len(&request);
            let most = crate::server::MAX_BATCH_DECODING_MESSAGE_BYTES;
            anyhow::ensure!(
                size <= most,
                "the batch is {:.1} MiB encoded; a batch may be at most {} MiB: split the file",
                size as f64 / (1024.0 * 1024.0),
                most / (1024 * 1024)
            );
            let mut client = connect(&a.connection).await?;
            let batch = client
                .submit_batch(request)
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                // Followed by BatchEvent lines with --watch: keep every line one JSON value.
                println!("{}", to_json("llmjobs.v1.Batch", &batch, !watch)?);
            } else {
                println!("{}", batch.id);
                eprintln!("{}", counts(&batch));
            }
            if watch {
                follow(&mut client, batch.id, json).await?;
            }
            Ok(())
        }
        BatchCommand::Watch { batch_id } => {
            let mut client = connect(&a.connection).await?;
            follow(&mut client, batch_id, json).await
        }
        BatchCommand::Get { batch_id } => {
            let mut client = connect(&a.connection).await?;
            let batch = client
                .get_batch(v1::GetBatchRequest { batch_id })
                .await
                .map_err(status_error)?
                .into_inner();
            print_batch(&batch, json)
        }
        BatchCommand::Cancel { batch_id, reason } => {
            let mut client = connect(&a.connection).await?;
            let batch = client
                .cancel_batch(v1::CancelBatchRequest { batch_id, reason })
                .await
                .map_err(status_error)?
                .into_inner();
            print_batch(&batch, json)
        }
    }
}

/// The SubmitJobRequests of a JSONL text (protobuf JSON, one per non-empty line).
/// Errors: the first bad line, by its number (1-based).
pub fn parse_jsonl(text: &str) -> anyhow::Result<Vec<v1::SubmitJobRequest>> {
    let descriptor = super::DESCRIPTORS
        .get_message_by_name("llmjobs.v1.SubmitJobRequest")
        .context("no descriptor for llmjobs.v1.SubmitJobRequest")?;
    let mut requests = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let parse = || -> anyhow::Result<v1::SubmitJobRequest> {
            let mut de = serde_json::Deserializer::from_str(line);
            let message = prost_reflect::DynamicMessage::deserialize(descriptor.clone(), &mut de)?;
            de.end()?;
            Ok(message.transcode_to()?)
        };
        requests.push(parse().with_context(|| format!("line {}", i + 1))?);
    }
    anyhow::ensure!(!requests.is_empty(), "no requests: the file has no lines");
    Ok(requests)
}

/// Follows a batch: a progress bar (stderr) or, with `json`, one BatchEvent per line (stdout);
/// then a summary. Errors: the stream's, or a failed job.
async fn follow(
    client: &mut BatchServiceClient<Channel>,
    batch_id: String,
    json: bool,
) -> anyhow::Result<()> {
    let mut stream = client
        .stream_batch(v1::StreamBatchRequest { batch_id })
        .await
        .map_err(status_error)?
        .into_inner();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} jobs ended {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut last: Option<v1::Batch> = None;
    while let Some(event) = stream
        .message()
        .await
        .map_err(status_error)
        .context("the batch stream ended early; run `batch watch` again")?
    {
        if json {
            println!("{}", to_json("llmjobs.v1.BatchEvent", &event, false)?);
        }
        match event.kind {
            Some(batch_event::Kind::Progress(b)) => {
                bar.set_length(u64::from(b.job_count));
                bar.set_position(u64::from(b.job_count - b.queued_count - b.running_count));
                bar.set_message(format!(
                    "({} running, {} failed)",
                    b.running_count, b.failed_count
                ));
                last = Some(b);
            }
            Some(batch_event::Kind::JobFinished(ev)) => {
                if let Some(job_event::Kind::Failed(f)) = ev.kind {
                    let e = f.error.unwrap_or_default();
                    bar.println(format!(
                        "job {} failed: {} {}",
                        ev.job_id, e.code, e.message
                    ));
                }
            }
            None => {}
        }
    }
    bar.finish_and_clear();
    let batch = last.context("the stream sent no progress")?;
    if !json {
        println!("{}", counts(&batch));
        println!("{}", usage(&batch));
    }
    anyhow::ensure!(
        batch.failed_count == 0,
        "{} of {} jobs failed",
        batch.failed_count,
        batch.job_count
    );
    Ok(())
}

fn counts(b: &v1::Batch) -> String {
    format!(
        "batch {}: {} jobs: {} queued, {} running, {} completed, {} failed, {} cancelled",
        b.id,
        b.job_count,
        b.queued_count,
        b.running_count,
        b.completed_count,
        b.failed_count,
        b.cancelled_count
    )
}

fn usage(b: &v1::Batch) -> String {
    format!(
        "input_tokens={} output_tokens={} cost_usd={}",
        b.input_tokens,
        b.output_tokens,
        b.cost_usd.map_or("-".into(), |c| format!("{c:.6}"))
    )
}

fn print_batch(b: &v1::Batch, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", to_json("llmjobs.v1.Batch", b, true)?);
        return Ok(());
    }
    let time = |t: Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(crate::api::convert::datetime)
            .map_or("-".to_owned(), |t| t.to_rfc3339())
    };
    println!("{}", counts(b));
    println!("{}", usage(b));
    println!("created:              {}", time(b.create_time));
    println!(
        "estimated completion: {}",
        time(b.estimated_completion_time)
    );
    println!("ended:                {}", time(b.end_time));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_lines_become_requests_and_bad_lines_are_named() {
        let text = "{\"prompt\":\"a\",\"priority\":\"PRIORITY_LOW\"}\n\n  {\"prompt\":\"b\",\"generationConfig\":{\"model\":\"sim\"}}\n";
        let got = parse_jsonl(text).expect("valid");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].priority(), v1::Priority::Low);
        assert_eq!(
            got[1].generation_config.as_ref().map(|g| g.model.as_str()),
            Some("sim")
        );

        let err = parse_jsonl("{\"prompt\":\"a\"}\n{\"promt\":\"b\"}\n").expect_err("typo");
        assert!(format!("{err:#}").starts_with("line 2"), "{err:#}");
        let err = parse_jsonl("{\"prompt\":\"a\"} trailing\n").expect_err("trailing");
        assert!(format!("{err:#}").starts_with("line 1"), "{err:#}");
        assert!(parse_jsonl("\n \n").is_err());
    }
}
