//! The journal of wrong flags: a group-commit writer. A wrong submission (its `submissions` row
//! and its action-log line) is handed to the journal, which writes whatever is waiting in one
//! transaction with multi-row inserts ([`records::record_wrong_batch`]), and answers each
//! submitter only once that transaction has committed.
//!
//! # What it guarantees
//!
//! - **Durable before the answer.** [`Journal::record`] returns `Ok` only after the commit that
//!   holds the row returned `Ok`. A writer that stops mid-batch (a crash, the runtime shut down,
//!   the task aborted) drops its batch's answer channels, so every submitter of that batch gets
//!   an error (503, retryable), never an "incorrect" for a row that was not written. Nothing
//!   acknowledged is lost.
//! - **No batch poisons its neighbours.** A batch whose transaction fails before its commit was
//!   sent was rolled back whole; its rows are then written one transaction each, so one bad row
//!   fails only its own submitter.
//! - **Duplicates only on an unknown commit outcome.** When the commit itself fails (the
//!   connection dropped while committing), the rows may or may not be written; each submitter
//!   gets a 503 and may submit again, which can record that wrong flag twice. Only wrong flags go
//!   through the journal (solves are written by their own transaction, whose unique key refuses
//!   a second solve), and only to challenges without an attempt limit, so a duplicate wrong row
//!   changes no decision.
//! - **Bounded.** The queue holds [`QUEUE`] submissions; when it is full, submitters wait for room
//!   (back-pressure, no loss). If the writers are gone (the channel closed), a submitter writes
//!   its own row in its own transaction.
//!
//! There is no lingering: a writer takes what is waiting as soon as it is free, so a lone
//! submission is written at once, and under load the batches grow by themselves while the
//! previous commit is in flight.
//!
//! Config fields that would replace the constants: `[contestant].journal_queue` (default 4096),
//! `[contestant].journal_batch` (default 256), `[contestant].journal_writers` (default 2).

use std::sync::Arc;

use fctf_core::db::{Database, DbError, DbResult};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::records::{self, BatchError, SubmissionRow};

/// Submissions waiting for a writer, at most.
pub const QUEUE: usize = 4096;

/// Most submissions one transaction writes.
pub const MAX_BATCH: usize = 256;

/// Writer tasks: while one commits, the next batch is being written by another.
pub const WRITERS: usize = 2;

/// One submission waiting, with where to send its outcome.
#[derive(Debug)]
struct Job {
    row: SubmissionRow,
    done: oneshot::Sender<DbResult<()>>,
}

/// The handle submitters write through. Cheap to clone; the writers stop once every handle is
/// dropped and the queue is drained.
#[derive(Clone, Debug)]
pub struct Journal {
    queue: mpsc::Sender<Job>,
    db: Database,
    writers: Arc<Vec<tokio::task::AbortHandle>>,
}

impl Journal {
    /// Starts [`WRITERS`] writers over `db` on the current runtime.
    pub fn start(db: Database) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let jobs = Arc::new(Mutex::new(jobs));
        let writers = (0..WRITERS)
            .map(|_| tokio::spawn(writer(jobs.clone(), db.clone())).abort_handle())
            .collect();
        Self {
            queue,
            db,
            writers: Arc::new(writers),
        }
    }

    /// Kills the writers wherever they are (mid-batch included), as a crash would: every
    /// submission not yet committed is answered with an error, and later ones are written
    /// directly. For tests of exactly that.
    pub fn kill_writers(&self) {
        for writer in self.writers.iter() {
            writer.abort();
        }
    }

    /// Writes `row` (a wrong submission and its action-log line); `Ok` once it is committed.
    pub async fn record(&self, row: SubmissionRow) -> DbResult<()> {
        let (done, outcome) = oneshot::channel();
        match self.queue.send(Job { row, done }).await {
            Ok(()) => outcome.await.unwrap_or_else(|_| {
                Err(DbError::Unavailable(
                    "the journal writer stopped before committing this submission".to_owned(),
                ))
            }),
            Err(mpsc::error::SendError(job)) => {
                tracing::error!("the journal's writers are gone; writing the submission directly");
                records::record_wrong_batch(&self.db, std::slice::from_ref(&job.row))
                    .await
                    .map_err(|e| e.error)
            }
        }
    }
}

/// One writer: takes what is waiting (up to [`MAX_BATCH`]), writes it in one transaction,
/// answers each submitter; ends when every [`Journal`] is dropped and the queue is empty.
async fn writer(jobs: Arc<Mutex<mpsc::Receiver<Job>>>, db: Database) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut jobs = jobs.lock().await;
            if jobs.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
        }
        let rows: Vec<SubmissionRow> = batch.iter().map(|j| j.row.clone()).collect();
        match records::record_wrong_batch(&db, &rows).await {
            Ok(()) => {
                for job in batch.drain(..) {
                    let _ = job.done.send(Ok(()));
                }
            }
            Err(BatchError {
                error,
                at_commit: false,
            }) if batch.len() > 1 => {
                // Rolled back whole: nothing of it was written, so each row may be tried alone.
                tracing::warn!(%error, rows = batch.len(), "journal batch failed; writing its rows one by one");
                for job in batch.drain(..) {
                    let outcome = records::record_wrong_batch(&db, std::slice::from_ref(&job.row))
                        .await
                        .map_err(|e| e.error);
                    let _ = job.done.send(outcome);
                }
            }
            Err(BatchError { error, at_commit }) => {
                tracing::warn!(%error, at_commit, rows = batch.len(), "journal batch failed");
                for job in batch.drain(..) {
                    let _ = job.done.send(Err(copy(&error)));
                }
            }
        }
    }
}

/// The same error for each submitter of a failed batch (`DbError` is not `Clone`).
fn copy(error: &DbError) -> DbError {
    match error {
        DbError::Unavailable(m) => DbError::Unavailable(m.clone()),
        DbError::Conflict(m) => DbError::Conflict(m.clone()),
        DbError::Query(m) => DbError::Query(m.clone()),
        DbError::Corrupt(m) => DbError::Corrupt(m.clone()),
        other => DbError::Query(other.to_string()),
    }
}
