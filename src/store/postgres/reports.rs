//! [`ReportStore`] on Postgres, the operators' queries: job listings, queue figures, failed
//! jobs (list, forget, requeue), performance percentiles and the upstream error rate.

use async_trait::async_trait;
use diesel::{
    ExpressionMethods, OptionalExtension, PgArrayExpressionMethods, QueryDsl, SelectableHelper,
    sql_types::{BigInt, Double, Nullable, Text},
};
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::PgStore;
use crate::{
    job::{Job, JobId, JobStatus},
    store::{
        Error, FailedFilter, GroupBy, JobFilter, Performance, QueueFigures, ReportStore,
        models::{JobRow, ListedJobRow},
        schema::{job_event_logs, job_results, jobs},
    },
};

/// One group of [`performance_sql`]'s answer.
#[derive(diesel::QueryableByName)]
struct PerformanceRow {
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = BigInt)]
    completed: i64,
    #[diesel(sql_type = BigInt)]
    failed: i64,
    #[diesel(sql_type = Nullable<Double>)]
    r50: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    r95: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    r99: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    t50: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    t95: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    t99: Option<f64>,
    #[diesel(sql_type = Double)]
    tps: f64,
    #[diesel(sql_type = BigInt)]
    input: i64,
    #[diesel(sql_type = BigInt)]
    output: i64,
    #[diesel(sql_type = Nullable<Double>)]
    cost: Option<f64>,
}

impl From<PerformanceRow> for Performance {
    fn from(r: PerformanceRow) -> Performance {
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Performance {
            key: r.key,
            completed: n(r.completed),
            failed: n(r.failed),
            runtime_ms: [r.r50, r.r95, r.r99],
            time_to_first_token_ms: [r.t50, r.t95, r.t99],
            output_tokens_per_second: r.tps,
            input_tokens: n(r.input),
            output_tokens: n(r.output),
            cost_usd: r.cost,
        }
    }
}

/// The performance query grouped `by` queue or model, binding the window in seconds ($1):
/// jobs finished within it, with percentiles of completed jobs' runtime and time to first
/// token.
fn performance_sql(by: GroupBy) -> String {
    // The key column is one of two constants, never client input.
    let key = match by {
        GroupBy::Queue => "j.queue",
        GroupBy::Model => "r.model",
    };
    let done = "j.status = 'completed'";
    let p = |q: f64, col: &str| {
        format!(
            "(percentile_cont({q}) WITHIN GROUP (ORDER BY r.{col}) FILTER (WHERE {done}))::float8"
        )
    };
    format!(
        "SELECT {key} AS key, \
           count(*) FILTER (WHERE {done}) AS completed, \
           count(*) FILTER (WHERE j.status = 'failed') AS failed, \
           {} AS r50, {} AS r95, {} AS r99, {} AS t50, {} AS t95, {} AS t99, \
           coalesce(avg(r.output_tokens_per_second) FILTER (WHERE {done}), 0)::float8 AS tps, \
           coalesce(sum(r.input_tokens) FILTER (WHERE {done}), 0)::int8 AS input, \
           coalesce(sum(r.output_tokens) FILTER (WHERE {done}), 0)::int8 AS output, \
           (sum(r.cost_usd) FILTER (WHERE {done}))::float8 AS cost \
         FROM jobs j JOIN job_results r ON r.job_id = j.id \
         WHERE j.finished_at > now() - make_interval(secs => $1) \
           AND j.status IN ('completed', 'failed') \
         GROUP BY {key} ORDER BY {key}",
        p(0.5, "duration_ms"),
        p(0.95, "duration_ms"),
        p(0.99, "duration_ms"),
        p(0.5, "time_to_first_token_ms"),
        p(0.95, "time_to_first_token_ms"),
        p(0.99, "time_to_first_token_ms"),
    )
}

