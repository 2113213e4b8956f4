//! `llmjobs.v1.QueueAdminService`: decode, call [`Admin`], encode.
//!
//! Every RPC needs the operator role, except the failed-job and audit-log ones, which a
//! tenant's admin may call on its own tenant (roles checked by [`crate::auth::layer`], tenants
//! scoped here). Every call is audited, reads included: who looked at the failed jobs or the
//! audit log is worth knowing too.

mod audit_log;
mod dashboard;
mod failed;
mod reports;

use std::pin::Pin;

use futures::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::{
    admin::Admin,
    auth::principal,
    error::Error,
    proto::v1::{self, queue_admin_service_server::QueueAdminService},
};
use failed::{failed_job, filter, ids_target, job_ids};

/// The QueueAdminService implementation.
pub struct AdminApi {
    admin: Admin,
    guard: super::Guard,
    shutdown: CancellationToken,
}

impl AdminApi {
    /// A service over `admin`, auditing through `guard`; dashboard streams end when `shutdown`
    /// is cancelled.
    pub fn new(admin: Admin, guard: super::Guard, shutdown: CancellationToken) -> AdminApi {
        AdminApi {
            admin,
            guard,
            shutdown,
        }
    }

    /// Writes the audit event of `action` on `target` by the caller of `request`, with the
    /// outcome of `result`, and passes `result` on.
    async fn audited<T, R>(
        &self,
        request: &Request<R>,
        action: &str,
        target: &str,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        let who = principal(request)?;
        let detail = result.as_ref().err().map(|s| s.message().to_owned());
        self.guard
            .auditor
            .record(
                &who,
                action,
                target,
                crate::audit::Outcome::of(&result),
                detail.as_deref().unwrap_or_default(),
            )
            .await;
        result
    }
}

#[tonic::async_trait]
impl QueueAdminService for AdminApi {
    #[instrument(skip_all)]
    async fn get_queue_stats(
        &self,
        request: Request<v1::GetQueueStatsRequest>,
    ) -> Result<Response<v1::GetQueueStatsResponse>, Status> {
        let result = self.admin.stats().await.map_err(Status::from);
        let stats = self
            .audited(&request, "GetQueueStats", "queues", result)
            .await?;
        Ok(Response::new(v1::GetQueueStatsResponse {
            queues: stats.into_iter().map(reports::stats).collect(),
        }))
    }

    #[instrument(skip_all, fields(queue = %request.get_ref().queue))]
    async fn pause_queue(
        &self,
        request: Request<v1::PauseQueueRequest>,
    ) -> Result<Response<v1::QueueState>, Status> {
        let queue = request.get_ref().queue.clone();
        let result = self
            .admin
            .set_paused(&queue, Some(true))
            .await
            .map_err(Status::from);
        let paused = self.audited(&request, "PauseQueue", &queue, result).await?;
        Ok(Response::new(v1::QueueState { queue, paused }))
    }

    #[instrument(skip_all, fields(queue = %request.get_ref().queue))]
    async fn resume_queue(
        &self,
        request: Request<v1::ResumeQueueRequest>,
    ) -> Result<Response<v1::QueueState>, Status> {
        let queue = request.get_ref().queue.clone();
        let result = self
            .admin
            .set_paused(&queue, Some(false))
            .await
            .map_err(Status::from);
        let paused = self
            .audited(&request, "ResumeQueue", &queue, result)
            .await?;
        Ok(Response::new(v1::QueueState { queue, paused }))
    }

    #[instrument(skip_all, fields(queue = %request.get_ref().queue))]
    async fn toggle_queue(
        &self,
        request: Request<v1::ToggleQueueRequest>,
    ) -> Result<Response<v1::QueueState>, Status> {
        let queue = request.get_ref().queue.clone();
        let result = self
            .admin
            .set_paused(&queue, None)
            .await
            .map_err(Status::from);
        let paused = self
            .audited(&request, "ToggleQueue", &queue, result)
            .await?;
        Ok(Response::new(v1::QueueState { queue, paused }))
    }

    #[instrument(skip_all, fields(queue = %request.get_ref().queue))]
    async fn purge_queue(
        &self,
        request: Request<v1::PurgeQueueRequest>,
    ) -> Result<Response<v1::PurgeQueueResponse>, Status> {
        let queue = request.get_ref().queue.clone();
        let result = self.admin.purge(&queue).await.map_err(Status::from);
        let purged = self.audited(&request, "PurgeQueue", &queue, result).await?;
        Ok(Response::new(v1::PurgeQueueResponse { purged }))
    }

    #[instrument(skip_all)]
    async fn list_failed_jobs(
        &self,
        request: Request<v1::ListFailedJobsRequest>,
    ) -> Result<Response<v1::ListFailedJobsResponse>, Status> {
        let req = request.get_ref();
        let who = principal(&request)?;
        let result = async {
            let filter = filter(&who, Some(req), "")?;
            Ok(self
                .admin
                .failed(&filter, req.page_size, &req.page_token)
                .await?)
        }
        .await;
        let (jobs, next_page_token) = self
            .audited(&request, "ListFailedJobs", "failed jobs", result)
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
        let req = request.get_ref();
        let who = principal(&request)?;
        let result = async {
            let filter = filter(&who, req.filter.as_ref(), "filter.")?;
            let (ids, unknown) = self.admin.select(&job_ids(&req.job_ids)?, &filter).await?;
            let (retried, mut skipped) = self.admin.retry(&ids).await?;
            skipped.extend(
                unknown
                    .into_iter()
                    .map(|id| (id, crate::admin::NO_SUCH_JOB.to_owned())),
            );
            Ok((retried, skipped))
        }
        .await;
        let target = ids_target(&req.job_ids);
        let (retried, skipped) = self.audited(&request, "RetryJobs", &target, result).await?;
        Ok(Response::new(v1::RetryJobsResponse {
            retried_job_ids: retried.iter().map(ToString::to_string).collect(),
            skipped: skipped
                .into_iter()
                .map(|(id, reason)| v1::SkippedJob {
                    job_id: id.to_string(),
                    reason,
                })
                .collect(),
        }))
    }

