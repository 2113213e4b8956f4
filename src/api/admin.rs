//! `llmjobs.v1.QueueAdminService`: decode, call [`Admin`], encode.
//!
//! Not yet behind authentication: the admin role arrives with API keys; until then, bind the
//! server to a trusted network.

use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert;
use crate::{
    admin::{Admin, FailedJob},
    proto::v1::{self, queue_admin_service_server::QueueAdminService},
    store::FailedFilter,
};

/// The QueueAdminService implementation.
pub struct AdminApi {
    admin: Admin,
}

impl AdminApi {
    /// A service over `admin`.
    pub fn new(admin: Admin) -> AdminApi {
        AdminApi { admin }
    }
}

fn filter(f: Option<&v1::ListFailedJobsRequest>) -> FailedFilter {
    let some = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
    f.map(|f| FailedFilter {
        queue: some(&f.queue),
        job_type: some(&f.job_type),
        error_code: some(&f.error_code),
    })
    .unwrap_or_default()
}

fn failed_job(f: FailedJob) -> v1::FailedJob {
    v1::FailedJob {
        failed_time: f.job.finished_at.map(convert::timestamp),
        attempt_errors: f
            .attempt_errors
            .iter()
            .map(|(attempt, e)| v1::AttemptError {
                attempt: *attempt,
                error: Some(convert::job_error(e)),
            })
            .collect(),
        job: Some(convert::job(&f.job, 0)),
    }
}

#[tonic::async_trait]
impl QueueAdminService for AdminApi {
    #[instrument(skip_all)]
    async fn get_queue_stats(
        &self,
        _request: Request<v1::GetQueueStatsRequest>,
    ) -> Result<Response<v1::GetQueueStatsResponse>, Status> {
        let now = chrono::Utc::now();
        let queues = self
            .admin
            .stats()
            .await?
            .into_iter()
            .map(|s| v1::QueueStats {
                priority: convert::priority(s.priority).into(),
                pending: s.counts.pending,
                delayed: s.counts.delayed,
                running: s.counts.running,
                paused: s.counts.paused,
                throughput_per_minute: s.figures.completed_last_5_minutes as f64 / 5.0,
                average_wait_ms: s.figures.average_wait_ms,
                oldest_wait_ms: s.counts.oldest_enqueued.map_or(0, |t| {
                    u64::try_from((now - t).num_milliseconds()).unwrap_or(0)
                }),
                average_runtime_ms: s.figures.average_runtime_ms,
                failed_last_hour: s.figures.failed_last_hour,
                name: s.name,
                job_type: s.job_type,
            })
            .collect();
        Ok(Response::new(v1::GetQueueStatsResponse { queues }))
    }

    #[instrument(skip_all, fields(queue = %request.get_ref().queue))]
    async fn pause_queue(
        &self,
        request: Request<v1::PauseQueueRequest>,
    ) -> Result<Response<v1::QueueState>, Status> {
        let queue = request.into_inner().queue;
        let paused = self.admin.set_paused(&queue, Some(true)).await?;
        Ok(Response::new(v1::QueueState { queue, paused }))
    }

    #[instrument(skip_all, fields(queue = %request.get_ref().queue))]
    async fn resume_queue(
        &self,
        request: Request<v1::ResumeQueueRequest>,
    ) -> Result<Response<v1::QueueState>, Status> {
        let queue = request.into_inner().queue;
        let paused = self.admin.set_paused(&queue, Some(false)).await?;
        Ok(Response::new(v1::QueueState { queue, paused }))
    }

    #[instrument(skip_all, fields(queue = %request.get_ref().queue))]
    async fn toggle_queue(
        &self,
        request: Request<v1::ToggleQueueRequest>,
    ) -> Result<Response<v1::QueueState>, Status> {
        let queue = request.into_inner().queue;
        let paused = self.admin.set_paused(&queue, None).await?;
        Ok(Response::new(v1::QueueState { queue, paused }))
    }

    #[instrument(skip_all, fields(queue = %request.get_ref().queue))]
    async fn purge_queue(
        &self,
        request: Request<v1::PurgeQueueRequest>,
    ) -> Result<Response<v1::PurgeQueueResponse>, Status> {
        let purged = self.admin.purge(&request.into_inner().queue).await?;
        Ok(Response::new(v1::PurgeQueueResponse { purged }))
    }

    #[instrument(skip_all)]
    async fn list_failed_jobs(
        &self,
        request: Request<v1::ListFailedJobsRequest>,
    ) -> Result<Response<v1::ListFailedJobsResponse>, Status> {
        let req = request.into_inner();
        let (jobs, next_page_token) = self
            .admin
            .failed(&filter(Some(&req)), req.page_size, &req.page_token)
            .await?;
        Ok(Response::new(v1::ListFailedJobsResponse {
            failed_jobs: jobs.into_iter().map(failed_job).collect(),
            next_page_token,
        }))
    }

    #[instrument(skip_all)]
    async fn retry_jobs(
        &self,
        request: Request<v1::RetryJobsRequest>,
    ) -> Result<Response<v1::RetryJobsResponse>, Status> {
        let req = request.into_inner();
        let ids = self
            .admin
            .select(&req.job_ids, &filter(req.filter.as_ref()))
            .await?;
        let retried = self.admin.retry(&ids).await?;
        Ok(Response::new(v1::RetryJobsResponse {
            retried_job_ids: retried.iter().map(ToString::to_string).collect(),
        }))
    }

    #[instrument(skip_all)]
    async fn forget_failed_jobs(
        &self,
        request: Request<v1::ForgetFailedJobsRequest>,
    ) -> Result<Response<v1::ForgetFailedJobsResponse>, Status> {
        let req = request.into_inner();
        let ids = self
            .admin
            .select(&req.job_ids, &filter(req.filter.as_ref()))
            .await?;
        let forgotten = self.admin.forget(&ids).await?;
        Ok(Response::new(v1::ForgetFailedJobsResponse { forgotten }))
    }
}
