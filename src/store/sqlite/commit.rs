//! Group commit for the SQLite store: every write waits in one queue, and the writer applies
//! whatever has gathered in one `IMMEDIATE` transaction on one blocking-thread hop.
//!
//! SQLite has one writer at a time, so writes used to run one by one, each with its own
//! thread hop, `BEGIN`/`COMMIT` and WAL append. Now the writes of a batch run one after the
//! other in one transaction, with nothing between them: no savepoint per write, whose
//! statement and sub-journal (a copy of each page a write first touches) were a tenth of the
//! embedded server's CPU on the cost benchmark. A write that fails is rare (a refused row, a
//! full disk); then the whole batch is rolled back and applied again one write per
//! transaction, so the failing write gets its error alone and the others commit. A write may
//! therefore run twice, the first run rolled back: writes are closures over what they write,
//! run again from the start. Callers get their answer only after the commit, so a job is
//! still accepted only once it is durable. Batching is natural: a lone write goes at once;
//! writes that arrive while a batch is being written form the next one (at most
//! [`MAX_BATCH`]).

use std::sync::Arc;

use diesel::SqliteConnection;
use tokio::sync::{mpsc, oneshot};

use crate::store::Error;

/// Most writes in one transaction.
const MAX_BATCH: usize = 256;
/// Writes waiting for the writer before callers wait to hand theirs over (backpressure).
const BACKLOG: usize = 4096;

/// A write waiting for its batch, its answer kept until the batch commits.
trait Pending: Send {
    /// Runs the write in the caller's transaction, keeping its outcome; `false` when it
    /// failed (its transaction must then be rolled back).
    fn apply(&mut self, conn: &mut SqliteConnection) -> bool;
    /// Sends the kept outcome, or `failed` when its transaction did not commit.
    fn answer(self: Box<Self>, failed: Option<&str>);
}

struct Write<T, F> {
    op: F,
    outcome: Option<Result<T, Error>>,
    reply: oneshot::Sender<Result<T, Error>>,
}

impl<T, F> Pending for Write<T, F>
where
    T: Send,
    F: FnMut(&mut SqliteConnection) -> Result<T, Error> + Send,
{
    fn apply(&mut self, conn: &mut SqliteConnection) -> bool {
        let outcome = (self.op)(conn);
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn answer(self: Box<Self>, failed: Option<&str>) {
        let outcome = match (failed, self.outcome) {
            // A write that failed keeps its own error, whatever became of the transaction.
            (_, Some(Err(e))) => Err(e),
            (Some(e), _) => Err(Error::Unavailable(e.to_owned())),
            (None, outcome) => {
                outcome.unwrap_or_else(|| Err(Error::Unavailable("write not applied".into())))
            }
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
    /// `op` may run twice, its first run rolled back (see the module's documentation).
    pub(super) async fn write<T, F>(&self, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnMut(&mut SqliteConnection) -> Result<T, Error> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let stopped = || Error::Unavailable("the SQLite writer has stopped".into());
        let write = Write {
            op,
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
        let done = tokio::task::spawn_blocking(move || apply(&mut guard, taken)).await;
        // The thread panicked: its writes are lost with it (dropped replies tell their
        // callers the writer stopped); keep serving the next ones.
        if let Err(e) = done {
            tracing::error!(error = %e, "SQLite write batch failed");
        }
    }
}

/// Applies `batch` in one transaction and answers each write; when one fails, applies them
/// again one per transaction.
fn apply(conn: &mut SqliteConnection, mut batch: Vec<Box<dyn Pending>>) {
    let committed = conn.immediate_transaction::<_, diesel::result::Error, _>(|c| {
        for w in &mut batch {
            if !w.apply(c) {
                return Err(diesel::result::Error::RollbackTransaction);
            }
        }
        Ok(())
    });
    match committed {
        Ok(()) => batch.into_iter().for_each(|w| w.answer(None)),
        Err(diesel::result::Error::RollbackTransaction) if batch.len() > 1 => {
            for mut w in batch {
                let alone = conn.immediate_transaction::<_, diesel::result::Error, _>(|c| {
                    if w.apply(c) {
                        Ok(())
                    } else {
                        Err(diesel::result::Error::RollbackTransaction)
                    }
                });
                let failed = match alone {
                    Ok(()) | Err(diesel::result::Error::RollbackTransaction) => None,
                    Err(e) => Some(e.to_string()),
                };
                w.answer(failed.as_deref());
            }
        }
        // A lone write that failed keeps its own error.
        Err(diesel::result::Error::RollbackTransaction) => {
            batch.into_iter().for_each(|w| w.answer(None));
        }
        Err(e) => {
            let e = e.to_string();
            batch.into_iter().for_each(|w| w.answer(Some(&e)));
        }
    }
}

#[cfg(test)]
mod tests;
