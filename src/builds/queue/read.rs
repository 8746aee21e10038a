//! The queue's read side: copies of jobs, pages of the table, counts for
//! metrics and the state channels clients follow. Nothing here changes the
//! table or writes a record.

use super::BuildQueue;
use crate::builds::job::{Job, JobId, JobState};
use tokio::sync::watch;

impl BuildQueue {
    /// Whether a submit of `key` would be accepted now (it joins a job, or
    /// the queue has room); checked before a local source is taken in.
    pub fn has_room_for(&self, key: &str) -> bool {
        let table = self.lock();
        table.by_key.contains_key(key) || table.queued < self.inner.queue_size
    }

    /// A copy of job `id`.
    pub fn get(&self, id: &JobId) -> Option<Job> {
        self.lock().jobs.get(id).map(|slot| slot.job.clone())
    }

    /// Jobs (newest first) in `state` if given: page `page` (from 1) of
    /// `per_page`, and the total that matched.
    pub fn list(&self, state: Option<JobState>, page: usize, per_page: usize) -> (Vec<Job>, usize) {
        let table = self.lock();
        let mut jobs: Vec<&Job> = table
            .jobs
            .values()
            .map(|slot| &slot.job)
            .filter(|job| state.is_none_or(|s| job.state == s))
            .collect();
        jobs.sort_by(|a, b| (b.created, &b.id).cmp(&(a.created, &a.id)));
        let total = jobs.len();
        let start = page.saturating_sub(1).saturating_mul(per_page);
        let page = jobs
            .into_iter()
            .skip(start)
            .take(per_page)
            .cloned()
            .collect();
        (page, total)
    }

    /// Number of jobs in each state, and how many wait in the queue.
    pub fn counts(&self) -> (Vec<(JobState, usize)>, usize) {
        let table = self.lock();
        let counts = JobState::ALL
            .into_iter()
            .map(|s| {
                (
                    s,
                    table
                        .jobs
                        .values()
                        .filter(|slot| slot.job.state == s)
                        .count(),
                )
            })
            .collect();
        (counts, table.queued)
    }

    /// The local sources that unfinished jobs will read.
    pub fn source_paths(&self) -> Vec<std::path::PathBuf> {
        self.lock()
            .jobs
            .values()
            .filter(|slot| !slot.job.state.is_finished())
            .filter_map(|slot| slot.job.source_path.clone())
            .collect()
    }

    /// Follows job `id`'s state.
    pub fn watch(&self, id: &JobId) -> Option<watch::Receiver<JobState>> {
        self.lock().jobs.get(id).map(|slot| slot.state.subscribe())
    }
}
