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

mod statements;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use diesel_async::{AsyncConnection, AsyncPgConnection};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use self::statements::{Rows, end_attempts, insert_jobs, start_attempts};
use super::Pool;
use crate::{
    job::{JobError, JobId, JobStatus},
    store::{
        Error,
        models::{JobRow, NewJobRow, NewProgressRow, ResultRow},
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

/// One batch's writes by kind, each with its caller's reply.
#[derive(Default)]
struct Parts {
    inserts: Vec<(NewJobRow, Reply<JobRow>)>,
    starts: Vec<(JobId, Reply<Option<JobRow>>)>,
    finishes: Vec<(End, Reply<Option<JobRow>>)>,
}

impl Parts {
    fn of(batch: Vec<Op>) -> Parts {
        let mut parts = Parts::default();
        for op in batch {
            match op {
                Op::Insert(row, reply) => parts.inserts.push((*row, reply)),
                Op::Start(id, reply) => parts.starts.push((id, reply)),
                Op::Finish(end, reply) => parts.finishes.push((*end, reply)),
            }
        }
        parts
    }

    fn len(&self) -> usize {
        self.inserts.len() + self.starts.len() + self.finishes.len()
    }

    /// Every write of the batch, in one transaction on `conn` (the caller's).
    async fn write(&self, conn: &mut AsyncPgConnection) -> Result<(Rows, Rows, Rows), Error> {
        let inserted = insert_jobs(conn, self.inserts.iter().map(|(r, _)| r)).await?;
        let started = start_attempts(conn, self.starts.iter().map(|(id, _)| *id)).await?;
        let ended = end_attempts(conn, self.finishes.iter().map(|(e, _)| e)).await?;
        Ok((inserted, started, ended))
    }

    /// Answers every caller from the rows the committed batch returned.
    fn answer(self, (mut inserted, mut started, mut ended): (Rows, Rows, Rows)) {
        for (row, reply) in self.inserts {
            let answer = inserted
                .remove(&row.id)
                .map(|stored| JobRow {
                    messages: row.messages,
                    ..stored
                })
                .ok_or_else(|| Error::Corrupt(format!("job {} was not inserted", row.id)));
            let _ = reply.send(answer);
        }
        for (id, reply) in self.starts {
            let _ = reply.send(Ok(started.remove(&id)));
        }
        for (end, reply) in self.finishes {
            let _ = reply.send(Ok(ended.remove(&end.id)));
        }
    }

    /// Applies each write in a transaction of its own and answers its caller: one write
    /// Postgres refuses must not fail the others.
    async fn one_by_one(self, conn: &mut Conn) {
        for (row, reply) in self.inserts {
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
        for (id, reply) in self.starts {
            let r = conn
                .transaction::<_, Error, _>(async |c| start_attempts(c, [id]).await)
                .await
                .map(|mut m| m.remove(&id));
            let _ = reply.send(r);
        }
        for (end, reply) in self.finishes {
            let id = end.id;
            let r = conn
                .transaction::<_, Error, _>(async |c| end_attempts(c, [&end]).await)
                .await
                .map(|mut m| m.remove(&id));
            let _ = reply.send(r);
        }
    }

    /// Answers every caller with [`Error::Unavailable`] saying `error`.
    fn fail(self, error: &str) {
        let e = || Error::Unavailable(error.to_owned());
        self.inserts
            .into_iter()
            .for_each(|(_, r)| drop(r.send(Err(e()))));
        self.starts
            .into_iter()
            .for_each(|(_, r)| drop(r.send(Err(e()))));
        self.finishes
            .into_iter()
            .for_each(|(_, r)| drop(r.send(Err(e()))));
    }
}

/// The `kept` connection while it is fresh, else one checked out (and so verified) afresh; a
/// stale connection goes back to the pool first.
async fn connection(pool: &Pool, kept: Option<(Conn, Instant)>) -> Result<Conn, String> {
    let fresh = kept
        .filter(|(_, at)| at.elapsed() < KEEP)
        .map(|(conn, _)| conn);
    match fresh {
        Some(conn) => Ok(conn),
        None => pool.get().await.map_err(|e| e.to_string()),
    }
}

/// Applies one batch and answers every caller, through the `kept` connection while it is
/// fresh, else one checked out (and so verified) afresh; returns the connection when the
/// batch committed (it is fit to keep).
async fn apply(pool: &Pool, kept: Option<(Conn, Instant)>, batch: Vec<Op>) -> Option<Conn> {
    let parts = Parts::of(batch);
    let size = parts.len();
    let mut conn = match connection(pool, kept).await {
        Ok(conn) => conn,
        Err(e) => {
            parts.fail(&e);
            return None;
        }
    };
    let written = tokio::time::timeout(
        WRITE_TIMEOUT,
        conn.transaction::<_, Error, _>(async |conn| parts.write(conn).await),
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
        parts.fail(&format!(
            "Postgres did not answer within {} s (the write may still be committed)",
            WRITE_TIMEOUT.as_secs()
        ));
        return None;
    };
    match written {
        Ok(rows) => {
            debug!(writes = size, "group commit");
            parts.answer(rows);
            Some(conn)
        }
        Err(e) if e.is_transient() => {
            parts.fail(&e.to_string());
            None
        }
        Err(e) => {
            warn!(error = %e, writes = size, "group commit refused; writing one by one");
            parts.one_by_one(&mut conn).await;
            None
        }
    }
}
