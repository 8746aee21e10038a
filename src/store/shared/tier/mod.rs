//! `SharedTier`: the shared object store as the tier below the local disk
//! (`Store::add_tier`). A lookup that misses the disk reads the key's reference
//! and streams its verified body into a local fill; every upstream fill streams
//! its body up at once (`SharedWrite`) and publishes the reference once the fill
//! is complete and verified. The store never holds a fill back: a write that
//! falls behind or fails is dropped (its multipart upload aborted) and the key
//! goes to a bounded backlog (`backlog`), published from the local disk once
//! the store answers again. Not here: the S3 client (`SharedStore`), HTTP.

use super::backlog::Backlog;
use super::Error as SharedError;
use super::{BreakerState, EntryInfo, Found, SharedBody, SharedStats, SharedStore, UploadHint};
use crate::store::tier::{Tier, TierHit, TierRead, TierWrite};
use crate::store::{CacheKey, Doc, DocMeta, EntryMeta, Error, FillHead, Inner};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod write;
use write::SharedWrite;

/// Keys waiting to be published while the store is away, at most.
pub const MAX_BACKLOG: usize = 10_000;

/// The shared store as a tier. Cheap to clone; clones share the backlog and
/// the counters.
#[derive(Clone)]
pub struct SharedTier {
    inner: Arc<TierInner>,
}

struct TierInner {
    shared: SharedStore,
    /// The store this tier is below, for publishing the backlog from its disk.
    /// Weak: the store holds its tiers.
    local: Weak<Inner>,
    backlog: Backlog<CacheKey>,
    /// Bytes a fill may have on their way up before its upload is dropped.
    stream_budget: usize,
    counters: TierCounters,
}

#[derive(Default)]
struct TierCounters {
    served: AtomicU64,
    streamed: AtomicU64,
    abandoned: AtomicU64,
    backlog_published: AtomicU64,
    damaged_removed: AtomicU64,
}

/// What the status page and `/metrics` show of the shared tier.
#[derive(Clone, Debug)]
pub struct SharedStatus {
    /// `s3://bucket/prefix`.
    pub url: String,
    /// Whether the store is being used or skipped.
    pub breaker: BreakerState,
    /// The client's counters.
    pub stats: SharedStats,
    /// Lookups answered from the store (bodies streamed into local fills).
    pub served: u64,
    /// Fills published while they streamed.
    pub streamed: u64,
    /// Streaming uploads dropped (the store fell behind or failed); their keys
    /// went to the backlog.
    pub abandoned: u64,
    /// Keys waiting to be published from the local disk.
    pub backlog: u64,
    /// Keys published from the backlog.
    pub backlog_published: u64,
    /// Keys dropped from a full backlog (never published by this node).
    pub backlog_dropped: u64,
    /// Damaged references removed (the key is fetched upstream again).
    pub damaged_removed: u64,
}

impl SharedTier {
    /// `shared` as the tier below `local`'s disk. Add it with `Store::add_tier`
    /// and start its upkeep with [`SharedTier::spawn_upkeep`].
    pub fn new(shared: SharedStore, local: &crate::store::Store) -> SharedTier {
        let stream_budget = shared.inner.config.part_size.saturating_mul(4);
        SharedTier {
            inner: Arc::new(TierInner {
                shared,
                local: Arc::downgrade(&local.inner),
                backlog: Backlog::new(MAX_BACKLOG),
                stream_budget,
                counters: TierCounters::default(),
            }),
        }
    }

    /// The client.
    pub fn store(&self) -> &SharedStore {
        &self.inner.shared
    }

    /// Counters and state, now.
    pub fn status(&self) -> SharedStatus {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SharedStatus {
            url: self.inner.shared.url(),
            breaker: self.inner.shared.breaker(),
            stats: self.inner.shared.stats(),
            served: get(&c.served),
            streamed: get(&c.streamed),
            abandoned: get(&c.abandoned),
            backlog: self.inner.backlog.len() as u64,
            backlog_published: get(&c.backlog_published),
            backlog_dropped: self.inner.backlog.dropped(),
            damaged_removed: get(&c.damaged_removed),
        }
    }