    #[instrument(skip_all)]
    async fn forget_failed_jobs(
        &self,
        request: Request<v1::ForgetFailedJobsRequest>,
    ) -> Result<Response<v1::ForgetFailedJobsResponse>, Status> {
        let req = request.get_ref();
        let who = principal(&request)?;
        let result = async {
            let filter = filter(&who, req.filter.as_ref(), "filter.")?;
            let (ids, unknown) = self.admin.select(&job_ids(&req.job_ids)?, &filter).await?;
            let (forgotten, mut skipped) = self.admin.forget(&ids).await?;
            skipped.extend(
                unknown
                    .into_iter()
                    .map(|id| (id, crate::admin::NO_SUCH_JOB.to_owned())),
            );
            Ok((forgotten, skipped))
        }
        .await;
        let target = ids_target(&req.job_ids);
        let (forgotten, skipped) = self
            .audited(&request, "ForgetFailedJobs", &target, result)
            .await?;
        Ok(Response::new(v1::ForgetFailedJobsResponse {
            forgotten,
            skipped: skipped
                .into_iter()
                .map(|(id, reason)| v1::SkippedJob {
                    job_id: id.to_string(),
                    reason,
                })
                .collect(),
        }))
    }

    #[instrument(skip_all)]
    async fn get_workload(
        &self,
        request: Request<v1::GetWorkloadRequest>,
    ) -> Result<Response<v1::GetWorkloadResponse>, Status> {
        let result = self.admin.workload().await.map_err(Status::from);
        let queues = self
            .audited(&request, "GetWorkload", "queues", result)
            .await?;
        Ok(Response::new(v1::GetWorkloadResponse {
            queues: queues.into_iter().map(reports::workload).collect(),
        }))
    }

    #[instrument(skip_all)]
    async fn list_workers(
        &self,
        request: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        let result = self.admin.workers().await.map_err(Status::from);
        let workers = self
            .audited(&request, "ListWorkers", "workers", result)
            .await?;
        Ok(Response::new(v1::ListWorkersResponse {
            workers: workers.into_iter().map(reports::worker).collect(),
        }))
    }

    #[instrument(skip_all)]
    async fn get_performance_metrics(
        &self,
        request: Request<v1::GetPerformanceMetricsRequest>,
    ) -> Result<Response<v1::GetPerformanceMetricsResponse>, Status> {
        let result = self.admin.performance().await.map_err(Status::from);
        let metrics = self
            .audited(&request, "GetPerformanceMetrics", "queues", result)
            .await?;
        Ok(Response::new(reports::performance(metrics)))
    }

    #[instrument(skip_all)]
    async fn get_system_health(
        &self,
        request: Request<v1::GetSystemHealthRequest>,
    ) -> Result<Response<v1::SystemHealth>, Status> {
        let health = reports::health(self.admin.health().await);
        let health = self
            .audited(&request, "GetSystemHealth", "health", Ok(health))
            .await?;
        Ok(Response::new(health))
    }

    #[instrument(skip_all)]
    async fn get_dashboard(
        &self,
        request: Request<v1::GetDashboardRequest>,
    ) -> Result<Response<v1::Dashboard>, Status> {
        let result = self.admin.dashboard().await.map_err(Status::from);
        let dashboard = self
            .audited(&request, "GetDashboard", "dashboard", result)
            .await?;
        Ok(Response::new(reports::dashboard(dashboard)))
    }

    type WatchDashboardStream = Pin<Box<dyn Stream<Item = Result<v1::Dashboard, Status>> + Send>>;

    #[instrument(skip_all)]
    async fn watch_dashboard(
        &self,
        request: Request<v1::WatchDashboardRequest>,
    ) -> Result<Response<Self::WatchDashboardStream>, Status> {
        let secs = match request.get_ref().interval_seconds {
            0 => Ok(5),
            n if dashboard::INTERVAL_SECS.contains(&n) => Ok(n),
            _ => Err(Error::invalid("interval_seconds", "must be within 1..=60").into()),
        };
        let secs = self
            .audited(&request, "WatchDashboard", "dashboard", secs)
            .await?;
        Ok(Response::new(Box::pin(dashboard::every(
            self.admin.clone(),
            self.shutdown.clone(),
            secs,
        ))))
    }

    #[instrument(skip_all)]
    async fn list_audit_events(
        &self,
        request: Request<v1::ListAuditEventsRequest>,
    ) -> Result<Response<v1::ListAuditEventsResponse>, Status> {
        let who = principal(&request)?;
        let result = self.audit_page(&who, request.get_ref().clone()).await;
        let page = self
            .audited(&request, "ListAuditEvents", "audit log", result)
            .await?;
        Ok(Response::new(page))
    }
}
