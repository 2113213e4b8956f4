//! `llm-jobs watch` (and `submit --stream`): print a job's events as they arrive, and end
//! with a resume hint when the stream stops before the job does.

use std::io::Write;

use anyhow::Context;

use super::{Channel, Connection, connect, error_text, inert, status_error};
use crate::{
    cli::style,
    proto::v1::{self, job_event::Kind, job_service_client::JobServiceClient},
};

/// `watch` arguments.
#[derive(clap::Args, Clone, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: Connection,
    /// The job's id.
    pub job_id: String,
    /// Resume after this sequence (0: from the start).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub after: u64,
    /// Print each event of the job's log as canonical protobuf JSON, one per line (JSON
    /// lines; heartbeats, which are not part of the log, are left out).
    #[arg(long)]
    pub json: bool,
}

/// `watch`.
pub async fn watch(a: WatchArgs) -> anyhow::Result<()> {
    let mut client = connect(&a.connection).await?;
    let stream = client
        .stream_job(v1::StreamJobRequest {
            job_id: a.job_id.clone(),
            after_sequence: a.after,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let mut shown = print_events(stream, a.after, a.json).await?;
    if shown.job_id.is_empty() {
        shown.job_id = a.job_id;
    }
    finish(&mut client, shown, a.after).await
}

/// What [`print_events`] showed: the job, the last sequence printed, and why the stream
/// stopped before the job's end (`None`: it reached the end).
pub(super) struct Shown {
    pub job_id: String,
    pub last: u64,
    pub cut: Option<Cut>,
}

/// Why an event stream stopped before the job's terminal event.
pub(super) enum Cut {
    /// The server ended it with this status.
    Status(tonic::Status),
    /// Ctrl-C.
    Interrupted,
    /// It closed without a terminal event.
    Closed,
}

/// Ends a printed stream: nothing more when the job's end was shown; else an error that
/// names the sequence to resume from (or, resumed at the end of a job that did not complete,
/// says how it ended), or, for an `--after` past the job's last event
/// (`after`), the right bound (asked of GetJob).
pub(super) async fn finish(
    client: &mut JobServiceClient<Channel>,
    shown: Shown,
    after: u64,
) -> anyhow::Result<()> {
    let Shown { job_id, last, cut } = shown;
    let resume = format!("resume with `llm-jobs watch {job_id} --after {last}`");
    match cut {
        None => Ok(()),
        Some(Cut::Status(s)) if s.code() == tonic::Code::OutOfRange && last == after => {
            let bound = client
                .get_job(v1::GetJobRequest {
                    job_id: job_id.clone(),
                })
                .await
                .ok()
                .map(|j| j.into_inner().last_sequence)
                .filter(|n| *n > 0);
            match bound {
                Some(bound) => anyhow::bail!(
                    "--after {after} is past the job's last event (sequence {bound}); use \
                     --after {bound} or less (0 replays everything)"
                ),
                None => Err(status_error(s)),
            }
        }
        Some(Cut::Status(s)) => {
            Err(status_error(s)).context(format!("stream ended at sequence {last}; {resume}"))
        }
        Some(Cut::Interrupted) => anyhow::bail!("interrupted at sequence {last}; {resume}"),
        Some(Cut::Closed) => {
            // A resume at the job's last event gets nothing more: the job had ended there.
            let job = client
                .get_job(v1::GetJobRequest {
                    job_id: job_id.clone(),
                })
                .await
                .ok()
                .map(tonic::Response::into_inner);
            match job {
                Some(j) if j.last_sequence == last && ended(j.status()) => {
                    let said = format!(
                        "the job had already ended ({}) at sequence {last}",
                        j.status().as_str_name().trim_start_matches("JOB_STATUS_")
                    );
                    // As at its terminal event: only a completed job is a success.
                    if j.status() != v1::JobStatus::Completed {
                        anyhow::bail!(said);
                    }
                    eprintln!("{said}");
                    Ok(())
                }
                _ => anyhow::bail!(
                    "the stream closed at sequence {last} before the job ended; {resume}"
                ),
            }
        }
    }
}

/// Prints a job's events as they come (tokens on stdout, the rest on stderr; with `json`,
/// every event but heartbeats as one JSON line on stdout), from after sequence `after`, until
/// the job's end, a broken stream or Ctrl-C; stdout always ends with a line break. Errors: a
/// job that did not complete (failed or cancelled, after its events), writing to stdout.
pub(super) async fn print_events(
    mut stream: tonic::Streaming<v1::JobEvent>,
    after: u64,
    json: bool,
) -> anyhow::Result<Shown> {
    let mut shown = Shown {
        job_id: String::new(),
        last: after,
        cut: None,
    };
    // True while stdout's last line has no line break yet.
    let mut open_line = false;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let next = tokio::select! {
            next = stream.message() => next.map_err(Cut::Status),
            _ = &mut interrupted => Err(Cut::Interrupted),
        };
        let event = match next {
            Ok(Some(e)) => e,
            Ok(None) => {
                shown.cut = Some(Cut::Closed);
                break;
            }
            Err(cut) => {
                shown.cut = Some(cut);
                break;
            }
        };
        shown.last = event.sequence;
        if shown.job_id.is_empty() {
            shown.job_id.clone_from(&event.job_id);
        }
        let ended = if json {
            print_json_event(event)?
        } else {
            print_text_event(event, &mut open_line)?
        };
        if ended {
            return Ok(shown);
        }
    }
    end_line(&mut open_line);
    Ok(shown)
}

/// Prints `event` as one JSON line (heartbeats, which are not part of the log, left out).
/// Returns whether the job completed with it. Errors: the job failed or was cancelled with
/// it, writing to stdout.
fn print_json_event(event: v1::JobEvent) -> anyhow::Result<bool> {
    match &event.kind {
        Some(Kind::Heartbeat(_)) => return Ok(false),
        _ => crate::cli::print_json_line("llmjobs.v1.JobEvent", &event)?,
    }
    match event.kind {
        Some(Kind::Completed(_)) => Ok(true),
        Some(Kind::Failed(f)) => anyhow::bail!(failure(event.sequence, &f)),
        Some(Kind::Cancelled(c)) => anyhow::bail!(cancellation(event.sequence, &c)),
        _ => Ok(false),
    }
}

/// Prints `event` for people: its text on stdout (`open_line` tracks a line left without a
/// break), what happened on stderr. Returns whether the job completed with it. Errors: the
/// job failed or was cancelled with it, writing to stdout.
fn print_text_event(event: v1::JobEvent, open_line: &mut bool) -> anyhow::Result<bool> {
    let mut text = |t: &str| -> anyhow::Result<()> {
        if !t.is_empty() {
            let mut out = std::io::stdout();
            write!(out, "{t}")?;
            out.flush()?;
            *open_line = !t.ends_with('\n');
        }
        Ok(())
    };
    match event.kind {
        Some(Kind::Queued(q)) => eprintln!(
            "[{}] job {} queued in {}",
            event.sequence, event.job_id, q.queue
        ),
        Some(Kind::Started(s)) => {
            end_line(open_line);
            eprintln!(
                "[{}] attempt {} started on {} ({})",
                event.sequence, s.attempt, s.worker_id, s.model
            )
        }
        Some(Kind::TokenDelta(d)) => text(&d.text)?,
        Some(Kind::Snapshot(s)) => text(&s.content)?,
        Some(Kind::AttemptFailed(f)) => {
            end_line(open_line);
            let e = f.error.unwrap_or_default();
            eprintln!(
                "[{}] attempt {} failed: {} (retry: {})",
                event.sequence,
                f.attempt,
                error_text(&e),
                f.will_retry
            );
        }
        Some(Kind::Completed(c)) => {
            end_line(open_line);
            let u = c.usage.unwrap_or_default();
            anstream::eprintln!(
                "[{}] {}: finish_reason={} input_tokens={} output_tokens={}",
                event.sequence,
                style::status("completed"),
                c.finish_reason,
                u.input_tokens,
                u.output_tokens
            );
            return Ok(true);
        }
        Some(Kind::Failed(f)) => {
            end_line(open_line);
            anyhow::bail!(failure(event.sequence, &f));
        }
        Some(Kind::Cancelled(c)) => {
            end_line(open_line);
            anyhow::bail!(cancellation(event.sequence, &c));
        }
        // Progress has its own command (`llm-jobs progress`); the text stays clean here.
        Some(Kind::Heartbeat(_) | Kind::StageChanged(_) | Kind::Milestone(_))
        | Some(Kind::Progress(_))
        | None => {}
    }
    Ok(false)
}

/// The error a job's `failed` event (at `sequence`) ends `watch` with.
fn failure(sequence: u64, f: &v1::JobFailed) -> String {
    let e = f.error.clone().unwrap_or_default();
    format!(
        "[{sequence}] job failed after {} attempt(s): {}",
        f.attempts,
        error_text(&e)
    )
}

/// The error a job's `cancelled` event (at `sequence`) ends `watch` with: the job did not
/// complete, as `result` says with its exit code too. The reason is a client's text, shown
/// inert.
fn cancellation(sequence: u64, c: &v1::JobCancelled) -> String {
    format!("[{sequence}] job cancelled: {}", inert(&c.reason))
}

/// Ends stdout's open line, if any, so what follows starts on a line of its own.
fn end_line(open_line: &mut bool) {
    if std::mem::take(open_line) {
        println!();
    }
}

/// Whether a job in `status` has ended.
fn ended(status: v1::JobStatus) -> bool {
    matches!(
        status,
        v1::JobStatus::Completed | v1::JobStatus::Failed | v1::JobStatus::Cancelled
    )
}
