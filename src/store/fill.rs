//! Fills: one in-progress download of an entry, shared by any number of readers.
//!
//! A `FillPermit` is the exclusive right to fill a key; `FillPermit::start`
//! turns it into a `Fill` writing a temporary file in `<root>/.package-cache/tmp`.
//! Progress is published on a `watch` channel, so readers follow the growing
//! file at their own pace and a slow reader never slows the writer. A `Fill`
//! dropped without `commit` is `Aborted` and its temporary file is unlinked.

use super::disk::FILE_MODE;
use super::flight::Lead;
use super::spill::{Spill, WINDOW};
use super::{CacheKey, Error, Failure, Inner};
use crate::digest::{Algorithm, Digest};
use bytes::Bytes;
use rustix::fs::OFlags;
use sha2::{Digest as _, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{watch, Notify};

/// Progress of a fill, as seen by readers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FillState {
    /// The permit is held; the upstream has not answered yet.
    Pending,
    /// The body is being written; `written` bytes are readable.
    Streaming {
        /// Bytes written and readable so far.
        written: u64,
    },
    /// The whole body is written and verified. `committed` is false when it
    /// could not be stored (readers still get every byte).
    Complete {
        /// Final body length.
        len: u64,
        /// Whether the entry is now in the cache.
        committed: bool,
    },
    /// The disk refused the body after `on_disk` bytes: the rest is held in
    /// memory for the readers (see `spill`); it will not be stored.
    Spilling {
        /// Bytes in the temporary file.
        on_disk: u64,
        /// Bytes received and readable so far (file plus memory).
        received: u64,
    },
    /// The body failed part-way: readers must end their responses uncleanly.
    Aborted,
    /// The fetch failed before any body: readers answer as the leader did.
    Failed(Failure),
    /// The permit was given up before starting: readers look up again.
    Vacated,
    /// The answer is not cacheable (not a 200, or the store cannot take
    /// it): readers fetch for themselves, uncached.
    Uncacheable,
}

impl FillState {
    /// A short name for logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            FillState::Pending => "pending",
            FillState::Streaming { .. } => "streaming",
            FillState::Spilling { .. } => "spilling",
            FillState::Complete { .. } => "complete",
            FillState::Aborted => "aborted",
            FillState::Failed(_) => "failed",
            FillState::Vacated => "vacated",
            FillState::Uncacheable => "uncacheable",
        }
    }
}

/// What the upstream said about the body, fixed when the fill starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FillHead {
    /// End-to-end response headers to store and replay (names lower case).
    pub headers: Vec<(String, String)>,
    /// The upstream's Content-Length, when it sent one.
    pub content_length: Option<u64>,
    /// The URL the body comes from.
    pub source: String,
    /// The digest an index lists for this file. When set, readers are kept
    /// one byte short of the end until the body matches it, so a mismatch
    /// can never look like a complete download.
    pub expected: Option<Digest>,
}

/// State shared between a fill's writer and its readers.
pub(crate) struct FillShared {
    pub(crate) key: CacheKey,
    pub(crate) state: watch::Sender<FillState>,
    pub(crate) head: OnceLock<Arc<FillHead>>,
    /// The temporary file, opened read-write; readers use positional reads.
    pub(crate) file: OnceLock<Arc<File>>,
    /// Reader positions, and the bytes the disk refused (see `spill`).
    pub(crate) spill: Mutex<Spill>,
    /// Signalled when a reader frees held bytes or leaves.
    pub(crate) drained: Notify,
    /// Why the fill aborted, when its writer said so: set before `Aborted`
    /// is published, so a reader woken by it finds the cause.
    pub(crate) cause: OnceLock<Failure>,
}

impl FillShared {
    pub(crate) fn spill(&self) -> std::sync::MutexGuard<'_, Spill> {
        self.spill.lock().expect("spill lock is never poisoned")
    }

    pub(crate) fn new(key: CacheKey) -> FillShared {
        FillShared {
            key,
            state: watch::channel(FillState::Pending).0,
            head: OnceLock::new(),
            file: OnceLock::new(),
            spill: Mutex::new(Spill::default()),
            drained: Notify::new(),
            cause: OnceLock::new(),
        }
    }
}

/// The exclusive right to fill one key: the lead of its flight in the fill
/// map. Dropped unused, waiting readers are told `Vacated` and look the key
/// up again.
pub struct FillPermit {
    pub(crate) inner: Arc<Inner>,
    pub(crate) shared: Arc<FillShared>,
    /// `None` once used: started (the `Fill` holds it), failed or given up.
    pub(crate) lead: Option<Lead<CacheKey, FillShared>>,
}

impl FillPermit {
    /// The key this permit fills.
    pub fn key(&self) -> &CacheKey {
        &self.shared.key
    }

