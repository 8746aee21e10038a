//! Fills: one in-progress download of an entry, shared by any number of readers.
//!
//! A `FillPermit` is the exclusive right to fill a key; `FillPermit::start`
//! turns it into a `Fill` writing a `durable::TempFile` in the cache's `tmp/`.
//! Progress is published on a `watch` channel, so readers follow the growing
//! file at their own pace and a slow reader never slows the writer. A `Fill`
//! dropped without `commit` is `Aborted` and its temporary file is unlinked.

use super::budget::Reservation;
use super::durable::TempFile;
use super::layout::FILE_MODE;
use super::spill::{Spill, WINDOW};
use super::{CacheKey, Error, Inner};
use bytes::Bytes;
use rustix::fs::OFlags;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Write;
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
    /// The fetch failed before any body: readers answer with this.
    Failed(Arc<FillFailure>),
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

/// Why a fill never started, as the leader answered its own client.
#[derive(Debug, PartialEq, Eq)]
pub struct FillFailure {
    /// HTTP status the leader answered with.
    pub status: u16,
    /// Short text for the response body.
    pub message: String,
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
    /// The sha256 an index lists for this file (lower-case hex). When set,
    /// readers are kept one byte short of the end until the body matches it,
    /// so a mismatch can never look like a complete download.
    pub expected_sha256: Option<String>,
}

/// A fill in progress as the status page shows it: a copy, stale at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveFill {
    /// The entry's key as logs show it (`/path`, `host/path`, `/mount/path`).
    pub key: String,
    /// Bytes written so far.
    pub written: u64,
    /// The upstream's Content-Length, once it answered with one.
    pub content_length: Option<u64>,
    /// Responses following the fill now: each live reader (and each request
    /// still waiting for the upstream's answer) holds one receiver.
    pub readers: usize,
    /// The fill's state (`FillState::as_str`).
    pub state: &'static str,
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
}

impl FillShared {
    pub(crate) fn spill(&self) -> std::sync::MutexGuard<'_, Spill> {
        self.spill.lock().expect("spill lock is never poisoned")
    }
}

impl FillShared {
    pub(crate) fn progress(&self) -> ActiveFill {
        let state = self.state.borrow().clone();
        let written = match state {
            FillState::Streaming { written } => written,
            FillState::Complete { len, .. } => len,
            _ => 0,
        };
        ActiveFill {
            key: self.key.to_string(),
            written,
            content_length: self.head.get().and_then(|h| h.content_length),
            readers: self.state.receiver_count(),
            state: state.as_str(),
        }
    }

    pub(crate) fn new(key: CacheKey) -> Arc<FillShared> {
        Arc::new(FillShared {
            key,
            state: watch::channel(FillState::Pending).0,
            head: OnceLock::new(),
            file: OnceLock::new(),
            spill: Mutex::new(Spill::default()),
            drained: Notify::new(),
        })
    }
}

/// The exclusive right to fill one key. Dropped unused, waiting readers are
/// told `Vacated` and look the key up again.
pub struct FillPermit {
    pub(crate) inner: Arc<Inner>,
    pub(crate) shared: Arc<FillShared>,
    pub(crate) done: bool,
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

