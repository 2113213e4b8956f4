//! Group commit for the Postgres store's hot-path writes.
//!
//! Every job is written three times on its way through the service: inserted when submitted,
//! updated when an attempt starts, and updated with its result, failure record and progress
//! history when the attempt ends. One statement (and one commit) per write made Postgres the
//! largest cost of a job. The [`Writer`] task gathers the writes of concurrent jobs and applies
//! them as a few multi-row statements in one transaction:
//!
//! - new jobs: one multi-row `INSERT … RETURNING`;
//! - attempt starts: one `UPDATE … WHERE id = ANY($1) … RETURNING`;
//! - attempt ends: one `UPDATE … FROM unnest(…)` fenced on status and attempt, then one
//!   multi-row insert each for results, failure records, progress history and event logs,
//!   for the jobs the update matched.
//!
//! Batching is natural first: the writer takes whatever is waiting (at most [`MAX_BATCH`]),
//! writes it, and meanwhile the next batch gathers. Under load it is also timed, as River's
//! batch completer is with its ticker: when the previous batch ended less than [`BUSY`] ago and
//! fewer than [`GATHER`] writes wait, the writer waits up to [`LINGER`] for more, so a steady
//! stream of writes is committed in a few large transactions rather than many small ones. An
//! idle service adds no delay to a lone write. Each caller awaits its batch's commit, so a job
//! is still accepted only once it is durable and a result is stored before its terminal event
//! is published.
//!
//! The writer keeps its connection from one batch to the next while they follow each other
//! closely (within [`KEEP`]): a checkout from the pool costs a test query (`SELECT 1`, one
//! more transaction), which would otherwise come with every batch. After an idle spell, or
//! any failure, the connection goes back to the pool and the next batch checks one out (and
//! so verifies it) afresh.
//!
//! Failure handling: when the batch's transaction fails for a reason that may pass (Postgres
//! down or restarting, the kept connection cut), every caller gets [`Error::Unavailable`] and
//! retries as before. When it fails for good (a row Postgres refuses), the batch is applied
//! again one write per transaction, so one bad write fails alone.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use diesel::{ExpressionMethods, SelectableHelper};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::{Pool, to_i32};
use crate::{
    job::{JobError, JobId, JobStatus},
    store::{
        Error,
        models::{AttemptFailureRow, JobRow, ListedJobRow, NewJobRow, NewProgressRow, ResultRow},
        schema::{job_attempt_failures, job_progress_events, job_results, jobs},
    },
};

/// Most writes applied in one transaction. Keeps every multi-row statement far below
/// Postgres's limit of 65,535 bind parameters (16 per new job row, 24 per result row, 6 per
/// progress row with up to ~30 progress rows per attempt).
pub const MAX_BATCH: usize = 256;
/// Writes waiting for the writer before callers wait to hand theirs over (backpressure).
const BACKLOG: usize = 4096;
/// Longest pause between two batches over which the writer keeps its connection without
/// verifying it again.
const KEEP: Duration = Duration::from_secs(1);
/// A batch that starts within this of the previous one's end finds the writer busy: it may
/// wait [`LINGER`] to gather more writes.
const BUSY: Duration = Duration::from_millis(5);
/// Longest wait for more writes when busy. It delays each write by at most this, and only
/// under load.
const LINGER: Duration = Duration::from_millis(1);
/// A busy batch this large is written at once (the wait would gain little).
const GATHER: usize = 64;
/// Longest a batch's transaction may take. Past it (a Postgres that hangs rather than
/// refuses: a frozen server, a network path that drops packets) every caller gets
/// `Unavailable` and the connection is closed, so submits and cancels answer in bounded time.
/// The commit may still happen if Postgres wakes up: a caller retries with an idempotency key.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

type Conn = diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>;

type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// The end of an attempt, as the writer applies it.
#[derive(Debug)]
pub(super) struct End {
    /// The job.
    pub id: JobId,
    /// The attempt that ends; the update applies only while it is the job's current one.
    pub attempt: u32,
    /// COMPLETED, FAILED or CANCELLED.
    pub status: JobStatus,
    /// The error of a failed job.
    pub error: Option<JobError>,
    /// Whether that error was retryable (kept with the failure record).
    pub retryable: bool,
    /// The terminal event's sequence, when known ahead (see `AttemptStore::finish_attempt`).
    pub terminal_sequence: Option<i64>,
    /// The result row.
    pub result: ResultRow,
    /// The attempt's progress history.
    pub history: Vec<NewProgressRow>,
    /// The job's whole event log, when known ahead (see `AttemptStore::finish_attempt`).
    pub log: Option<crate::events::archive::Archive>,
}

enum Op {
    Insert(Box<NewJobRow>, Reply<JobRow>),
    Start(JobId, Reply<Option<JobRow>>),
    Finish(Box<End>, Reply<Option<JobRow>>),
}