    /// Starts the tier's upkeep on `tracker` until `stop` fires: at once, aborts
    /// the multipart uploads this node (`node`) left before a restart; then
    /// every `breaker_cooldown` (at most 5 s) probes a store that is skipped,
    /// publishes the backlog while the store answers, and every
    /// `stale_uploads / 4` (1 min to 1 h) aborts every node's stale uploads.
    pub fn spawn_upkeep(&self, tracker: &TaskTracker, stop: CancellationToken) {
        let tier = self.clone();
        tracker.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = tier.upkeep() => {}
            }
        });
    }

    async fn upkeep(self) {
        let shared = &self.inner.shared;
        let config = &shared.inner.config;
        let stale = config.stale_uploads;
        let pause = config.breaker_cooldown.min(Duration::from_secs(5));
        let sweep_every = (stale / 4).clamp(Duration::from_secs(60), Duration::from_secs(3600));
        match shared.abort_own_uploads().await {
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err,
                "shared store: aborting the uploads this node left failed; the stale sweep will"),
        }
        let mut next_sweep = tokio::time::Instant::now();
        loop {
            if shared.breaker() != BreakerState::Closed && shared.probe().await.is_ok() {
                tracing::info!(url = %shared.url(), "shared store answers again");
            }
            if shared.breaker() == BreakerState::Closed {
                if tokio::time::Instant::now() >= next_sweep {
                    if let Err(err) = shared.abort_stale_uploads(stale).await {
                        tracing::warn!(error = %err, "shared store: upload sweep failed");
                    }
                    next_sweep = tokio::time::Instant::now() + sweep_every;
                }
                self.drain_backlog().await;
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Publishes backlogged keys from the local disk until the backlog is
    /// empty or the store stops answering.
    pub async fn drain_backlog(&self) {
        while let Some(key) = self.inner.backlog.pop() {
            match self.publish_local(&key).await {
                Ok(true) => {
                    self.inner
                        .counters
                        .backlog_published
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(key = %key, "shared store: published from the backlog");
                }
                Ok(false) => {}
                Err(err) if err.is_unavailable() => {
                    self.inner.backlog.push_front(key);
                    return;
                }
                Err(err) => {
                    tracing::warn!(key = %key, error = %err, "shared store: cannot publish; dropped")
                }
            }
        }
    }

    /// Publishes `key`'s local entry unless the store has one. `Ok(false)`
    /// when there was nothing to do (published elsewhere, gone locally).
    async fn publish_local(&self, key: &CacheKey) -> Result<bool, SharedError> {
        let shared = &self.inner.shared;
        let canonical = key.canonical();
        if shared.lookup(&canonical).await?.is_some() {
            return Ok(false);
        }
        let Some(local) = self.inner.local.upgrade() else {
            return Ok(false);
        };
        let disk = crate::store::DiskTier::new(crate::store::Store { inner: local });
        let mut hit = match disk.lookup(key).await {
            Ok(Some(hit)) => hit,
            Ok(None) => return Ok(false),
            Err(err) => {
                tracing::warn!(key = %key, error = %err, "shared store: the local entry to publish is unreadable");
                return Ok(false);
            }
        };
        let hint = UploadHint {
            size: Some(hit.meta.size),
            sha256: Some(hit.meta.sha256.clone()),
        };
        let mut up = shared.upload(hint).await?;
        loop {
            match hit.body.next_chunk().await {
                Ok(Some(chunk)) => up.write(chunk).await?,
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(key = %key, error = %err, "shared store: the local entry to publish is damaged");
                    return Ok(false);
                }
            }
        }
        let body = up.finish().await?;
        Ok(shared
            .publish(&canonical, body, info_of(&hit.meta))
            .await?
            .won())
    }

    /// Removes the reference of `key` if it still names a body with `sha256`
    /// (S3 has no conditional delete RGW honours; a replacement that lands
    /// between the read and the delete is published again from the backlog
    /// of the node that wrote it, or fetched again).
    async fn drop_reference(&self, key: &CacheKey, sha256: Option<&str>) -> bool {
        let shared = &self.inner.shared;
        let canonical = key.canonical();
        let current = match shared.lookup(&canonical).await {
            Ok(Some(found)) => Some(found),
            Ok(None) => return false,
            Err(err) if err.is_damaged() => None,
            Err(err) => {
                tracing::warn!(key = %key, error = %err, "shared store: cannot read a damaged reference");
                return false;
            }
        };
        if let (Some(found), Some(sha256)) = (&current, sha256) {
            if found.reference.sha256 != sha256 {
                return false;
            }
        }
        match shared.remove(&canonical).await {
            Ok(()) => {
                self.inner
                    .counters
                    .damaged_removed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = %key, "shared store: damaged entry removed; the next request fetches it upstream");
                true
            }
            Err(err) => {
                tracing::warn!(key = %key, error = %err, "shared store: cannot remove a damaged reference");
                false
            }
        }
    }

    /// Remembers that `key` is to be published from the local disk.
    fn defer(&self, key: &CacheKey, why: &dyn std::fmt::Display) {
        if self.inner.backlog.push(key.clone()) {
            tracing::info!(key = %key, reason = %why,
                "shared store: not published now; will be from the local disk once it answers");
        }
    }

    async fn lookup_hit(&self, key: &CacheKey) -> Result<Option<TierHit>, Error> {
        let shared = &self.inner.shared;
        let canonical = key.canonical();
        let found = match shared.lookup(&canonical).await {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(None),
            Err(err) => return self.miss_on(key, None, err).await,
        };
        let body = match shared.body(&found).await {
            Ok(body) => body,
            Err(err) => {
                let sha = found.reference.sha256.clone();
                return self.miss_on(key, Some(&sha), err).await;
            }
        };
        self.touch_later(found.clone());
        self.inner.counters.served.fetch_add(1, Ordering::Relaxed);
        let reference = found.reference;
        let meta = EntryMeta {
            key: canonical,
            size: reference.size,
            sha256: reference.sha256,
            headers: reference.meta.headers,
            fetched_at: reference.meta.fetched_at,
            source: reference.meta.source,
            inode: 0,
            // The local commit records its own block sums as the body streams in.
            blocks: None,
            adopted: false,
            verified: Vec::new(),
        };
        Ok(Some(TierHit {
            meta,
            body: Box::new(SharedRead { body }),
        }))
    }

    /// A failed lookup: skipped (breaker open) and damaged entries are misses
    /// (a damaged one removed first); a store that failed is the caller's to log.
    async fn miss_on(
        &self,
        key: &CacheKey,
        sha256: Option<&str>,
        err: SharedError,
    ) -> Result<Option<TierHit>, Error> {
        match err {
            // Counted by the breaker; logged when it opened.
            SharedError::Unavailable { .. } => Ok(None),
            err if err.is_damaged() => {
                tracing::warn!(key = %key, error = %err, "shared store: damaged entry");
                self.drop_reference(key, sha256).await;
                Ok(None)
            }
            source => Err(Error::Shared {
                key: key.to_string(),
                source: Box::new(source),
            }),
        }
    }

    /// Records the use of `found` in the background (at most once a day per key).
    fn touch_later(&self, found: Found<EntryInfo>) {
        let shared = self.inner.shared.clone();
        self.inner.shared.spawn(async move {
            if let Err(err) = shared.touch(&found).await {
                tracing::debug!(error = %err, "shared store: recording last use failed");
            }
        });
    }
}

