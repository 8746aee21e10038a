//! The job records on disk: one JSON file per job under `jobs/`, replaced
//! atomically (`store::durable`: temp file, fsync, rename, fsync of the
//! directory) at every state change, so a crash leaves each record either before or after a move,
//! never torn. Blocking; the queue calls it off the runtime.

use super::job::{Job, JobId};
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The records directory.
#[derive(Clone, Debug)]
pub struct Journal {
    dir: PathBuf,
    /// Where records are staged before their rename (the cache's `tmp/`).
    tmp: PathBuf,
}

impl Journal {
    /// Opens (creating, mode 0700) the directory `dir`; records are staged
    /// in `tmp` (same filesystem). Blocking.
    pub fn open(dir: &Path, tmp: &Path) -> io::Result<Journal> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            tmp: tmp.to_path_buf(),
        })
    }

    fn path(&self, id: &JobId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes `job`'s record, replacing the previous one atomically. Blocking.
    pub fn save(&self, job: &Job) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(job).map_err(io::Error::other)?;
        crate::store::durable::write_file(&self.tmp, &self.path(&job.id), &bytes, 0o600)
    }

    /// Removes a record. Blocking.
    pub fn remove(&self, id: &JobId) -> io::Result<()> {
        match fs::remove_file(self.path(id)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// Every readable record; leftover temp files are deleted, and records
    /// that do not parse are logged and skipped (kept on disk for a person
    /// to look at). Blocking.
    pub fn load(&self) -> io::Result<Vec<Job>> {
        let mut jobs = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let Some(id) = name.strip_suffix(".json").and_then(JobId::parse) else {
                continue;
            };
            match fs::read(entry.path())
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Job>(&b).map_err(|e| e.to_string()))
            {
                Ok(job) if job.id == id => jobs.push(job),
                Ok(_) => tracing::warn!(job_id = %id, "job record names another id; skipped"),
                Err(err) => {
                    tracing::warn!(job_id = %id, error = %err, "unreadable job record; skipped")
                }
            }
        }
        jobs.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builds::job::{JobState, Waiter};
    use crate::builds::spec::{Source, Spec};

    #[test]
    fn records_survive_a_reopen_and_torn_writes_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("jobs"), dir.path()).unwrap();
        let spec = Spec {
            kind: "pip".into(),
            runtime: "py311".into(),
            source: Source::Local {
                sha1: "0123456789abcdef0123456789abcdef01234567".into(),
            },
        };
        let mut job = Job::new(spec, Waiter::issue().0);
        journal.save(&job).unwrap();
        job.advance(JobState::Fetching);
        journal.save(&job).unwrap();
        // A crash between create and rename leaves a temp file; a stray file
        // and a corrupt record are skipped.
        fs::write(dir.path().join("jobs/.x.tmp"), b"{").unwrap();
        fs::write(dir.path().join("jobs/notes.txt"), b"hi").unwrap();
        let bad = JobId::random();
        fs::write(dir.path().join(format!("jobs/{bad}.json")), b"{").unwrap();
        let again = Journal::open(&dir.path().join("jobs"), dir.path()).unwrap();
        let loaded = again.load().unwrap();
        assert_eq!(loaded, vec![job.clone()]);
        assert!(!dir.path().join("jobs/.x.tmp").exists());
        again.remove(&job.id).unwrap();
        again.remove(&job.id).unwrap();
        assert!(again.load().unwrap().is_empty());
    }
}