impl Op {
    fn job_id(&self) -> JobId {
        match self {
            Op::Insert(row, _) => row.id,
            Op::Start(id, _) => *id,
            Op::Finish(end, _) => end.id,
        }
    }
}

/// The handle of the writer task; cheap to clone.
#[derive(Clone)]
pub(super) struct Writer {
    tx: mpsc::Sender<Op>,
}

impl Writer {
    /// Starts the writer task on the current Tokio runtime; it ends when every handle is gone.
    pub(super) fn start(pool: Pool) -> Writer {
        let (tx, rx) = mpsc::channel(BACKLOG);
        tokio::spawn(run(pool, rx));
        Writer { tx }
    }

    async fn call<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        let stopped = || Error::Unavailable("the store writer has stopped".into());
        self.tx.send(op(reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Inserts a new job (one without an idempotency key: its id is fresh, so it cannot
    /// conflict). Returns the stored row.
    pub(super) async fn insert(&self, row: NewJobRow) -> Result<JobRow, Error> {
        self.call(|reply| Op::Insert(Box::new(row), reply)).await
    }

    /// QUEUED or RUNNING becomes RUNNING with one more attempt; `None` when the job is
    /// terminal or unknown.
    pub(super) async fn start_attempt(&self, id: JobId) -> Result<Option<JobRow>, Error> {
        self.call(|reply| Op::Start(id, reply)).await
    }

    /// Ends the attempt with its result; `None` (nothing written) when the attempt no longer
    /// owns the job.
    pub(super) async fn finish(&self, end: End) -> Result<Option<JobRow>, Error> {
        self.call(|reply| Op::Finish(Box::new(end), reply)).await
    }
}

async fn run(pool: Pool, mut rx: mpsc::Receiver<Op>) {
    let mut waiting: Vec<Op> = Vec::with_capacity(MAX_BATCH);
    // The connection of the last batch, and when that batch ended.
    let mut kept: Option<(Conn, Instant)> = None;
    let mut last_end: Option<Instant> = None;
    loop {
        if waiting.is_empty() && rx.recv_many(&mut waiting, MAX_BATCH).await == 0 {
            return; // every handle is gone
        }
        let room = MAX_BATCH.saturating_sub(waiting.len());
        if room > 0 {
            while let Ok(op) = rx.try_recv() {
                waiting.push(op);
                if waiting.len() == MAX_BATCH {
                    break;
                }
            }
        }
        if last_end.is_some_and(|at| at.elapsed() < BUSY) && waiting.len() < GATHER {
            gather(&mut rx, &mut waiting).await;
        }
        // A job written twice in one batch (a start and the end of a very short attempt
        // cannot be, but a reclaimed lease can start it twice): later writes wait for the
        // next batch, so each job's writes apply in the order they were made.
        let mut seen = HashSet::with_capacity(waiting.len());
        let (batch, later): (Vec<Op>, Vec<Op>) =
            waiting.drain(..).partition(|op| seen.insert(op.job_id()));
        waiting = later;
        kept = apply(&pool, kept.take(), batch)
            .await
            .map(|conn| (conn, Instant::now()));
        last_end = Some(Instant::now());
    }
}

/// Adds to `waiting` what arrives within [`LINGER`], up to [`MAX_BATCH`] writes.
async fn gather(rx: &mut mpsc::Receiver<Op>, waiting: &mut Vec<Op>) {
    let until = tokio::time::Instant::now() + LINGER;
    while waiting.len() < MAX_BATCH {
        let room = MAX_BATCH - waiting.len();
        match tokio::time::timeout_at(until, rx.recv_many(waiting, room)).await {
            Ok(0) | Err(_) => return, // every handle is gone, or the wait is over
            Ok(_) => {}
        }
    }
}

/// Applies one batch and answers every caller, through the `kept` connection while it is
/// fresh, else one checked out (and so verified) afresh; returns the connection when the
/// batch committed (it is fit to keep).
async fn apply(pool: &Pool, kept: Option<(Conn, Instant)>, batch: Vec<Op>) -> Option<Conn> {
    let mut inserts = Vec::new();
    let mut starts = Vec::new();
    let mut finishes = Vec::new();
    for op in batch {
        match op {
            Op::Insert(row, reply) => inserts.push((*row, reply)),
            Op::Start(id, reply) => starts.push((id, reply)),
            Op::Finish(end, reply) => finishes.push((*end, reply)),
        }
    }
    let size = inserts.len() + starts.len() + finishes.len();
    // A stale connection goes back to the pool first (its checkout verifies the next).
    let fresh = kept
        .filter(|(_, at)| at.elapsed() < KEEP)
        .map(|(conn, _)| conn);
    let mut conn = match fresh {
        Some(conn) => conn,
        None => match pool.get().await {
            Ok(conn) => conn,
            Err(e) => {
                fail_all(inserts, starts, finishes, &e.to_string());
                return None;
            }
        },
    };
    let written = tokio::time::timeout(
        WRITE_TIMEOUT,
        conn.transaction::<_, Error, _>(async |conn| {
            let inserted = insert_jobs(conn, inserts.iter().map(|(r, _)| r)).await?;
            let started = start_attempts(conn, starts.iter().map(|(id, _)| *id)).await?;
            let ended = end_attempts(conn, finishes.iter().map(|(e, _)| e)).await?;
            Ok((inserted, started, ended))
        }),
    )
    .await;
    let Ok(written) = written else {
        warn!(
            writes = size,
            "group commit: no answer from Postgres in time"
        );
        // Mid-transaction and unanswered: the connection cannot be reused; closing it ends the
        // transaction on the server's side once it notices.
        drop(diesel_async::pooled_connection::deadpool::Object::take(
            conn,
        ));
        fail_all(
            inserts,
            starts,
            finishes,
            &format!(
                "Postgres did not answer within {} s (the write may still be committed)",
                WRITE_TIMEOUT.as_secs()
            ),
        );
        return None;
    };
    match written {
        Ok((mut inserted, mut started, mut ended)) => {
            debug!(writes = size, "group commit");
            for (row, reply) in inserts {
                let answer = inserted
                    .remove(&row.id)
                    .map(|stored| JobRow {
                        messages: row.messages,
                        ..stored
                    })
                    .ok_or_else(|| Error::Corrupt(format!("job {} was not inserted", row.id)));
                let _ = reply.send(answer);
            }
            for (id, reply) in starts {
                let _ = reply.send(Ok(started.remove(&id)));
            }
            for (end, reply) in finishes {
                let _ = reply.send(Ok(ended.remove(&end.id)));
            }
            Some(conn)
        }
        Err(e) if e.is_transient() => {
            fail_all(inserts, starts, finishes, &e.to_string());
            None
        }
        Err(e) => {
            // One write Postgres refuses must not fail the others: apply each alone.
            warn!(error = %e, writes = size, "group commit refused; writing one by one");
            for (row, reply) in inserts {
                let r = conn
                    .transaction::<_, Error, _>(async |c| insert_jobs(c, [&row]).await)
                    .await
                    .and_then(|mut m| {
                        m.remove(&row.id)
                            .ok_or_else(|| Error::Corrupt(format!("job {} not inserted", row.id)))
                    })
                    .map(|stored| JobRow {
                        messages: row.messages,
                        ..stored
                    });
                let _ = reply.send(r);
            }
            for (id, reply) in starts {
                let r = conn
                    .transaction::<_, Error, _>(async |c| start_attempts(c, [id]).await)
                    .await
                    .map(|mut m| m.remove(&id));
                let _ = reply.send(r);
            }
            for (end, reply) in finishes {
                let id = end.id;
                let r = conn
                    .transaction::<_, Error, _>(async |c| end_attempts(c, [&end]).await)
                    .await
                    .map(|mut m| m.remove(&id));
                let _ = reply.send(r);
            }
            None
        }
    }
}

fn fail_all(
    inserts: Vec<(NewJobRow, Reply<JobRow>)>,
    starts: Vec<(JobId, Reply<Option<JobRow>>)>,
    finishes: Vec<(End, Reply<Option<JobRow>>)>,
    error: &str,
) {
    let e = || Error::Unavailable(error.to_owned());
    inserts
        .into_iter()
        .for_each(|(_, r)| drop(r.send(Err(e()))));
    starts.into_iter().for_each(|(_, r)| drop(r.send(Err(e()))));
    finishes
        .into_iter()
        .for_each(|(_, r)| drop(r.send(Err(e()))));
}

type Rows = std::collections::HashMap<JobId, JobRow>;

fn by_id(rows: Vec<JobRow>) -> Rows {
    rows.into_iter().map(|r| (r.id, r)).collect()
}

async fn insert_jobs<'a>(
    conn: &mut AsyncPgConnection,
    rows: impl IntoIterator<Item = &'a NewJobRow>,
) -> Result<Rows, Error> {
    let rows: Vec<&NewJobRow> = rows.into_iter().collect();
    if rows.is_empty() {
        return Ok(Rows::new());
    }
    // The prompt is not sent back: the caller has it (see `apply`).
    let inserted: Vec<ListedJobRow> = diesel::insert_into(jobs::table)
        .values(rows)
        .returning(ListedJobRow::as_returning())
        .get_results(conn)
        .await?;
    Ok(by_id(inserted.into_iter().map(JobRow::from).collect()))
}

async fn start_attempts(
    conn: &mut AsyncPgConnection,
    ids: impl IntoIterator<Item = JobId>,
) -> Result<Rows, Error> {
    let ids: Vec<JobId> = ids.into_iter().collect();
    if ids.is_empty() {
        return Ok(Rows::new());
    }
    let now = chrono::Utc::now();
    let started: Vec<JobRow> = diesel::update(jobs::table)
        .filter(jobs::id.eq_any(ids))
        .filter(jobs::status.eq_any([JobStatus::Queued.as_str(), JobStatus::Running.as_str()]))
        .set((
            jobs::status.eq(JobStatus::Running.as_str()),
            jobs::attempts.eq(jobs::attempts + 1),
            jobs::started_at.eq(now),
            jobs::updated_at.eq(now),
        ))
        .returning(JobRow::as_returning())
        .get_results(conn)
        .await?;
    Ok(by_id(started))
}

/// The columns of `jobs` an attempt's end changes, one array per column (for `unnest`).
#[derive(Default)]
struct EndColumns {
    ids: Vec<JobId>,
    attempts: Vec<i32>,
    statuses: Vec<&'static str>,
    codes: Vec<Option<String>>,
    messages: Vec<Option<String>>,
    sequences: Vec<Option<i64>>,
}

async fn end_attempts<'a>(
    conn: &mut AsyncPgConnection,
    ends: impl IntoIterator<Item = &'a End>,
) -> Result<Rows, Error> {
    use diesel::sql_types::{Array, Int4, Int8, Nullable, Text, Timestamptz, Uuid};
    let ends: Vec<&End> = ends.into_iter().collect();
    if ends.is_empty() {
        return Ok(Rows::new());
    }
    let mut c = EndColumns::default();
    for e in &ends {
        c.ids.push(e.id);
        c.attempts.push(to_i32(e.attempt));
        c.statuses.push(e.status.as_str());
        c.codes.push(e.error.as_ref().map(|e| e.code.clone()));
        c.messages.push(e.error.as_ref().map(|e| e.message.clone()));
        c.sequences.push(e.terminal_sequence);
    }
    // Fenced: only a job still RUNNING the same attempt ends; a stale attempt writes nothing.
    let ended: Vec<JobRow> = diesel::sql_query(
        "UPDATE jobs SET status = v.status, error_code = v.code, error_message = v.message, \
         last_sequence = coalesce(v.seq, jobs.last_sequence), finished_at = $7, updated_at = $7 \
         FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::text[], $5::text[], $6::int8[]) \
           AS v(id, attempt, status, code, message, seq) \
         WHERE jobs.id = v.id AND jobs.status = 'running' AND jobs.attempts = v.attempt \
         RETURNING jobs.*",
    )
    .bind::<Array<Uuid>, _>(c.ids)
    .bind::<Array<Int4>, _>(c.attempts)
    .bind::<Array<Text>, _>(c.statuses)
    .bind::<Array<Nullable<Text>>, _>(c.codes)
    .bind::<Array<Nullable<Text>>, _>(c.messages)
    .bind::<Array<Nullable<Int8>>, _>(c.sequences)
    .bind::<Timestamptz, _>(chrono::Utc::now())
    .load(conn)
    .await?;
    let ended = by_id(ended);
    let mine: Vec<&&End> = ends.iter().filter(|e| ended.contains_key(&e.id)).collect();
    if mine.is_empty() {
        return Ok(ended);
    }
    let results: Vec<&ResultRow> = mine.iter().map(|e| &e.result).collect();
    diesel::insert_into(job_results::table)
        .values(results)
        .execute(conn)
        .await?;
    let failures: Vec<AttemptFailureRow<'_>> = mine
        .iter()
        .filter_map(|e| {
            e.error.as_ref().map(|error| AttemptFailureRow {
                job_id: e.id,
                attempt: to_i32(e.attempt),
                error_code: &error.code,
                message: &error.message,
                retryable: e.retryable,
            })
        })
        .collect();
    if !failures.is_empty() {
        diesel::insert_into(job_attempt_failures::table)
            .values(failures)
            .on_conflict_do_nothing()
            .execute(conn)
            .await?;
    }
    let logs: Vec<(JobId, &crate::events::archive::Archive)> = mine
        .iter()
        .filter_map(|e| e.log.as_ref().map(|log| (e.id, log)))
        .collect();
    super::history::upsert_logs(conn, &logs).await?;
    let history: Vec<&NewProgressRow> = mine.iter().flat_map(|e| e.history.iter()).collect();
    // Each statement stays under the bind limit however long the histories are.
    for chunk in history.chunks(8192) {
        diesel::insert_into(job_progress_events::table)
            .values(chunk.to_vec())
            .execute(conn)
            .await?;
    }
    Ok(ended)
}
