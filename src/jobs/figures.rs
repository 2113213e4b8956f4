//! The figures every RPC that returns a job reports beside it.

use crate::{
    events::EventLog,
    job::{Job, JobId, JobStatus},
    store::Store,
};

/// Each job with the figures every RPC that returns a job reports, as `GetJob` does: its
/// output tokens (live from the event log while it runs, from its result once it ended,
/// 0 before it started) and, for an ended job whose worker has not stored it yet, the
/// terminal event's sequence from its log. One store read for the whole page.
/// Errors: `Store`.
pub async fn with_figures(
    store: &dyn Store,
    events: &dyn EventLog,
    jobs: Vec<Job>,
) -> Result<Vec<(Job, u64)>, crate::store::Error> {
    let ended: Vec<JobId> = jobs
        .iter()
        .filter(|j| j.status.is_terminal())
        .map(|j| j.id)
        .collect();
    let results: std::collections::HashMap<JobId, u64> = if ended.is_empty() {
        Default::default()
    } else {
        store
            .result_output_tokens(&ended)
            .await?
            .into_iter()
            .collect()
    };
    let mut figured = Vec::with_capacity(jobs.len());
    for mut job in jobs {
        if job.status.is_terminal() && job.last_sequence == 0 {
            // The worker stores the terminal sequence just after appending the terminal
            // event, off its path; until then the log has it.
            if let Ok(Some(seq)) = events.terminal_sequence(job.id).await {
                job.last_sequence = seq;
            }
        }
        let tokens = if job.status == JobStatus::Running {
            events
                .output_tokens(job.id)
                .await
                .ok()
                .flatten()
                .unwrap_or(0)
        } else {
            results.get(&job.id).copied().unwrap_or(0)
        };
        figured.push((job, tokens));
    }
    Ok(figured)
}