    /// A watch on this fill, for the request that holds the permit.
    pub fn watch(&self) -> super::FillWatch {
        super::FillWatch::new(self.shared.clone())
    }

    /// Creates the temporary file and publishes `head`; readers may start.
    /// On failure the permit comes back unused, so the caller decides what
    /// waiters see (dropping it tells them to look up again).
    pub async fn start(mut self, head: FillHead) -> Result<Fill, (Error, FillPermit)> {
        let tmp_path = self.inner.tmp_path("part");
        let path = tmp_path.clone();
        let opened = tokio::task::spawn_blocking(move || {
            // O_NOATIME: reads of a growing file must not dirty its inode
            // (readers run on the runtime thread with RWF_NOWAIT).
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .custom_flags(OFlags::NOATIME.bits() as i32)
                .open(&path)
        })
        .await;
        let file = match opened {
            Ok(Ok(file)) => Arc::new(file),
            Ok(Err(source)) => {
                return Err((
                    Error::Io {
                        op: "create temporary file",
                        path: tmp_path,
                        source,
                    },
                    self,
                ))
            }
            Err(err) => return Err((Error::join(err), self)),
        };
        let _ = self.shared.file.set(file.clone());
        let expected_len = head.content_length;
        let hold_back = u64::from(head.expected.is_some());
        let _ = self.shared.head.set(Arc::new(head));
        self.shared
            .state
            .send_replace(FillState::Streaming { written: 0 });
        let lead = self.lead.take().expect("an unused permit holds its lead");
        Ok(Fill {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            lead,
            file,
            tmp_path,
            hasher: Some(Sha256::new()),
            written: 0,
            expected_len,
            hold_back,
            spilled: false,
            finished: false,
        })
    }

    /// Gives up because the answer cannot be cached: waiting readers fetch
    /// for themselves, uncached.
    pub fn uncacheable(mut self) {
        self.end(FillState::Uncacheable);
    }

    /// Gives up before any body: waiting readers answer as the leader did
    /// (`failure` is its own error, carried to them as it is).
    pub fn fail(mut self, failure: Failure) {
        self.end(FillState::Failed(failure));
    }

    /// Leaves the fill map, then tells the waiters: woken, they must not
    /// find this fill again.
    fn end(&mut self, state: FillState) {
        if let Some(mut lead) = self.lead.take() {
            lead.leave();
            self.shared.state.send_replace(state);
        }
    }
}

impl Drop for FillPermit {
    fn drop(&mut self) {
        self.end(FillState::Vacated);
    }
}

/// An entry being written. `commit` verifies and stores it; dropped without
/// `commit` (or when `commit` finds it short) it counts as failed: readers see
/// `Aborted` and the temporary file is removed.
pub struct Fill {
    inner: Arc<Inner>,
    shared: Arc<FillShared>,
    /// The fill map's entry: left once nobody new should join (spilled,
    /// committed or failed).
    lead: Lead<CacheKey, FillShared>,
    file: Arc<File>,
    tmp_path: PathBuf,
    hasher: Option<Sha256>,
    written: u64,
    expected_len: Option<u64>,
    /// Bytes kept from readers until the digest is checked at commit.
    hold_back: u64,
    /// The disk refused a write: the rest goes to memory, nothing is stored.
    spilled: bool,
    finished: bool,
}

/// How a complete fill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// Stored in the cache.
    Stored,
    /// Complete and served, but not stored (the path conflicts with another
    /// entry, or the disk refused); logged by the caller.
    NotStored,
}

impl Fill {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The key being filled.
    pub fn key(&self) -> &CacheKey {
        &self.shared.key
    }

    /// Appends `chunks` in order (one trip to the blocking pool for all of
    /// them), then makes them visible to readers.
    pub async fn write(&mut self, chunks: Vec<Bytes>) -> Result<(), Error> {
        let len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        if let Some(expected) = self.expected_len {
            if self.written + len > expected {
                return Err(Error::TooLong {
                    key: self.shared.key.to_string(),
                    expected,
                });
            }
        }
        if self.spilled {
            return self.hold(chunks).await;
        }
        let file = self.file.clone();
        let mut hasher = self
            .hasher
            .take()
            .expect("hasher is present between writes");
        let (hasher, chunks, result) = tokio::task::spawn_blocking(move || {
            for (i, chunk) in chunks.iter().enumerate() {
                if let Err(err) = (&*file).write_all(chunk) {
                    return (hasher, chunks, Err((err, i)));
                }
                hasher.update(chunk);
            }
            (hasher, chunks, Ok(()))
        })
        .await
        .map_err(Error::join)?;
        self.hasher = Some(hasher);
        match result {
            Ok(()) => {
                self.written += len;
                self.shared.state.send_replace(FillState::Streaming {
                    written: self.written.saturating_sub(self.hold_back),
                });
                Ok(())
            }
            Err((err, failed_at)) => {
                // Out of space or inodes (or a failing disk): this fill is
                // not stored, but its readers still get every byte.
                tracing::warn!(key = %self.shared.key, bytes_on_disk = self.written, error = %err,
                    "the cache cannot take this file; streaming the rest uncached");
                self.spilled = true;
                self.lead.leave();
                self.shared.spill().start(self.written);
                self.hold(chunks[failed_at..].to_vec()).await
            }
        }
    }