#[async_trait]
impl ReportStore for PgStore {
    async fn list_jobs(
        &self,
        filter: &JobFilter,
        before: Option<JobId>,
        limit: i64,
    ) -> Result<Vec<Job>, Error> {
        let mut conn = self.conn().await?;
        let mut query = jobs::table
            .order(jobs::id.desc())
            .limit(limit)
            .select(ListedJobRow::as_select())
            .into_boxed();
        if let Some(t) = &filter.tenant {
            query = query.filter(jobs::tenant.eq(t.clone()));
        }
        if let Some(s) = filter.status {
            query = query.filter(jobs::status.eq(s.as_str()));
        }
        if let Some(t) = &filter.job_type {
            query = query.filter(jobs::job_type.eq(t.clone()));
        }
        if let Some(p) = filter.priority {
            query = query.filter(jobs::priority.eq(p.as_str()));
        }
        if let Some(tag) = &filter.tag {
            query = query.filter(jobs::tags.contains(vec![tag.clone()]));
        }
        if let Some(batch) = filter.batch_id {
            query = query.filter(jobs::batch_id.eq(batch));
        }
        if let Some(t) = filter.created_after {
            query = query.filter(jobs::created_at.gt(t));
        }
        if let Some(t) = filter.created_before {
            query = query.filter(jobs::created_at.lt(t));
        }
        if let Some(id) = before {
            query = query.filter(jobs::id.lt(id));
        }
        let rows: Vec<ListedJobRow> = query.load(&mut conn).await?;
        rows.into_iter()
            .map(|r| Job::try_from(JobRow::from(r)))
            .collect()
    }

