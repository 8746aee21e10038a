//! The journal writer: one thread that applies the queue's record changes
//! in the order the table made them, so the last record on disk is always
//! the latest state. A thread, not a task: every write is a blocking fsync.

use super::BuildQueue;
use crate::builds::job::{Job, JobId};
use crate::builds::journal::Journal;
use tokio::sync::{mpsc, oneshot};

/// One job for the journal writer.
pub(super) enum Write {
    /// Write this record; say when it is on disk.
    Save(Box<Job>, Option<oneshot::Sender<std::io::Result<()>>>),
    /// Delete this record.
    Remove(JobId),
    /// Say when every write before this one is done.
    Flush(oneshot::Sender<()>),
}

/// Starts the writer over `journal`; it runs until every sender of the
/// returned channel (the queue) is dropped.
pub(super) fn spawn(journal: Journal) -> mpsc::UnboundedSender<Write> {
    let (writes, mut writes_rx) = mpsc::unbounded_channel::<Write>();
    // One writer, in order: the last record written is the latest state.
    // It ends when the last sender (the queue) is dropped.
    std::thread::Builder::new()
            .name("build-journal".into())
            .spawn(move || {
                while let Some(write) = writes_rx.blocking_recv() {
                    match write {
                        Write::Save(job, ack) => {
                            let result = journal.save(&job);
                            if let Err(err) = &result {
                                tracing::error!(job_id = %job.id, error = %err, "cannot write the job record");
                            }
                            if let Some(ack) = ack {
                                let _ = ack.send(result);
                            }
                        }
                        Write::Flush(ack) => {
                            let _ = ack.send(());
                        }
                        Write::Remove(id) => {
                            if let Err(err) = journal.remove(&id) {
                                tracing::warn!(job_id = %id, error = %err, "cannot remove an old job record");
                            }
                        }
                    }
                }
            })
            .expect("spawning the journal writer thread");
    writes
}

impl BuildQueue {
    /// Waits until every record change made so far is on disk (at shutdown).
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.inner.writes.send(Write::Flush(ack)).is_ok() {
            let _ = done.await;
        }
    }
}
