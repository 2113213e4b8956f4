//! GetJobProgress and ListJobProgressEvents: the live snapshot a job's worker keeps in Redis,
//! or, once the job has ended (or the snapshot is gone), progress rebuilt from the history
//! and result in Postgres.

use chrono::Utc;

use super::{Error, Jobs};
use crate::{
    job::{Job, JobId, JobStatus},
    progress::{self, JobProgress, ProgressEvent, ProgressEventKind, Stage, Stages},
};

/// Most history entries read to rebuild an ended job's stages (ample: about a dozen per
/// attempt).
const HISTORY_LIMIT: i64 = 5_000;

impl Jobs {
    /// The job's progress. Errors: `NotFound`, `Store`.
    pub async fn progress(&self, id: JobId) -> Result<JobProgress, Error> {
        let job = self
            .store
            .get_job(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("job {id}")))?;
        // A snapshot that Redis cannot give is rebuilt below: progress is no reason to fail.
        let live = self.events.progress(id).await.ok().flatten();
        if let Some(mut snapshot) = live {
            let ended = progress::is_terminal(snapshot.stage());
            let usable = if job.status.is_terminal() {
                ended && snapshot.attempt == job.attempts
            } else {
                !ended
            };
            if usable {
                // The store is the truth about the status (a cancel may be on its way).
                snapshot.status = job.status;
                if !ended {
                    // The snapshot is refreshed at most every progress interval; the token
                    // count in Redis with every delta.
                    let live = self.events.output_tokens(id).await.ok().flatten();
                    if let Some(n) = live.filter(|n| *n > snapshot.output_tokens) {
                        snapshot.output_tokens = n;
                        snapshot.fraction =
                            progress::fraction(n, snapshot.estimated_output_tokens, false)
                                .map(|f| f.max(snapshot.fraction.unwrap_or(0.0)));
                    }
                }
                return Ok(snapshot);
            }
        }
        if job.status.is_terminal() || job.attempts > 0 {
            return self.rebuilt(&job).await;
        }
        Ok(queued(&job))
    }

    /// Progress of a job without a usable snapshot, from its stored history and result.
    async fn rebuilt(&self, job: &Job) -> Result<JobProgress, Error> {
        let rows = self
            .store
            .progress_history(job.id, None, HISTORY_LIMIT)
            .await?;
        let history = self.decode_history(job.id, rows)?;
        let mut stages = Stages::new(job.attempts.max(1), job.enqueued_at);
        let mut first = true;
        for (_, entry) in &history {
            if let ProgressEventKind::StageChanged(change) = &entry.kind {
                if first {
                    // History starts with the first attempt.
                    stages = Stages::new(change.attempt, job.created_at);
                    first = false;
                }
                stages.apply(change);
            }
        }
        let outcome = if job.status.is_terminal() {
            self.store.get_result(job.id).await?.and_then(|r| r.outcome)
        } else {
            None
        };
        let output_tokens = match (&outcome, job.status) {
            (Some(o), _) => o.usage.output_tokens,
            (None, JobStatus::Running) => self
                .events
                .output_tokens(job.id)
                .await
                .ok()
                .flatten()
                .unwrap_or(0),
            _ => 0,
        };
        let completed = job.status == JobStatus::Completed;
        // The estimate as a worker makes it (recent completed jobs of the same type and model,
        // else max_tokens): an ended job keeps the figure its progress was measured against.
        // It is reporting: a store that cannot give the recent jobs leaves max_tokens.
        let recent = self
            .store
            .recent_output_tokens(&job.job_type, &job.params.model, progress::ESTIMATE_WINDOW)
            .await
            .unwrap_or_default();
        let estimate = progress::estimate(&recent, job.params.max_tokens);
        Ok(JobProgress {
            job_id: job.id,
            status: job.status,
            attempt: stages.attempt,
            max_attempts: job.max_attempts,
            stage: stages.current(),
            stages: stages.states,
            output_tokens,
            estimated_output_tokens: estimate.tokens,
            estimate_basis: estimate.basis,
            estimate_sample_size: estimate.sample_size,
            fraction: completed.then_some(1.0),
            output_tokens_per_second: outcome.as_ref().map_or(0.0, |o| o.output_tokens_per_second),
            estimated_completion_time: None,
            time_to_first_token_ms: outcome.as_ref().and_then(|o| o.time_to_first_token_ms),
            worker: None,
            update_time: Some(
                job.finished_at
                    .or(job.started_at)
                    .unwrap_or(job.enqueued_at),
            ),
        })
    }

    /// A page of the job's stored progress history, oldest first, and the next page's token.
    /// Errors: `NotFound`, `InvalidArgument` (page size or token), `Store`.
    pub async fn progress_events(
        &self,
        id: JobId,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<ProgressEvent>, String), Error> {
        let scope = id.simple().to_string();
        let (limit, after) = crate::paging::page_by_position(page_size, page_token, &scope)?;
        if self.store.get_job(id).await?.is_none() {
            return Err(Error::not_found(format!("job {id}")));
        }
        let rows = self.store.progress_history(id, after, limit).await?;
        let next = if rows.len() as i64 == limit {
            rows.last()
                .map(|(pos, _)| crate::paging::position_token(*pos, &scope))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let events = self.decode_history(id, rows)?;
        Ok((events.into_iter().map(|(_, e)| e).collect(), next))
    }

    /// Stored progress history entries, decoded. Errors: `Store` (`Corrupt`) for one that
    /// does not decode.
    fn decode_history(
        &self,
        id: JobId,
        rows: Vec<(i64, Vec<u8>)>,
    ) -> Result<Vec<(i64, ProgressEvent)>, Error> {
        let codec = self.events.codec();
        rows.into_iter()
            .map(|(pos, bytes)| {
                codec
                    .decode_progress_event(&bytes)
                    .map(|e| (pos, e))
                    .map_err(|e| {
                        crate::store::Error::Corrupt(format!(
                            "progress event {pos} of job {id}: {e}"
                        ))
                        .into()
                    })
            })
            .collect()
    }
}

/// A job that has never run: queued since it was enqueued, everything else pending; the
/// estimate is its max_tokens when set.
fn queued(job: &Job) -> JobProgress {
    let stages = Stages::new(job.attempts.max(1), job.enqueued_at);
    let estimate = progress::estimate(&[], job.params.max_tokens);
    JobProgress {
        job_id: job.id,
        status: job.status,
        attempt: job.attempts,
        max_attempts: job.max_attempts,
        stage: Stage::Queued,
        stages: stages.states,
        output_tokens: 0,
        estimated_output_tokens: estimate.tokens,
        estimate_basis: estimate.basis,
        estimate_sample_size: 0,
        fraction: estimate.tokens.map(|_| 0.0),
        output_tokens_per_second: 0.0,
        estimated_completion_time: None,
        time_to_first_token_ms: None,
        worker: None,
        update_time: Some(Utc::now()),
    }
}
