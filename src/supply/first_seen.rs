//! When this cache first saw each release that its upstream publishes no
//! date for: kept in memory and appended to `.package-cache/policy/first-seen`
//! (one `SECS\tMOUNT\tPROJECT\tVERSION` line per release, written once,
//! fsynced by a background writer), so the age of such a release survives
//! restarts. A record lost in a crash before its write makes the release
//! younger on the next start — held back longer, never shown early — and a
//! torn last line is skipped on reading.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The first-seen times. Share behind an `Arc`; [`FirstSeen::run`] writes.
#[derive(Debug)]
pub struct FirstSeen {
    path: PathBuf,
    state: Mutex<State>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct State {
    seen: HashMap<String, i64>,
    pending: Vec<String>,
}

fn key(mount: &str, project: &str, version: &str) -> Option<String> {
    let clean = |s: &str| !s.is_empty() && !s.contains(['\t', '\n', '\r']);
    (clean(mount) && clean(project) && clean(version))
        .then(|| format!("{mount}\t{project}\t{version}"))
}

impl FirstSeen {
    /// Loads `path` (blocking; a missing file is an empty record).
    pub fn open(path: &Path) -> std::io::Result<FirstSeen> {
        let mut seen = HashMap::new();
        let mut pending = Vec::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                if !text.is_empty() && !text.ends_with('\n') {
                    // End the torn line, so the next record starts a line of its own.
                    pending.push("\n".to_string());
                }
                for line in text.lines() {
                    let Some((secs, key)) = line.split_once('\t') else {
                        continue;
                    };
                    let (Ok(secs), 2) = (secs.parse::<i64>(), key.matches('\t').count()) else {
                        continue;
                    };
                    seen.entry(key.to_string())
                        .and_modify(|t: &mut i64| *t = (*t).min(secs))
                        .or_insert(secs);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(FirstSeen {
            path: path.to_path_buf(),
            state: Mutex::new(State { seen, pending }),
            wake: Notify::new(),
        })
    }

    /// An empty record that is never written (no policy configured).
    pub fn in_memory() -> FirstSeen {
        FirstSeen {
            path: PathBuf::new(),
            state: Mutex::default(),
            wake: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Only whole-value updates happen under the lock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When `version` of `project` on `mount` was first seen; `now` (and
    /// recorded) if never before.
    pub fn get_or_record(&self, mount: &str, project: &str, version: &str, now: i64) -> i64 {
        let Some(key) = key(mount, project, version) else {
            return now;
        };
        let mut state = self.state();
        if let Some(&t) = state.seen.get(&key) {
            return t;
        }
        state.pending.push(format!("{now}\t{key}\n"));
        state.seen.insert(key, now);
        drop(state);
        self.wake.notify_one();
        now
    }

    /// How many releases are recorded.
    pub fn len(&self) -> usize {
        self.state().seen.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends new records as they come until `stop` fires, then once more.
    pub async fn run(self: std::sync::Arc<Self>, stop: CancellationToken) {
        loop {
            let stopping = tokio::select! {
                _ = stop.cancelled() => true,
                _ = self.wake.notified() => false,
            };
            self.flush().await;
            if stopping {
                return;
            }
        }
    }

    /// Writes what is pending (fsynced) on a blocking thread.
    pub async fn flush(&self) {
        let lines = std::mem::take(&mut self.state().pending);
        if lines.is_empty() {
            return;
        }
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || append(&path, &lines)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::error!(path = %self.path.display(), error = %err, "cannot record first-seen times; they hold until a restart");
            }
            Err(err) => tracing::error!(error = %err, "first-seen writer failed"),
        }
    }
}

fn append(path: &Path, lines: &[String]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(lines.concat().as_bytes())?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn first_seen_times_survive_a_restart_and_never_move() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy/first-seen");
        let seen = Arc::new(FirstSeen::open(&path).unwrap());
        assert_eq!(seen.get_or_record("gems", "crtiny", "1.0.0", 100), 100);
        assert_eq!(seen.get_or_record("gems", "crtiny", "1.0.0", 200), 100);
        assert_eq!(seen.get_or_record("gems", "bad\tname", "1", 300), 300);
        seen.flush().await;
        // A torn line from a crash mid-append is skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"150\tgems\tcrdep")
            .unwrap();
        let again = FirstSeen::open(&path).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again.get_or_record("gems", "crtiny", "1.0.0", 999), 100);
        assert_eq!(again.get_or_record("gems", "crdep", "0.1.0", 999), 999);
        again.flush().await;
        let third = FirstSeen::open(&path).unwrap();
        assert_eq!(third.get_or_record("gems", "crdep", "0.1.0", 5000), 999);
    }
}
