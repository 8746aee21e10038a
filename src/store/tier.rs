//! Tiers: where committed entries live, one below the other. The local disk
//! is the first (`disk::DiskTier`); a shared object store can be added below
//! it (`Store::add_tier`). Modelled on pingora-cache's `Storage` with its
//! hit and miss handlers, cut to what a fill needs:
//!
//! - a lookup tries the local disk, then each lower tier in order, then the
//!   upstream: a lower tier's hit becomes a local entry through the same fill
//!   machinery (`FillPermit::fill_from_lower`: coalescing, readers that
//!   follow the growing file, the digest recorded with the entry checked
//!   before the last byte is released, no partial commit);
//! - every fill writes its body to the local disk and, at once, to each
//!   lower tier it did not come from (`TierWrite`), and commits each only
//!   once the body is complete and verified ([`Sealed`]);
//! - a `TierWrite` dropped without `commit` is aborted: nothing of it is
//!   visible, as with pingora's miss handler dropped before `finish`.
//!
//! A lower tier is never on a fill's critical path for correctness: its
//! failures drop that tier's write (logged), and it must bound its own waits
//! (timeouts, a circuit breaker), since a fill waits for its writes.

use super::{CacheKey, Committed, Doc, EntryMeta, Error, FillHead};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use std::io;
use std::sync::Arc;

/// A complete body, verified by the fill (length, and the digest an index
/// listed where there was one), as each tier's commit receives it.
#[derive(Clone, Debug)]
pub struct Sealed {
    /// The entry.
    pub key: CacheKey,
    /// Body length.
    pub len: u64,
    /// Lower-case hex sha256 of the body.
    pub sha256: String,
    /// What the upstream said about it (headers to replay, source).
    pub head: Arc<FillHead>,
}

/// A committed entry found in a tier: what was recorded with it, and its body.
pub struct TierHit {
    /// The entry's metadata (headers, size, sha256, source).
    pub meta: EntryMeta,
    /// The body from its first byte.
    pub body: Box<dyn TierRead>,
}

/// A committed body being read. The reader checks what it reads against what
/// was recorded (length, sha256): a short, long or damaged body ends with an
/// error, never cleanly.
pub trait TierRead: Send {
    /// The next chunk, `None` at a clean end.
    fn next_chunk(&mut self) -> BoxFuture<'_, io::Result<Option<Bytes>>>;
}

/// An entry being written to a tier: invisible until [`TierWrite::commit`];
/// dropped without it, aborted (nothing left visible).
pub trait TierWrite: Send {
    /// Appends `chunks`, in order.
    fn write<'a>(&'a mut self, chunks: &'a [Bytes]) -> BoxFuture<'a, Result<(), Error>>;

    /// Publishes the complete body atomically (on an object store, the
    /// create-if-absent reference is the commit point). `NotStored` when the
    /// tier declined it (no room, another writer won).
    fn commit(self: Box<Self>, sealed: Sealed) -> BoxFuture<'static, Result<Committed, Error>>;
}

/// One place committed entries live.
pub trait Tier: Send + Sync + 'static {
    /// A short name for logs and metrics (`local`, `shared`).
    fn name(&self) -> &'static str;

    /// The committed entry of `key`, if the tier has one it can vouch for
    /// (with metadata: a body it cannot check is not a hit).
    fn lookup<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<Option<TierHit>, Error>>;

    /// Starts writing an entry of `key` whose body `head` describes.
    fn begin<'a>(
        &'a self,
        key: &'a CacheKey,
        head: &'a FillHead,
    ) -> BoxFuture<'a, Result<Box<dyn TierWrite>, Error>>;

    /// Removes `key`'s entry if it is still the one `meta` describes (a
    /// refetch replaced it otherwise). True when something was removed.
    fn remove<'a>(
        &'a self,
        key: &'a CacheKey,
        meta: &'a EntryMeta,
    ) -> BoxFuture<'a, Result<bool, Error>>;

    /// The index document `key`, if the tier keeps documents and has one it
    /// can vouch for. Failures are the tier's to log and count: a document
    /// the tier cannot give is `None`.
    fn read_doc<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Option<Doc>> {
        Box::pin(async { None })
    }

    /// Offers `doc`, just stored locally, to the tier. It must not make the
    /// caller wait (a tier that stores it does so in the background).
    fn offer_doc(&self, _doc: Arc<Doc>) {}
}
