//! Terminal sequences and event logs written to the store in batches, off the path of the
//! attempt, for the rare jobs whose result went to the store without them (see
//! `Worker::publish_terminal`).
//!
//! A job's terminal sequence (`jobs.last_sequence`) is only read once its Redis log has
//! expired, to give the replayed snapshot and terminal event their original sequences; until
//! then the log itself has them. So the worker does not wait for it: attempts hand it to
//! this writer, which stores everything that queued up meanwhile in one statement (one round
//! trip and one commit for many jobs). If the process dies before a batch is written, those
//! jobs keep `last_sequence` 0 and a late replay puts the snapshot and the terminal event at
//! the start of the next epoch instead, above any sequence the log had (see `streaming`).

use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::{events::archive::Archive, job::JobId, store::Store};

/// Most sequences written by one statement.
const BATCH: usize = 512;
/// Sequences waiting before `record` waits for the writer (backpressure, not loss).
const QUEUE: usize = 8192;
/// Tries per batch while the store is unavailable.
const TRIES: u32 = 5;

enum Msg {
    Sequence(JobId, u64),
    Log(JobId, Archive),
    Flush(oneshot::Sender<()>),
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub(super) struct SequenceWriter {
    tx: mpsc::Sender<Msg>,
}

impl SequenceWriter {
    /// Starts the writer task on the current runtime.
    pub(super) fn start(store: Arc<dyn Store>) -> SequenceWriter {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, rx));
        SequenceWriter { tx }
    }

    /// Queues `sequence` as the terminal sequence of `job_id`.
    pub(super) async fn record(&self, job_id: JobId, sequence: u64) {
        if self.tx.send(Msg::Sequence(job_id, sequence)).await.is_err() {
            warn!(%job_id, "the sequence writer has stopped; terminal sequence not stored");
        }
    }

    /// Queues `log` as the stored event log of `job_id` (and its last sequence as the
    /// terminal sequence).
    pub(super) async fn record_log(&self, job_id: JobId, log: Archive) {
        if self.tx.send(Msg::Log(job_id, log)).await.is_err() {
            warn!(%job_id, "the sequence writer has stopped; event log not stored");
        }
    }

    /// Returns once everything queued before the call is written (or given up).
    pub(super) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Msg>) {
    let mut msgs = Vec::with_capacity(BATCH);
    let mut batch = Vec::with_capacity(BATCH);
    let mut logs = Vec::new();
    while rx.recv_many(&mut msgs, BATCH).await > 0 {
        let mut flushed = Vec::new();
        for m in msgs.drain(..) {
            match m {
                Msg::Sequence(id, seq) => batch.push((id, seq)),
                Msg::Log(id, log) => logs.push((id, log)),
                Msg::Flush(done) => flushed.push(done),
            }
        }
        if !batch.is_empty() {
            write(store.as_ref(), &batch).await;
        }
        if !logs.is_empty() {
            write_logs(store.as_ref(), &logs).await;
        }
        batch.clear();
        logs.clear();
        for done in flushed {
            let _ = done.send(());
        }
    }
}

async fn write(store: &dyn Store, batch: &[(JobId, u64)]) {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=TRIES {
        match store.set_last_sequences(batch).await {
            Ok(()) => return,
            Err(e) if e.is_transient() && attempt < TRIES => {
                warn!(error = %e, jobs = batch.len(), "cannot store terminal sequences yet; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                warn!(error = %e, jobs = batch.len(), "terminal sequences not stored; late replays number snapshots without them");
                return;
            }
        }
    }
}

async fn write_logs(store: &dyn Store, logs: &[(JobId, Archive)]) {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=TRIES {
        match store.store_event_logs(logs).await {
            Ok(()) => return,
            Err(e) if e.is_transient() && attempt < TRIES => {
                warn!(error = %e, jobs = logs.len(), "cannot store event logs yet; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                warn!(error = %e, jobs = logs.len(), "event logs not stored; late replays of these jobs are snapshots");
                return;
            }
        }
    }
}
