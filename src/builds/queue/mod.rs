//! `BuildQueue`: the table of jobs, the bounded queue in front of the
//! workers, and the rules that join identical requests into one job and
//! cancel a job only when every waiter has. Every state change is written to
//! the journal in order by one writer; a submit answers only once its record
//! is on disk, so an accepted job survives a crash.

mod read;
mod writer;

use super::job::{ErrorClass, Job, JobError, JobId, JobState, Waiter};
use super::journal::Journal;
use super::spec::Spec;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use writer::Write;

/// Why a queue operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The queue holds `queue_size` jobs already.
    #[error("the build queue is full ({0} jobs waiting); retry later")]
    Full(usize),
    /// No job with that id.
    #[error("no such job")]
    NotFound,
    /// An unfinished job has the same SHA1 but other bytes.
    #[error("a job for this SHA1 with different bytes (sha256) is running; not merging them")]
    Conflict,
    /// The token names no waiter of this job.
    #[error("only a submitter of this job (its token) or the operator may cancel it")]
    NotAllowed,
    /// The job record could not be written.
    #[error("cannot write the job record: {0}")]
    Journal(#[source] std::io::Error),
    /// The app is shutting down.
    #[error("the build queue is shutting down")]
    Stopping,
}

/// What `submit` did.
pub struct Submitted {
    /// The job, as it stands.
    pub job: Job,
    /// The new waiter's token (for cancelling).
    pub token: String,
    /// True when an identical unfinished job was joined.
    pub joined: bool,
}

struct Slot {
    job: Job,
    cancel: CancellationToken,
    state: watch::Sender<JobState>,
}

#[derive(Default)]
struct Table {
    jobs: HashMap<JobId, Slot>,
    /// Unfinished jobs by `Spec::key`.
    by_key: HashMap<String, JobId>,
    queued: usize,
}

struct Inner {
    table: Mutex<Table>,
    ready: mpsc::UnboundedSender<JobId>,
    writes: mpsc::UnboundedSender<Write>,
    queue_size: usize,
    keep_finished: usize,
}

/// The job table and queue. Cheap to clone.
#[derive(Clone)]
pub struct BuildQueue {
    inner: Arc<Inner>,
}

/// The workers' end of the queue: job ids in submission order.
pub type Ready = mpsc::UnboundedReceiver<JobId>;

/// A job a worker took, with the token that cancels it.
pub struct Taken {
    /// The job as it was taken (state `Fetching`).
    pub job: Job,
    /// Fires when every waiter has cancelled, or at shutdown.
    pub cancel: CancellationToken,
}

