//! What `admin retry`, `forget` and `purge` ask before they act on many jobs: how many they
//! would touch (the dry run's answer), and a person's yes ([`crate::cli::confirm`]).

use super::Client;
use crate::{
    cli::{
        client::status_error,
        confirm::{Answer, Consent},
    },
    proto::v1,
};

/// What a retry or forget by filter does, for its question and its dry run.
pub(super) struct Act {
    /// `retry`, `forget`.
    pub verb: &'static str,
    /// What happens to the jobs, for the dry run: `would be queued again`.
    pub done: &'static str,
    /// What a refusal leaves: `nothing retried`.
    pub nothing: &'static str,
}

/// Whether a retry or forget of every failed job matching `filter` goes ahead: at once with
/// `--yes`; never with `--dry-run`, which prints how many jobs it would touch and when they
/// failed (listed with ListFailedJobs and the same filter and bound as the server's); else
/// after a question on the terminal.
///
/// Errors: no terminal and no `--yes`, a declined question, or the listing's status.
pub(super) async fn by_filter(
    client: &mut Client,
    filter: &v1::ListFailedJobsRequest,
    consent: &Consent,
    act: &Act,
    json: bool,
) -> anyhow::Result<bool> {
    let answer = consent.answer(&format!(
        "{} every failed job matching the filter",
        act.verb
    ))?;
    if answer == Answer::Given {
        return Ok(true);
    }
    let listed = client
        .list_failed_jobs(filter.clone())
        .await
        .map_err(status_error)?
        .into_inner();
    let summary = failed_summary(&listed);
    match answer {
        Answer::DryRun if json => {
            crate::cli::print_json("llmjobs.v1.ListFailedJobsResponse", &listed)?
        }
        Answer::DryRun => println!("{summary} {}; nothing changed (--dry-run)", act.done),
        // Nothing to ask about: the call goes ahead and says that it touched nothing.
        _ if listed.failed_jobs.is_empty() => return Ok(true),
        _ => {
            Consent::ask(
                &format!("{} {summary}?", capitalised(act.verb)),
                act.nothing,
            )?;
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether to purge `queue`: `--yes`, or a person at a terminal who agreed after seeing how
/// many pending jobs it would cancel; `--dry-run` prints that count and purges nothing.
/// Errors: no terminal and no `--yes` (see [`Consent::answer`]), a refused answer, the RPC's.
pub(super) async fn purge(
    client: &mut Client,
    queue: &str,
    consent: &Consent,
) -> anyhow::Result<bool> {
    let answer = consent.answer(&format!("purge {queue}"))?;
    if answer == Answer::Given {
        return Ok(true);
    }
    let stats = client
        .get_queue_stats(v1::GetQueueStatsRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    // An unknown queue: the purge itself answers NOT_FOUND.
    let Some(pending) = stats
        .queues
        .iter()
        .find(|q| q.name == queue)
        .map(|q| q.pending)
    else {
        return Ok(answer != Answer::DryRun);
    };
    match answer {
        Answer::DryRun => {
            println!(
                "{queue}: {pending} pending job(s) would be cancelled; nothing changed (--dry-run)"
            );
            Ok(false)
        }
        _ if pending == 0 => Ok(true),
        _ => {
            Consent::ask(
                &format!("Cancel the {pending} pending job(s) of {queue}?"),
                "nothing cancelled",
            )?;
            Ok(true)
        }
    }
}

/// `word` with its first letter in upper case.
fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// `3 failed job(s) (failed between A and B)`, noting when more match than one call takes.
fn failed_summary(r: &v1::ListFailedJobsResponse) -> String {
    let times: Vec<_> = r
        .failed_jobs
        .iter()
        .filter_map(|f| f.failed_time.as_ref())
        .filter_map(crate::api::convert::datetime)
        .collect();
    let mut notes = Vec::new();
    if let (Some(o), Some(n)) = (times.iter().min(), times.iter().max()) {
        notes.push(format!(
            "failed between {} and {}",
            o.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            n.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    if !r.next_page_token.is_empty() {
        notes.push("the newest of more: run it again for the rest".to_owned());
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join("; "))
    };
    format!("{} failed job(s){notes}", r.failed_jobs.len())
}