    /// Reserves room for the body under `--max-size` (its Content-Length;
    /// a body of unknown length reserves as it grows), creates the temporary
    /// file and publishes `head`; readers may start. On failure the permit
    /// comes back unused, so the caller decides what waiters see (dropping it
    /// tells them to look up again).
    pub async fn start(mut self, head: FillHead) -> Result<Fill, (Error, FillPermit)> {
        let reservation = match head.content_length {
            Some(len) => Reservation::reserve(self.inner.clone(), len).await,
            None => Reservation::none(self.inner.clone()),
        };
        let tmp_dir = self.inner.layout.tmp_dir();
        let dir = tmp_dir.clone();
        // O_NOATIME: reads of a growing file must not dirty its inode
        // (readers run on the runtime thread with RWF_NOWAIT).
        let opened = tokio::task::spawn_blocking(move || {
            TempFile::create_with(&dir, FILE_MODE, OFlags::NOATIME)
        })
        .await;
        let temp = match opened {
            Ok(Ok(temp)) => temp,
            Ok(Err(source)) => {
                return Err((
                    Error::Io {
                        op: "create temporary file",
                        path: tmp_dir,
                        source,
                    },
                    self,
                ))
            }
            Err(err) => return Err((Error::join(err), self)),
        };
        let file = temp.file().clone();
        let _ = self.shared.file.set(file.clone());
        let expected_len = head.content_length;
        let hold_back = u64::from(head.expected_sha256.is_some());
        let _ = self.shared.head.set(Arc::new(head));
        self.shared
            .state
            .send_replace(FillState::Streaming { written: 0 });
        self.done = true;
        Ok(Fill {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            file,
            temp: Some(temp),
            reservation,
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
        self.done = true;
        self.inner.forget_fill(&self.shared);
        self.shared.state.send_replace(FillState::Uncacheable);
    }

    /// Gives up before any body: waiting readers answer `status` with `message`.
    pub fn fail(mut self, status: u16, message: String) {
        self.done = true;
        self.inner.forget_fill(&self.shared);
        self.shared
            .state
            .send_replace(FillState::Failed(Arc::new(FillFailure { status, message })));
    }
}

impl Drop for FillPermit {
    fn drop(&mut self) {
        if !self.done {
            self.inner.forget_fill(&self.shared);
            self.shared.state.send_replace(FillState::Vacated);
        }
    }
}

/// An entry being written. `commit` verifies and stores it; dropped without
/// `commit` (or when `commit` finds it short) it counts as failed: readers see
/// `Aborted` and the temporary file is removed.
pub struct Fill {
    inner: Arc<Inner>,
    shared: Arc<FillShared>,
    file: Arc<File>,
    /// The temporary file, until it is committed or dropped.
    temp: Option<TempFile>,
    /// Room promised under `--max-size`; given back when the fill ends.
    reservation: Reservation,
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
    /// entry, the disk refused, or `--max-size` has no room for it).
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
        if self.expected_len.is_none() {
            self.reservation.grow_to(self.written + len).await;
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
                self.inner.forget_fill(&self.shared);
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

    /// Verifies the length, then stores the entry durably: fsync the body,
    /// write its metadata, rename the body into place, fsync the directories.
    ///
    /// `Err` means the body is incomplete (readers see `Aborted`). A complete
    /// body that cannot be stored still ends readers cleanly (`NotStored`).
    pub async fn commit(mut self) -> Result<Committed, Error> {
        if let Some(expected) = self.expected_len {
            if self.written != expected {
                return Err(Error::Short {
                    key: self.shared.key.to_string(),
                    expected,
                    got: self.written,
                });
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
        if let Some(expected) = &head.expected_sha256 {
            if *expected != sha256 {
                return Err(Error::Digest {
                    key: self.shared.key.to_string(),
                    expected: expected.clone(),
                    got: sha256,
                });
            }
        }
        if self.spilled {
            // Complete and verified, so readers end cleanly; not stored.
            return Ok(self.complete_unstored(len));
        }
        // Room before the rename, never after: the bytes are claimed against
        // `--max-size` together with the committed entries.
        let Some(claim) = self.reservation.claim(len).await else {
            tracing::info!(key = %self.shared.key, bytes = len,
                "no room under --max-size (pinned entries or fills in flight); served uncached");
            return Ok(self.complete_unstored(len));
        };
        let inner = self.inner.clone();
        let key = self.shared.key.clone();
        let temp = self
            .temp
            .take()
            .expect("a fill keeps its file until commit");
        // A failed commit drops (unlinks) the temporary file on the blocking
        // pool; the claim goes once the index holds the entry (or never will).
        let stored = tokio::task::spawn_blocking(move || {
            let stored = super::commit::store_blocking(&inner, &key, temp, len, sha256, &head);
            drop(claim);
            stored
        })
        .await
        .map_err(Error::join)?;
        self.finished = true;
        // Forget the fill only after the rename, so that a lookup that misses
        // the fill map is sure to find the committed file.
        self.inner.forget_fill(&self.shared);
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

impl Fill {
    /// Ends a complete, verified fill that is not stored: its readers end
    /// cleanly, its temporary file goes.
    fn complete_unstored(&mut self, len: u64) -> Committed {
        self.finished = true;
        self.inner.forget_fill(&self.shared);
        self.shared.state.send_replace(FillState::Complete {
            len,
            committed: false,
        });
        let temp = self.temp.take();
        tokio::task::spawn_blocking(move || drop(temp));
        Committed::NotStored
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.inner.forget_fill(&self.shared);
        self.shared.state.send_replace(FillState::Aborted);
        let temp = self.temp.take();
        // Readers keep their open descriptor; the name goes now.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(move || drop(temp));
            }
            Err(_) => drop(temp),
        }
    }
}