impl BuildQueue {
    /// A queue over `journal`, with the records it already holds: unfinished
    /// jobs go back in the queue in submission order; the oldest finished
    /// records past `keep_finished` are dropped. Returns the workers' end.
    /// The journal writer runs on a blocking thread until the queue is dropped.
    pub fn open(
        journal: Journal,
        loaded: Vec<Job>,
        queue_size: usize,
        keep_finished: usize,
    ) -> (BuildQueue, Ready) {
        let (ready, ready_rx) = mpsc::unbounded_channel();
        let writes = writer::spawn(journal);
        let mut table = Table::default();
        let mut finished = Vec::new();
        for mut job in loaded {
            let was = job.state;
            if !was.is_finished()
                && !job.waiters.is_empty()
                && job.waiters.iter().all(|w| w.cancelled)
            {
                // Every waiter had cancelled when the server stopped.
                job.advance(JobState::Cancelled);
                let _ = writes.send(Write::Save(Box::new(job.clone()), None));
            }
            job.requeue();
            if job.state == JobState::Queued {
                if was != JobState::Queued {
                    tracing::info!(job_id = %job.id, was = was.as_str(), "restarting an interrupted build");
                }
                table.queued += 1;
                table.by_key.insert(job.spec.key(), job.id.clone());
                let _ = ready.send(job.id.clone());
                let _ = writes.send(Write::Save(Box::new(job.clone()), None));
            } else {
                finished.push(job.id.clone());
            }
            let (state, _) = watch::channel(job.state);
            table.jobs.insert(
                job.id.clone(),
                Slot {
                    job,
                    cancel: CancellationToken::new(),
                    state,
                },
            );
        }
        let queue = BuildQueue {
            inner: Arc::new(Inner {
                table: Mutex::new(table),
                ready,
                writes,
                queue_size,
                keep_finished,
            }),
        };
        queue.forget_old();
        (queue, ready_rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner
            .table
            .lock()
            .expect("job table lock is never poisoned")
    }

    /// Drops the oldest finished records beyond `keep_finished`.
    fn forget_old(&self) {
        let mut table = self.lock();
        let mut finished: Vec<(u64, JobId)> = table
            .jobs
            .values()
            .filter(|slot| slot.job.state.is_finished())
            .map(|slot| (slot.job.created, slot.job.id.clone()))
            .collect();
        if finished.len() <= self.inner.keep_finished {
            return;
        }
        finished.sort();
        let excess = finished.len() - self.inner.keep_finished;
        for (_, id) in finished.into_iter().take(excess) {
            table.jobs.remove(&id);
            let _ = self.inner.writes.send(Write::Remove(id));
        }
    }

    /// Queues `spec` as a new job, or joins the unfinished job with the same
    /// key. `prepare` fills in a new job's source fields; `same_source`
    /// decides whether a local source may join an existing job (its sha256
    /// must match). Answers once the record is on disk.
    pub async fn submit(
        &self,
        spec: Spec,
        source_sha256: Option<String>,
        source_path: Option<std::path::PathBuf>,
    ) -> Result<Submitted, Error> {
        let (waiter, token) = Waiter::issue();
        let token_sha256 = waiter.token_sha256.clone();
        let (ack, acked) = oneshot::channel();
        let (snapshot, joined) = {
            let mut table = self.lock();
            let key = spec.key();
            let (snapshot, joined) = if let Some(id) = table.by_key.get(&key).cloned() {
                let slot = table
                    .jobs
                    .get_mut(&id)
                    .expect("by_key names a job in the table");
                if slot.job.source_sha256 == source_sha256 {
                    slot.job.waiters.push(waiter);
                    (slot.job.clone(), true)
                } else {
                    // The same SHA1 with other bytes: never merge them.
                    return Err(Error::Conflict);
                }
            } else {
                if table.queued >= self.inner.queue_size {
                    return Err(Error::Full(table.queued));
                }
                let mut job = Job::new(spec, waiter);
                job.source_sha256 = source_sha256;
                job.source_path = source_path;
                table.queued += 1;
                table.by_key.insert(key, job.id.clone());
                let (state, _) = watch::channel(JobState::Queued);
                table.jobs.insert(
                    job.id.clone(),
                    Slot {
                        job: job.clone(),
                        cancel: CancellationToken::new(),
                        state,
                    },
                );
                (job, false)
            };
            // Sent under the lock, so records reach the writer in the order
            // the table changed (a join never overwrites a later state).
            let _ = self
                .inner
                .writes
                .send(Write::Save(Box::new(snapshot.clone()), Some(ack)));
            (snapshot, joined)
        };
        let written = match acked.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(Error::Journal(err)),
            Err(_) => Err(Error::Stopping),
        };
        if let Err(err) = written {
            self.undo_submit(&snapshot.id, joined, &token_sha256);
            return Err(err);
        }
        if !joined && self.inner.ready.send(snapshot.id.clone()).is_err() {
            self.undo_submit(&snapshot.id, joined, &token_sha256);
            return Err(Error::Stopping);
        }
        Ok(Submitted {
            job: snapshot,
            token,
            joined,
        })
    }

    /// Takes back a submit whose record could not be written: the new job
    /// goes (its key and queue place freed), or the joined waiter does.
    fn undo_submit(&self, id: &JobId, joined: bool, token_sha256: &str) {
        let mut table = self.lock();
        let table = &mut *table;
        if joined {
            if let Some(slot) = table.jobs.get_mut(id) {
                slot.job.waiters.retain(|w| w.token_sha256 != token_sha256);
            }
        } else if let Some(slot) = table.jobs.remove(id) {
            table.queued = table.queued.saturating_sub(1);
            if table.by_key.get(&slot.job.spec.key()) == Some(id) {
                table.by_key.remove(&slot.job.spec.key());
            }
        }
    }