/// The reference metadata of a local entry.
fn info_of(meta: &EntryMeta) -> EntryInfo {
    EntryInfo {
        headers: meta.headers.clone(),
        source: meta.source.clone(),
        fetched_at: meta.fetched_at,
    }
}

impl Tier for SharedTier {
    fn name(&self) -> &'static str {
        "shared"
    }

    fn lookup<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<Option<TierHit>, Error>> {
        self.lookup_hit(key).boxed()
    }

    fn begin<'a>(
        &'a self,
        key: &'a CacheKey,
        head: &'a FillHead,
    ) -> BoxFuture<'a, Result<Box<dyn TierWrite>, Error>> {
        let write = SharedWrite::start(self.clone(), key.clone(), head);
        async move { Ok(Box::new(write) as Box<dyn TierWrite>) }.boxed()
    }

    fn remove<'a>(
        &'a self,
        key: &'a CacheKey,
        meta: &'a EntryMeta,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        async move { Ok(self.drop_reference(key, Some(&meta.sha256)).await) }.boxed()
    }

    fn read_doc<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<Doc>> {
        async move {
            match self.inner.shared.read_doc::<DocMeta>(key).await {
                Ok(Some(doc)) => Some(Doc {
                    meta: doc.meta,
                    body: doc.body,
                }),
                Ok(None) | Err(SharedError::Unavailable { .. }) => None,
                Err(err) => {
                    tracing::warn!(doc = %key, error = %err, "shared store: cannot read a document");
                    None
                }
            }
        }
        .boxed()
    }

    fn offer_doc(&self, doc: Arc<Doc>) {
        // Each node revalidates on its own and any fresh copy will do: the
        // last writer wins, in the background.
        let shared = self.inner.shared.clone();
        self.inner.shared.spawn(async move {
            let key = &doc.meta.key;
            if let Err(err) = shared.write_doc(key, &doc.meta, doc.body.clone()).await {
                tracing::debug!(doc = %key, error = %err, "shared store: document not stored");
            }
        });
    }
}

/// A shared body read into a fill: its last chunk is held until the whole
/// body matched its reference (`SharedBody`), so a damaged one ends in error.
struct SharedRead {
    body: SharedBody,
}

impl TierRead for SharedRead {
    fn next_chunk(&mut self) -> BoxFuture<'_, io::Result<Option<Bytes>>> {
        async move {
            match self.body.next().await {
                None => Ok(None),
                Some(Ok(chunk)) => Ok(Some(chunk)),
                Some(Err(err)) => {
                    let kind = match err.is_damaged() {
                        true => io::ErrorKind::InvalidData,
                        false => io::ErrorKind::Other,
                    };
                    Err(io::Error::new(kind, err))
                }
            }
        }
        .boxed()
    }
}
