//! Fills: one in-progress download of an entry, shared by any number of readers.
//!
//! A `FillPermit` is the exclusive right to fill a key: the lead of the key's
//! flight in the fill map (`flight`). `FillPermit::start` (in `writer`) turns
//! it into a `Fill` writing the local disk tier's temporary file and, at
//! once, each lower tier; `FillPermit::fill_from_lower` fills from a lower
//! tier's hit instead of the upstream. Progress is published on a `watch`
//! channel (followed through `watch::FillWatch`), so readers follow the
//! growing file at their own pace and a slow reader never slows the writer.
//! A permit that fails hands its followers the leader's own error as a
//! `Failure`; a `Fill` dropped without `commit` is `Aborted` (with its cause
//! when the writer or the commit gave one) and its temporary file is unlinked.

use super::blocks::BlockSums;
use super::check::Home;
use super::flight::Lead;
use super::spill::Spill;
use super::{CacheKey, Failure, Inner};
use crate::digest::Digest;
use std::fs::File;
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
    /// Where the body went and the block sums taken while it was written:
    /// set before a stored fill publishes `Complete`, so its readers check
    /// what they read of the committed body from then on.
    pub(crate) committed: OnceLock<CommittedBody>,
}

/// A fill's body once committed (see [`FillShared::committed`]).
pub(crate) struct CommittedBody {
    pub(crate) home: Home,
    pub(crate) sums: Arc<BlockSums>,
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
            committed: OnceLock::new(),
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