    /// Cancels for the waiter holding `token`, or for every waiter when
    /// `operator` is true. The job stops when no waiter is left.
    pub fn cancel(&self, id: &JobId, token: Option<&str>, operator: bool) -> Result<Job, Error> {
        let mut table = self.lock();
        let table = &mut *table;
        let slot = table.jobs.get_mut(id).ok_or(Error::NotFound)?;
        let is_waiter = token.is_some_and(|t| {
            slot.job
                .waiters
                .iter()
                .any(|w| super::job::token_matches(t, &w.token_sha256))
        });
        if !operator && !is_waiter {
            return Err(Error::NotAllowed);
        }
        if slot.job.state.is_finished() {
            return Ok(slot.job.clone());
        }
        let last = if operator {
            slot.job.waiters.iter_mut().for_each(|w| w.cancelled = true);
            true
        } else {
            token
                .and_then(|t| slot.job.cancel_waiter(t))
                .unwrap_or(false)
        };
        if last {
            // Nobody waits any more: a new identical request makes a new job.
            let key = slot.job.spec.key();
            if table.by_key.get(&key) == Some(id) {
                table.by_key.remove(&key);
            }
            if slot.job.state == JobState::Queued {
                // Never started: finish it here; the worker will skip it.
                slot.job.advance(JobState::Cancelled);
                table.queued -= 1;
                slot.state.send_replace(JobState::Cancelled);
                if let Some(source) = &slot.job.source_path {
                    let _ = std::fs::remove_file(source);
                }
            }
            slot.cancel.cancel();
        }
        let snapshot = slot.job.clone();
        let _ = self
            .inner
            .writes
            .send(Write::Save(Box::new(snapshot.clone()), None));
        Ok(snapshot)
    }

    /// Takes job `id` for a worker: `None` if it was cancelled (or is gone).
    pub fn take(&self, id: &JobId) -> Option<Taken> {
        let mut table = self.lock();
        let table = &mut *table;
        let slot = table.jobs.get_mut(id)?;
        if slot.job.state != JobState::Queued {
            return None;
        }
        table.queued -= 1;
        slot.job.advance(JobState::Fetching);
        slot.state.send_replace(JobState::Fetching);
        let _ = self
            .inner
            .writes
            .send(Write::Save(Box::new(slot.job.clone()), None));
        Some(Taken {
            job: slot.job.clone(),
            cancel: slot.cancel.clone(),
        })
    }

    /// Moves a running job to `next` (a stage, or its end), with `update`
    /// applied to its record first. Finishing frees its key.
    pub fn advance(&self, id: &JobId, next: JobState, update: impl FnOnce(&mut Job)) {
        let finished = {
            let mut table = self.lock();
            let table = &mut *table;
            let Some(slot) = table.jobs.get_mut(id) else {
                return;
            };
            update(&mut slot.job);
            if !slot.job.advance(next) {
                tracing::warn!(job_id = %id, from = slot.job.state.as_str(), to = next.as_str(), "illegal job move ignored");
                return;
            }
            slot.state.send_replace(next);
            let _ = self
                .inner
                .writes
                .send(Write::Save(Box::new(slot.job.clone()), None));
            if next.is_finished() {
                let key = slot.job.spec.key();
                if table.by_key.get(&key) == Some(id) {
                    table.by_key.remove(&key);
                }
            }
            next.is_finished()
        };
        if finished {
            self.forget_old();
        }
    }

