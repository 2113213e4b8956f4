//! Group commit for the SQLite store: every write waits in one queue, and the writer applies
//! whatever has gathered in one `IMMEDIATE` transaction on one blocking-thread hop.
//!
//! SQLite has one writer at a time, so writes used to run one by one, each with its own
//! thread hop, `BEGIN`/`COMMIT` and WAL append. Now each write runs inside a savepoint of the
//! batch's transaction: one that fails rolls back its own changes only and gets its error, the
//! others commit together. Callers get their answer only after the commit, so a job is still
//! accepted only once it is durable. Batching is natural: a lone write goes at once; writes
//! that arrive while a batch is being written form the next one (at most [`MAX_BATCH`]).

use std::sync::Arc;

use diesel::{Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use crate::store::Error;

/// Most writes in one transaction.
const MAX_BATCH: usize = 256;
/// Writes waiting for the writer before callers wait to hand theirs over (backpressure).
const BACKLOG: usize = 4096;

/// A write waiting for its batch, its answer kept until the batch commits.
trait Pending: Send {
    /// Runs the write in a savepoint of the batch's transaction, keeping its outcome.
    fn apply(&mut self, conn: &mut SqliteConnection);
    /// Sends the kept outcome, or `failed` when the batch did not commit.
    fn answer(self: Box<Self>, failed: Option<&str>);
}

struct Write<T, F> {
    op: Option<F>,
    outcome: Option<Result<T, Error>>,
    reply: oneshot::Sender<Result<T, Error>>,
}

impl<T, F> Pending for Write<T, F>
where
    T: Send,
    F: FnOnce(&mut SqliteConnection) -> Result<T, Error> + Send,
{
    fn apply(&mut self, conn: &mut SqliteConnection) {
        if let Some(op) = self.op.take() {
            // `transaction` inside a transaction is a savepoint.
            self.outcome = Some(conn.transaction(op));
        }
    }

    fn answer(self: Box<Self>, failed: Option<&str>) {
        let outcome = match failed {
            Some(e) => Err(Error::Unavailable(e.to_owned())),
            None => self
                .outcome
                .unwrap_or_else(|| Err(Error::Unavailable("write not applied".into()))),
        };
        let _ = self.reply.send(outcome);
    }
}

/// The handle of the writer task; cheap to clone.
#[derive(Clone)]
pub(super) struct Committer {
    tx: mpsc::Sender<Box<dyn Pending>>,
}

impl Committer {
    /// Starts the writer task on the current Tokio runtime, writing through `conn`.
    pub(super) fn start(conn: Arc<tokio::sync::Mutex<SqliteConnection>>) -> Committer {
        let (tx, rx) = mpsc::channel(BACKLOG);
        tokio::spawn(run(conn, rx));
        Committer { tx }
    }

    /// Runs `op` in the next batch's transaction and returns its outcome once that commits.
    pub(super) async fn write<T, F>(&self, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T, Error> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let stopped = || Error::Unavailable("the SQLite writer has stopped".into());
        let write = Write {
            op: Some(op),
            outcome: None,
            reply,
        };
        self.tx.send(Box::new(write)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(
    conn: Arc<tokio::sync::Mutex<SqliteConnection>>,
    mut rx: mpsc::Receiver<Box<dyn Pending>>,
) {
    let mut batch: Vec<Box<dyn Pending>> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let taken = std::mem::take(&mut batch);
        let mut guard = conn.clone().lock_owned().await;
        let done = tokio::task::spawn_blocking(move || {
            let mut taken = taken;
            let committed = guard.immediate_transaction::<_, diesel::result::Error, _>(|c| {
                for w in &mut taken {
                    w.apply(c);
                }
                Ok(())
            });
            (taken, committed.err().map(|e| e.to_string()))
        })
        .await;
        match done {
            Ok((taken, failed)) => {
                for w in taken {
                    w.answer(failed.as_deref());
                }
            }
            // The thread panicked: its writes are lost with it (dropped replies tell their
            // callers the writer stopped); keep serving the next ones.
            Err(e) => tracing::error!(error = %e, "SQLite write batch failed"),
        }
    }
}
