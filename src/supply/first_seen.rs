//! When this cache first saw each release that its upstream publishes no
//! date for: kept in memory and appended to `.package-cache/policy/first-seen`
//! (one `SECS\tMOUNT\tPROJECT\tVERSION` line per release, written once,
//! fsynced by a background writer), so the age of such a release survives
//! restarts. A record lost in a crash before its write makes the release
//! younger on the next start — held back longer, never shown early — and a
//! torn last line is skipped on reading. With a shared store the fleet's
//! times are consulted and published too (`fleet`); an earlier time learnt
//! from the fleet replaces a local one (and is appended), never a later one.

use super::fleet::{Fleet, LOOKUP_BOUND};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The first-seen times. Share behind an `Arc`; [`FirstSeen::run`] writes
/// (and publishes to the fleet, when there is one).
#[derive(Debug)]
pub struct FirstSeen {
    path: PathBuf,
    state: Mutex<State>,
    wake: Notify,
    fleet: Option<Fleet>,
    /// Bumped when a time learnt from the fleet moved a local one earlier:
    /// views judged before are stale.
    adopted: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    seen: HashMap<String, i64>,
    pending: Vec<String>,
}

pub(super) fn key(mount: &str, project: &str, version: &str) -> Option<String> {
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
            fleet: None,
            adopted: AtomicU64::new(0),
        })
    }

    /// This record, sharing times with the fleet through `fleet`.
    pub fn with_fleet(mut self, fleet: Fleet) -> FirstSeen {
        self.fleet = Some(fleet);
        self
    }

    /// The fleet it shares times with, if any.
    pub(super) fn fleet(&self) -> Option<&Fleet> {
        self.fleet.as_ref()
    }

    /// Changes whenever a time learnt from the fleet moved a local one.
    pub fn adopted(&self) -> u64 {
        self.adopted.load(Ordering::Acquire)
    }

    /// The local time of a release key, if it has one.
    pub(super) fn known(&self, key: &str) -> Option<i64> {
        self.state().seen.get(key).copied()
    }

    /// Takes `secs` (the fleet's) for `key` when it is earlier than the local
    /// time or there is none; recorded like a first sighting.
    pub(super) fn adopt(&self, key: &str, secs: i64) {
        let mut state = self.state();
        let moved = match state.seen.get(key) {
            Some(&t) if t <= secs => return,
            Some(_) => true,
            None => false,
        };
        state.pending.push(format!("{secs}\t{key}\n"));
        state.seen.insert(key.to_string(), secs);
        drop(state);
        if moved {
            self.adopted.fetch_add(1, Ordering::AcqRel);
        }
        self.wake.notify_one();
    }

    /// An empty record that is never written (no policy configured).
    pub fn in_memory() -> FirstSeen {
        FirstSeen {
            path: PathBuf::new(),
            state: Mutex::default(),
            wake: Notify::new(),
            fleet: None,
            adopted: AtomicU64::new(0),
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
        state.seen.insert(key.clone(), now);
        drop(state);
        if let Some(fleet) = &self.fleet {
            fleet.queue(key, now);
        }
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

    /// Appends new records as they come until `stop` fires, then once more;
    /// with a fleet, publishes them too, retrying while the store is away.
    pub async fn run(self: std::sync::Arc<Self>, stop: CancellationToken) {
        let mut retry_in = None;
        loop {
            let retry = async {
                match retry_in {
                    Some(after) => tokio::time::sleep(after).await,
                    None => std::future::pending().await,
                }
            };
            let stopping = tokio::select! {
                _ = stop.cancelled() => true,
                _ = self.wake.notified() => false,
                _ = retry => false,
            };
            self.flush().await;
            if stopping {
                // One bounded try at what the fleet has not had yet: a time
                // left unpublished stays on this node alone.
                if let Some(fleet) = &self.fleet {
                    let once = CancellationToken::new();
                    let _ = tokio::time::timeout(LOOKUP_BOUND, fleet.publish(self.as_ref(), &once))
                        .await;
                    self.flush().await;
                }
                return;
            }
            if let Some(fleet) = &self.fleet {
                retry_in = fleet.publish(self.as_ref(), &stop).await;
                // Times the fleet had earlier were adopted: write them too.
                self.flush().await;
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

    #[tokio::test]
    async fn the_fleets_times_move_local_ones_only_earlier() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("first-seen");
        let seen = FirstSeen::open(&path).unwrap();
        let k = key("gems", "crtiny", "1.0.0").unwrap();
        seen.adopt(&k, 500);
        assert_eq!((seen.known(&k), seen.adopted()), (Some(500), 0));
        seen.adopt(&k, 700);
        assert_eq!((seen.known(&k), seen.adopted()), (Some(500), 0));
        seen.adopt(&k, 300);
        assert_eq!((seen.known(&k), seen.adopted()), (Some(300), 1));
        assert_eq!(seen.get_or_record("gems", "crtiny", "1.0.0", 900), 300);
        seen.flush().await;
        let again = FirstSeen::open(&path).unwrap();
        assert_eq!(again.known(&k), Some(300));
    }
}