    /// Fails a running job.
    pub fn fail(&self, id: &JobId, class: ErrorClass, message: String, log_tail: String) {
        self.advance(id, JobState::Failed, |job| {
            job.error = Some(JobError { class, message });
            job.log_tail = log_tail;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builds::spec::Source;

    fn spec(name: &str) -> Spec {
        Spec {
            kind: "gem".into(),
            runtime: "ruby31".into(),
            source: Source::Remote {
                name: name.into(),
                version: "1.0".into(),
                platform: None,
            },
        }
    }

    fn open(dir: &std::path::Path, size: usize) -> (BuildQueue, Ready) {
        let journal = Journal::open(dir, dir).unwrap();
        let loaded = journal.load().unwrap();
        BuildQueue::open(journal, loaded, size, 100)
    }

    #[tokio::test]
    async fn identical_requests_join_and_the_queue_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, mut ready) = open(dir.path(), 2);
        let a = queue.submit(spec("a"), None, None).await.unwrap();
        let again = queue.submit(spec("a"), None, None).await.unwrap();
        assert!(again.joined);
        assert_eq!(again.job.id, a.job.id);
        assert_eq!(again.job.waiters.len(), 2);
        queue.submit(spec("b"), None, None).await.unwrap();
        assert!(matches!(
            queue.submit(spec("c"), None, None).await,
            Err(Error::Full(2))
        ));
        assert_eq!(ready.recv().await, Some(a.job.id.clone()));
        let taken = queue.take(&a.job.id).unwrap();
        assert_eq!(taken.job.state, JobState::Fetching);
        // A taken job no longer counts against the bound.
        queue.submit(spec("c"), None, None).await.unwrap();
    }

    #[tokio::test]
    async fn a_job_stops_when_its_last_waiter_cancels() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _ready) = open(dir.path(), 8);
        let first = queue.submit(spec("a"), None, None).await.unwrap();
        let second = queue.submit(spec("a"), None, None).await.unwrap();
        let id = first.job.id.clone();
        assert!(matches!(
            queue.cancel(&id, Some("wrong"), false),
            Err(Error::NotAllowed)
        ));
        let job = queue.cancel(&id, Some(&first.token), false).unwrap();
        assert_eq!(job.state, JobState::Queued, "one waiter is left");
        let job = queue.cancel(&id, Some(&second.token), false).unwrap();
        assert_eq!(job.state, JobState::Cancelled);
        assert!(queue.take(&id).is_none(), "a worker skips it");
        // The key is free again: a new request makes a new job.
        let third = queue.submit(spec("a"), None, None).await.unwrap();
        assert!(!third.joined);
        let job = queue.cancel(&third.job.id, None, true).unwrap();
        assert_eq!(
            job.state,
            JobState::Cancelled,
            "the operator cancels for all"
        );
    }

    #[tokio::test]
    async fn unfinished_jobs_are_requeued_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (running, queued, done) = {
            let (queue, _ready) = open(dir.path(), 8);
            let running = queue.submit(spec("a"), None, None).await.unwrap().job.id;
            let queued = queue.submit(spec("b"), None, None).await.unwrap().job.id;
            let done = queue.submit(spec("c"), None, None).await.unwrap().job.id;
            queue.take(&running).unwrap();
            queue.advance(&running, JobState::Building, |_| {});
            queue.take(&done).unwrap();
            queue.fail(
                &done,
                ErrorClass::Client,
                "no such gem".into(),
                String::new(),
            );
            // Let the writer catch up: a submit answers after its record.
            queue.submit(spec("d"), None, None).await.unwrap();
            (running, queued, done)
        };
        let (queue, mut ready) = open(dir.path(), 8);
        let mut again = Vec::new();
        while let Ok(id) = ready.try_recv() {
            again.push(id);
        }
        assert_eq!(again.len(), 3);
        assert!(again.contains(&running) && again.contains(&queued));
        assert_eq!(queue.get(&running).unwrap().state, JobState::Queued);
        let failed = queue.get(&done).unwrap();
        assert_eq!(failed.state, JobState::Failed);
        assert_eq!(failed.error.unwrap().message, "no such gem");
        let (page, total) = queue.list(Some(JobState::Queued), 1, 2);
        assert_eq!((page.len(), total), (2, 3));
        let (page, _) = queue.list(Some(JobState::Queued), 2, 2);
        assert_eq!(page.len(), 1);
    }
}
