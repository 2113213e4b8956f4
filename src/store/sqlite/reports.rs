//! [`ReportStore`] on SQLite, the operators' queries: job listings, queue figures, failed
//! jobs (list, forget, requeue), performance percentiles and the upstream error rate. SQLite
//! has no `percentile_cont`, so percentiles are computed here from the window's rows, the same
//! way (linear interpolation between the closest ranks).

use std::collections::BTreeMap;

use async_trait::async_trait;
use diesel::{
    ExpressionMethods, OptionalExtension, QueryDsl, RunQueryDsl, SelectableHelper,
    sql_types::{BigInt, Double, Nullable, Text},
};

use super::{
    SqliteStore, key,
    rows::{JobRow, ListedJobRow, micros},
    schema::{job_event_logs, job_results, jobs},
};
use crate::{
    job::{Job, JobId, JobStatus},
    store::{Error, FailedFilter, GroupBy, JobFilter, Performance, QueueFigures, ReportStore},
};

/// Microseconds in `d`.
fn window_us(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The `q` percentile (0..=1) of ascending `sorted` by linear interpolation between the
/// closest ranks, as Postgres's `percentile_cont`; `None` when empty.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = q * last as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64))
}

/// The 50th, 95th and 99th percentiles of `values`.
fn percentiles(mut values: Vec<f64>) -> [Option<f64>; 3] {
    values.sort_by(f64::total_cmp);
    [0.5, 0.95, 0.99].map(|q| percentile(&values, q))
}

#[async_trait]
impl ReportStore for SqliteStore {
    async fn list_jobs(
        &self,
        filter: &JobFilter,
        before: Option<JobId>,
        limit: i64,
    ) -> Result<Vec<Job>, Error> {
        let filter = filter.clone();
        self.run(move |conn| {
            let mut query = jobs::table
                .order(jobs::id.desc())
                .limit(limit)
                .select(ListedJobRow::as_select())
                .into_boxed();
            if let Some(t) = filter.tenant {
                query = query.filter(jobs::tenant.eq(t));
            }
            if let Some(s) = filter.status {
                query = query.filter(jobs::status.eq(s.as_str()));
            }
            if let Some(t) = filter.job_type {
                query = query.filter(jobs::job_type.eq(t));
            }
            if let Some(p) = filter.priority {
                query = query.filter(jobs::priority.eq(p.as_str()));
            }
            if let Some(tag) = filter.tag {
                // Tags are a JSON array of strings.
                query = query.filter(
                    diesel::dsl::sql::<diesel::sql_types::Bool>(
                        "EXISTS (SELECT 1 FROM json_each(jobs.tags) WHERE json_each.value = ",
                    )
                    .bind::<Text, _>(tag)
                    .sql(")"),
                );
            }
            if let Some(batch) = filter.batch_id {
                query = query.filter(jobs::batch_id.eq(batch.to_string()));
            }
            if let Some(t) = filter.created_after {
                query = query.filter(jobs::created_at.gt(micros(t)));
            }
            if let Some(t) = filter.created_before {
                query = query.filter(jobs::created_at.lt(micros(t)));
            }
            if let Some(id) = before {
                query = query.filter(jobs::id.lt(key(id)));
            }
            let rows: Vec<ListedJobRow> = query.load(conn)?;
            rows.into_iter()
                .map(|r| Job::try_from(JobRow::from(r)))
                .collect()
        })
        .await
    }