    async fn queue_figures(&self) -> Result<Vec<QueueFigures>, Error> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            queue: String,
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            completed: i64,
            #[diesel(sql_type = diesel::sql_types::Double)]
            wait: f64,
            #[diesel(sql_type = diesel::sql_types::Double)]
            runtime: f64,
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            failed: i64,
        }
        let mut conn = self.conn().await?;
        let rows: Vec<Row> = diesel::sql_query(
            "SELECT j.queue, \
               count(*) FILTER (WHERE j.status = 'completed' AND j.finished_at > now() - interval '5 minutes') AS completed, \
               coalesce(avg(r.queue_wait_ms) FILTER (WHERE j.status = 'completed'), 0)::float8 AS wait, \
               coalesce(avg(r.duration_ms) FILTER (WHERE j.status = 'completed'), 0)::float8 AS runtime, \
               count(*) FILTER (WHERE j.status = 'failed') AS failed \
             FROM jobs j LEFT JOIN job_results r ON r.job_id = j.id \
             WHERE j.finished_at > now() - interval '1 hour' \
             GROUP BY j.queue",
        )
        .load(&mut conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| QueueFigures {
                queue: r.queue,
                completed_last_5_minutes: u64::try_from(r.completed).unwrap_or(0),
                average_wait_ms: r.wait,
                average_runtime_ms: r.runtime,
                failed_last_hour: u64::try_from(r.failed).unwrap_or(0),
            })
            .collect())
    }

    async fn failed_jobs(
        &self,
        filter: &FailedFilter,
        before: Option<JobId>,
        limit: i64,
    ) -> Result<Vec<Job>, Error> {
        let mut conn = self.conn().await?;
        let mut query = jobs::table
            .filter(jobs::status.eq(JobStatus::Failed.as_str()))
            .filter(jobs::forgotten_at.is_null())
            .order(jobs::id.desc())
            .limit(limit)
            .select(ListedJobRow::as_select())
            .into_boxed();
        if let Some(t) = &filter.tenant {
            query = query.filter(jobs::tenant.eq(t.clone()));
        }
        if let Some(q) = &filter.queue {
            query = query.filter(jobs::queue.eq(q.clone()));
        }
        if let Some(t) = &filter.job_type {
            query = query.filter(jobs::job_type.eq(t.clone()));
        }
        if let Some(c) = &filter.error_code {
            query = query.filter(jobs::error_code.eq(c.clone()));
        }
        if let Some(id) = before {
            query = query.filter(jobs::id.lt(id));
        }
        let rows: Vec<ListedJobRow> = query.load(&mut conn).await?;
        rows.into_iter()
            .map(|r| Job::try_from(JobRow::from(r)))
            .collect()
    }

    async fn forget_failed(&self, ids: &[JobId]) -> Result<Vec<JobId>, Error> {
        let mut conn = self.conn().await?;
        let forgotten = diesel::update(jobs::table)
            .filter(jobs::id.eq_any(ids))
            .filter(jobs::status.eq(JobStatus::Failed.as_str()))
            .filter(jobs::forgotten_at.is_null())
            .set(jobs::forgotten_at.eq(chrono::Utc::now()))
            .returning(jobs::id)
            .get_results(&mut conn)
            .await?;
        Ok(forgotten)
    }

    async fn requeue_failed(&self, id: JobId) -> Result<Option<Job>, Error> {
        let mut conn = self.conn().await?;
        let row = conn
            .transaction::<_, Error, _>(async |conn| {
                let now = chrono::Utc::now();
                let row: Option<JobRow> = diesel::update(jobs::table.find(id))
                    .filter(jobs::status.eq(JobStatus::Failed.as_str()))
                    // Its conversation is gone (`--prompt-storage none`): nothing to run again.
                    .filter(jobs::discard_prompt.eq(false))
                    .set((
                        jobs::status.eq(JobStatus::Queued.as_str()),
                        jobs::max_attempts.eq(jobs::attempts + 1),
                        jobs::error_code.eq(None::<String>),
                        jobs::error_message.eq(None::<String>),
                        jobs::finished_at.eq(None::<chrono::DateTime<chrono::Utc>>),
                        jobs::forgotten_at.eq(None::<chrono::DateTime<chrono::Utc>>),
                        jobs::enqueued_at.eq(now),
                        jobs::updated_at.eq(now),
                    ))
                    .returning(JobRow::as_returning())
                    .get_result(conn)
                    .await
                    .optional()?;
                if row.is_some() {
                    diesel::delete(job_results::table.find(id))
                        .execute(conn)
                        .await?;
                    diesel::delete(job_event_logs::table.find(id))
                        .execute(conn)
                        .await?;
                }
                Ok(row)
            })
            .await?;
        row.map(Job::try_from).transpose()
    }

    async fn performance(
        &self,
        window: std::time::Duration,
        by: GroupBy,
    ) -> Result<Vec<Performance>, Error> {
        let mut conn = self.conn().await?;
        let rows: Vec<PerformanceRow> = diesel::sql_query(performance_sql(by))
            .bind::<Double, _>(window.as_secs_f64())
            .load(&mut conn)
            .await?;
        Ok(rows.into_iter().map(Performance::from).collect())
    }

    async fn upstream_error_rate(&self, window: std::time::Duration) -> Result<f64, Error> {
        use diesel::sql_types::Double;
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = Double)]
            rate: f64,
        }
        let mut conn = self.conn().await?;
        let row: Row = diesel::sql_query(
            "WITH f AS (SELECT count(*)::float8 AS n FROM job_attempt_failures \
                        WHERE created_at > now() - make_interval(secs => $1) \
                          AND (substr(error_code, 1, 9) = 'upstream_' OR error_code = 'first_token_timeout')), \
                  c AS (SELECT count(*)::float8 AS n FROM job_results r JOIN jobs j ON j.id = r.job_id \
                        WHERE j.status = 'completed' AND r.created_at > now() - make_interval(secs => $1)) \
             SELECT CASE WHEN f.n + c.n = 0 THEN 0 ELSE f.n / (f.n + c.n) END AS rate FROM f, c",
        )
        .bind::<Double, _>(window.as_secs_f64())
        .get_result(&mut conn)
        .await?;
        Ok(row.rate)
    }
}