    /// Holds `chunks` in memory for the readers of a spilled fill, waiting
    /// while the slowest reader is more than a window behind.
    async fn hold(&mut self, chunks: Vec<Bytes>) -> Result<(), Error> {
        for chunk in chunks {
            loop {
                let ahead = self.shared.spill().ahead_of_slowest();
                match ahead {
                    None => {
                        return Err(Error::NoReaders {
                            key: self.shared.key.to_string(),
                        })
                    }
                    Some(ahead) if ahead <= WINDOW => break,
                    Some(_) => self.shared.drained.notified().await,
                }
            }
            if let Some(hasher) = self.hasher.as_mut() {
                hasher.update(&chunk);
            }
            self.written += chunk.len() as u64;
            let on_disk = {
                let mut spill = self.shared.spill();
                spill.push(chunk);
                spill.on_disk().unwrap_or(0)
            };
            self.shared.state.send_replace(FillState::Spilling {
                on_disk,
                received: self.written.saturating_sub(self.hold_back),
            });
        }
        Ok(())
    }

    /// Gives the fill up because of `cause` (the writer's own error, say an
    /// upstream body that broke): readers see `Aborted`, and those that had
    /// not begun their responses can read why ([`super::FillWatch::abort_cause`]).
    pub fn abort(self, cause: Failure) {
        let _ = self.shared.cause.set(cause);
        // Dropped unfinished: `Aborted`, the temporary file removed.
    }

    /// Verifies the length, then stores the entry durably: fsync the body,
    /// write its metadata, rename the body into place, fsync the directories.
    ///
    /// `Err` means the body is incomplete (readers see `Aborted`). A complete
    /// body that cannot be stored still ends readers cleanly (`NotStored`).
    pub async fn commit(mut self) -> Result<Committed, Error> {
        if let Some(expected) = self.expected_len {
            if self.written != expected {
                let short = || Error::Short {
                    key: self.shared.key.to_string(),
                    expected,
                    got: self.written,
                };
                let _ = self.shared.cause.set(Failure::new(short()));
                return Err(short());
            }
        }
        let len = self.written;
        let sha256 = hex::encode(
            self.hasher
                .take()
                .expect("hasher is present until commit")
                .finalize(),
        );
        let head = self
            .shared
            .head
            .get()
            .cloned()
            .expect("a started fill has a head");
        if let Some(expected) = &head.expected {
            // Every body is hashed with sha256 (its metadata records it); an
            // index's other algorithms will need their own hasher here.
            let matches = match expected.algorithm() {
                Algorithm::Sha256 => expected.hex() == sha256,
            };
            if !matches {
                let digest = || Error::Digest {
                    key: self.shared.key.to_string(),
                    expected: expected.to_string(),
                    got: sha256.clone(),
                };
                let _ = self.shared.cause.set(Failure::new(digest()));
                return Err(digest());
            }
        }
        if self.spilled {
            // Complete and verified, so readers end cleanly; not stored.
            self.finished = true;
            self.lead.leave();
            self.shared.state.send_replace(FillState::Complete {
                len,
                committed: false,
            });
            let path = self.tmp_path.clone();
            tokio::task::spawn_blocking(move || fs::remove_file(path));
            return Ok(Committed::NotStored);
        }
        let inner = self.inner.clone();
        let key = self.shared.key.clone();
        let file = self.file.clone();
        let tmp_path = self.tmp_path.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let result =
                super::commit::store_blocking(&inner, &key, &file, &tmp_path, len, sha256, &head);
            if result.is_err() {
                let _ = fs::remove_file(&tmp_path);
            }
            result
        })
        .await
        .map_err(Error::join)?;
        self.finished = true;
        // Forget the fill only after the rename, so that a lookup that misses
        // the fill map is sure to find the committed file.
        self.lead.leave();
        let committed = stored.is_ok();
        self.shared
            .state
            .send_replace(FillState::Complete { len, committed });
        match stored {
            Ok(()) => Ok(Committed::Stored),
            Err(err) => {
                tracing::warn!(key = %self.shared.key, error = %err, "complete body not stored");
                Ok(Committed::NotStored)
            }
        }
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.lead.leave();
        self.shared.state.send_replace(FillState::Aborted);
        let path = self.tmp_path.clone();
        // Readers keep their open descriptor; the name goes now.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(move || fs::remove_file(path));
            }
            Err(_) => {
                let _ = fs::remove_file(path);
            }
        }
    }
}