    async fn queue_figures(&self) -> Result<Vec<QueueFigures>, Error> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = Text)]
            queue: String,
            #[diesel(sql_type = BigInt)]
            completed: i64,
            #[diesel(sql_type = Double)]
            wait: f64,
            #[diesel(sql_type = Double)]
            runtime: f64,
            #[diesel(sql_type = BigInt)]
            failed: i64,
        }
        let now = micros(chrono::Utc::now());
        let rows: Vec<Row> = self
            .run(move |conn| {
                Ok(diesel::sql_query(
                    "SELECT j.queue AS queue, \
                       count(*) FILTER (WHERE j.status = 'completed' AND j.finished_at > ?1 - 300000000) AS completed, \
                       CAST(coalesce(avg(r.queue_wait_ms) FILTER (WHERE j.status = 'completed'), 0) AS REAL) AS wait, \
                       CAST(coalesce(avg(r.duration_ms) FILTER (WHERE j.status = 'completed'), 0) AS REAL) AS runtime, \
                       count(*) FILTER (WHERE j.status = 'failed') AS failed \
                     FROM jobs j LEFT JOIN job_results r ON r.job_id = j.id \
                     WHERE j.finished_at > ?1 - 3600000000 \
                     GROUP BY j.queue",
                )
                .bind::<BigInt, _>(now)
                .load(conn)?)
            })
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
        let filter = filter.clone();
        self.run(move |conn| {
            let mut query = jobs::table
                .filter(jobs::status.eq(JobStatus::Failed.as_str()))
                .filter(jobs::forgotten_at.is_null())
                .order(jobs::id.desc())
                .limit(limit)
                .select(ListedJobRow::as_select())
                .into_boxed();
            if let Some(t) = filter.tenant {
                query = query.filter(jobs::tenant.eq(t));
            }
            if let Some(q) = filter.queue {
                query = query.filter(jobs::queue.eq(q));
            }
            if let Some(t) = filter.job_type {
                query = query.filter(jobs::job_type.eq(t));
            }
            if let Some(c) = filter.error_code {
                query = query.filter(jobs::error_code.eq(c));
            }
            if let Some(id) = before {
                query = query.filter(jobs::id.lt(key(id)));
            }
            let rows: Vec<ListedJobRow> = query.load(conn)?;
            rows.into_iter()
                .map(|r| Job::try_from(JobRow::from(r)))
                .collect()
        })
        .await
    }

    async fn forget_failed(&self, ids: &[JobId]) -> Result<Vec<JobId>, Error> {
        let ids: Vec<String> = ids.iter().copied().map(key).collect();
        let forgotten: Vec<String> = self
            .write(move |conn| {
                let now = micros(chrono::Utc::now());
                let mut forgotten = Vec::new();
                // One bound variable per id: chunks stay far below SQLite's limit on them
                // (32,766), however many ids a caller passes.
                for chunk in ids.chunks(500) {
                    forgotten.extend(
                        diesel::update(jobs::table)
                            .filter(jobs::id.eq_any(chunk))
                            .filter(jobs::status.eq(JobStatus::Failed.as_str()))
                            .filter(jobs::forgotten_at.is_null())
                            .set(jobs::forgotten_at.eq(now))
                            .returning(jobs::id)
                            .get_results::<String>(conn)?,
                    );
                }
                Ok(forgotten)
            })
            .await?;
        forgotten.iter().map(|id| super::rows::uuid(id)).collect()
    }

    async fn requeue_failed(&self, id: JobId) -> Result<Option<Job>, Error> {
        self.write(move |conn| {
            let now = micros(chrono::Utc::now());
            let row: Option<JobRow> = diesel::update(jobs::table.find(key(id)))
                .filter(jobs::status.eq(JobStatus::Failed.as_str()))
                // Its conversation is gone (`--prompt-storage none`): nothing to run again.
                .filter(jobs::discard_prompt.eq(false))
                .set((
                    jobs::status.eq(JobStatus::Queued.as_str()),
                    jobs::max_attempts.eq(jobs::attempts + 1),
                    jobs::error_code.eq(None::<String>),
                    jobs::error_message.eq(None::<String>),
                    jobs::finished_at.eq(None::<i64>),
                    jobs::forgotten_at.eq(None::<i64>),
                    jobs::enqueued_at.eq(now),
                    jobs::updated_at.eq(now),
                ))
                .returning(JobRow::as_returning())
                .get_result(conn)
                .optional()?;
            if row.is_some() {
                diesel::delete(job_results::table.find(key(id))).execute(conn)?;
                diesel::delete(job_event_logs::table.find(key(id))).execute(conn)?;
            }
            row.map(Job::try_from).transpose()
        })
        .await
    }

    async fn performance(
        &self,
        window: std::time::Duration,
        by: GroupBy,
    ) -> Result<Vec<Performance>, Error> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = Text)]
            key: String,
            #[diesel(sql_type = Text)]
            status: String,
            #[diesel(sql_type = BigInt)]
            duration_ms: i64,
            #[diesel(sql_type = Nullable<BigInt>)]
            ttft_ms: Option<i64>,
            #[diesel(sql_type = Double)]
            tps: f64,
            #[diesel(sql_type = BigInt)]
            input: i64,
            #[diesel(sql_type = BigInt)]
            output: i64,
            #[diesel(sql_type = Nullable<Double>)]
            cost: Option<f64>,
        }
        // The key column is one of two constants, never client input.
        let key = match by {
            GroupBy::Queue => "j.queue",
            GroupBy::Model => "r.model",
        };
        let sql = format!(
            "SELECT {key} AS key, j.status AS status, r.duration_ms AS duration_ms, \
               r.time_to_first_token_ms AS ttft_ms, r.output_tokens_per_second AS tps, \
               r.input_tokens AS input, r.output_tokens AS output, r.cost_usd AS cost \
             FROM jobs j JOIN job_results r ON r.job_id = j.id \
             WHERE j.finished_at > ?1 AND j.status IN ('completed', 'failed')"
        );
        let since = micros(chrono::Utc::now()).saturating_sub(window_us(window));
        let rows: Vec<Row> = self
            .run(move |conn| Ok(diesel::sql_query(sql).bind::<BigInt, _>(since).load(conn)?))
            .await?;
        let mut groups: BTreeMap<String, Vec<Row>> = BTreeMap::new();
        for r in rows {
            groups.entry(r.key.clone()).or_default().push(r);
        }
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(groups
            .into_iter()
            .map(|(key, rows)| {
                let (done, failed): (Vec<Row>, Vec<Row>) =
                    rows.into_iter().partition(|r| r.status == "completed");
                let costs: Vec<f64> = done.iter().filter_map(|r| r.cost).collect();
                Performance {
                    key,
                    completed: done.len() as u64,
                    failed: failed.len() as u64,
                    runtime_ms: percentiles(done.iter().map(|r| r.duration_ms as f64).collect()),
                    time_to_first_token_ms: percentiles(
                        done.iter()
                            .filter_map(|r| r.ttft_ms)
                            .map(|t| t as f64)
                            .collect(),
                    ),
                    output_tokens_per_second: if done.is_empty() {
                        0.0
                    } else {
                        done.iter().map(|r| r.tps).sum::<f64>() / done.len() as f64
                    },
                    input_tokens: done.iter().map(|r| n(r.input)).sum(),
                    output_tokens: done.iter().map(|r| n(r.output)).sum(),
                    cost_usd: (!costs.is_empty()).then(|| costs.iter().sum()),
                }
            })
            .collect())
    }

    async fn upstream_error_rate(&self, window: std::time::Duration) -> Result<f64, Error> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = Double)]
            rate: f64,
        }
        let since = micros(chrono::Utc::now()).saturating_sub(window_us(window));
        let row: Row = self
            .run(move |conn| {
                Ok(diesel::sql_query(
                    "WITH f AS (SELECT CAST(count(*) AS REAL) AS n FROM job_attempt_failures \
                                WHERE created_at > ?1 \
                                  AND (substr(error_code, 1, 9) = 'upstream_' \
                                       OR error_code = 'first_token_timeout')), \
                          c AS (SELECT CAST(count(*) AS REAL) AS n FROM job_results r \
                                JOIN jobs j ON j.id = r.job_id \
                                WHERE j.status = 'completed' AND r.created_at > ?1) \
                     SELECT CASE WHEN f.n + c.n = 0 THEN 0.0 ELSE f.n / (f.n + c.n) END AS rate \
                     FROM f, c",
                )
                .bind::<BigInt, _>(since)
                .get_result(conn)?)
            })
            .await?;
        Ok(row.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_interpolate_like_postgres() {
        // percentile_cont(0.5) of 1,2,3,4 is 2.5; of one value, that value.
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.5));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
        // 0.95 of 0..=100 (101 values) is exactly 95.
        let v: Vec<f64> = (0..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.95), Some(95.0));
    }
}
