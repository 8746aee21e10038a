//! The local-disk tier: [`DiskWrite`] writes an entry's body to a temporary
//! file (which a fill's readers follow) and commits it (room claimed under
//! `--max-size`, metadata, rename); [`DiskTier`] puts a whole store behind
//! the `Tier` trait, so a store on another directory can be a tier below
//! this one, as a shared object store will be.

use super::blocks::{BlockHasher, BlockSums};
use super::budget::Reservation;
use super::durable::TempFile;
use super::entry::Opened;
use super::layout::FILE_MODE;
use super::remove::Chosen;
use super::tier::{Sealed, Tier, TierHit, TierRead, TierWrite};
use super::{BodyReader, CacheKey, Committed, Entry, EntryMeta, Error, FillHead, Inner, Store};
use crate::digest::BodyHasher;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use rustix::fs::OFlags;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;

/// A body being written to the local disk. Dropped without `commit`, its
/// temporary file is unlinked (off the runtime when there is one); readers
/// that have it open keep reading.
pub(crate) struct DiskWrite {
    inner: Arc<Inner>,
    temp: Option<TempFile>,
    file: Arc<File>,
    /// Room made under `--max-size`; a body of unknown length grows it.
    reservation: Reservation,
    sized: bool,
    written: u64,
    /// The body's block sums, taken as it is written (see `blocks`).
    blocks: Option<BlockHasher>,
    /// The temporary file's inode: the committed body's.
    inode: u64,
}

/// Where an append stopped: the error and the index of the chunk it failed in.
pub(crate) type AppendError = (io::Error, usize);

impl DiskWrite {
    /// Makes room for a body of `content_length` (when known) and creates
    /// its temporary file in the cache's `tmp/`.
    pub(crate) async fn create(
        inner: Arc<Inner>,
        content_length: Option<u64>,
    ) -> Result<DiskWrite, Error> {
        let reservation = match content_length {
            Some(len) => Reservation::reserve(inner.clone(), len).await,
            None => Reservation::none(inner.clone()),
        };
        let tmp_dir = inner.layout.tmp_dir();
        let dir = tmp_dir.clone();
        // O_NOATIME: reads of a growing file must not dirty its inode
        // (readers run on the runtime thread with RWF_NOWAIT).
        let (temp, inode) = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::MetadataExt;
            let temp = TempFile::create_with(&dir, FILE_MODE, OFlags::NOATIME)?;
            let inode = temp.file().metadata()?.ino();
            Ok((temp, inode))
        })
        .await
        .map_err(Error::join)?
        .map_err(|source| Error::Io {
            op: "create temporary file",
            path: tmp_dir,
            source,
        })?;
        Ok(DiskWrite {
            file: temp.file().clone(),
            temp: Some(temp),
            inner,
            reservation,
            sized: content_length.is_some(),
            written: 0,
            blocks: Some(BlockHasher::default()),
            inode,
        })
    }

    /// The temporary file, open read-write: readers use positional reads.
    pub(crate) fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// The body's inode (the committed entry keeps it).
    pub(crate) fn inode(&self) -> u64 {
        self.inode
    }

    /// The block sums of what was written so far.
    pub(crate) fn block_sums(&self) -> BlockSums {
        self.blocks
            .as_ref()
            .map(|b| b.sums())
            .unwrap_or_else(|| BlockHasher::default().sums())
    }

    /// Appends `chunks` in one trip to the blocking pool, hashing each into
    /// `hasher` as it is written. A body of unknown length makes room as it
    /// grows, first. On failure, the error says in which chunk it stopped
    /// (the bytes before it are in the file).
    pub(crate) async fn append(
        &mut self,
        chunks: Vec<Bytes>,
        hasher: Option<BodyHasher>,
    ) -> Result<(Option<BodyHasher>, Vec<Bytes>, Result<(), AppendError>), Error> {
        let len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        if !self.sized {
            self.reservation.grow_to(self.written + len).await;
        }
        let file = self.file.clone();
        let blocks = self.blocks.take();
        let (hasher, blocks, chunks, result) = tokio::task::spawn_blocking(move || {
            let (mut hasher, mut blocks) = (hasher, blocks);
            for (i, chunk) in chunks.iter().enumerate() {
                if let Err(err) = (&*file).write_all(chunk) {
                    return (hasher, blocks, chunks, Err((err, i)));
                }
                // Hashed from memory as written: the sums describe the bytes
                // the fill received, whatever the disk later does to them.
                if let Some(hasher) = hasher.as_mut() {
                    hasher.update(chunk);
                }
                if let Some(blocks) = blocks.as_mut() {
                    blocks.update(chunk);
                }
            }
            (hasher, blocks, chunks, Ok(()))
        })
        .await
        .map_err(Error::join)?;
        self.blocks = blocks;
        if result.is_ok() {
            self.written += len;
        }
        Ok((hasher, chunks, result))
    }

    /// Stores the complete, verified body as `key`'s entry: claims its room
    /// under `--max-size` (`NotStored` when there is none), then writes its
    /// metadata and renames it into place (see `commit`).
    pub(crate) async fn commit(
        mut self,
        key: &CacheKey,
        len: u64,
        sha256: String,
        head: &FillHead,
    ) -> Result<Committed, Error> {
        // Room before the rename, never after: the bytes are claimed against
        // `--max-size` together with the committed entries.
        let Some(claim) = self.reservation.claim(len).await else {
            tracing::info!(key = %key, bytes = len,
                "no room under --max-size (pinned entries or fills in flight); served uncached");
            return Ok(Committed::NotStored);
        };
        let inner = self.inner.clone();
        let (key, head) = (key.clone(), head.clone());
        let sums = self.block_sums();
        let temp = self
            .temp
            .take()
            .expect("a write keeps its file until commit");
        // A failed commit drops (unlinks) the temporary file on the blocking
        // pool; the claim goes once the index holds the entry (or never will).
        tokio::task::spawn_blocking(move || {
            let stored =
                super::commit::store_blocking(&inner, &key, temp, len, sha256, sums, &head);
            drop(claim);
            stored.map(|()| Committed::Stored)
        })
        .await
        .map_err(Error::join)?
    }
}

impl Drop for DiskWrite {
    fn drop(&mut self) {
        let Some(temp) = self.temp.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(move || drop(temp));
            }
            Err(_) => drop(temp),
        }
    }
}

impl TierWrite for DiskWrite {
    fn write<'a>(&'a mut self, chunks: &'a [Bytes]) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            let (_, _, written) = self.append(chunks.to_vec(), None).await?;
            written.map_err(|(source, _)| Error::Io {
                op: "write",
                path: self.inner.layout.tmp_dir(),
                source,
            })
        }
        .boxed()
    }

    fn commit(self: Box<Self>, sealed: Sealed) -> BoxFuture<'static, Result<Committed, Error>> {
        async move {
            (*self)
                .commit(&sealed.key, sealed.len, sealed.sha256, &sealed.head)
                .await
        }
        .boxed()
    }
}

/// A whole store as a tier (below another one: a store on a shared
/// filesystem, or in tests a second cache directory).
#[derive(Clone)]
pub struct DiskTier {
    store: Store,
}

impl DiskTier {
    /// `store` as a tier.
    pub fn new(store: Store) -> DiskTier {
        DiskTier { store }
    }
}

impl Tier for DiskTier {
    fn name(&self) -> &'static str {
        "disk"
    }

    fn lookup<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<Option<TierHit>, Error>> {
        async move {
            let Opened::Entry(entry) = self.store.open_entry(key).await? else {
                return Ok(None);
            };
            let Some(meta) = entry.meta.clone() else {
                return Ok(None);
            };
            self.store.touch(key);
            Ok(Some(TierHit {
                meta: (*meta).clone(),
                body: Box::new(DiskRead::new(entry, &meta)),
            }))
        }
        .boxed()
    }

    fn begin<'a>(
        &'a self,
        _key: &'a CacheKey,
        head: &'a FillHead,
    ) -> BoxFuture<'a, Result<Box<dyn TierWrite>, Error>> {
        async move {
            let write = DiskWrite::create(self.store.inner.clone(), head.content_length).await?;
            Ok(Box::new(write) as Box<dyn TierWrite>)
        }
        .boxed()
    }

    fn remove<'a>(
        &'a self,
        key: &'a CacheKey,
        meta: &'a EntryMeta,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        async move {
            let removed = self.store.remove(key, Chosen::Inode(meta.inode)).await?;
            Ok(removed > 0)
        }
        .boxed()
    }
}

/// A committed entry read from its first byte, checked against its
/// metadata's length and sha256 as it goes.
struct DiskRead {
    small: Option<Bytes>,
    reader: Option<BodyReader>,
    hasher: Sha256,
    read: u64,
    len: u64,
    sha256: String,
    done: bool,
}

impl DiskRead {
    fn new(entry: Entry, meta: &EntryMeta) -> DiskRead {
        let (small, reader) = match entry.small_body() {
            Some(small) => (Some(small.clone()), None),
            None => (None, Some(entry.reader(0, entry.len))),
        };
        DiskRead {
            small,
            reader,
            hasher: Sha256::new(),
            read: 0,
            len: meta.size,
            sha256: meta.sha256.clone(),
            done: false,
        }
    }

    fn check_end(&mut self) -> io::Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        let digest = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if self.read != self.len || digest != self.sha256 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a tier's body does not match its metadata",
            ));
        }
        Ok(None)
    }
}

impl TierRead for DiskRead {
    fn next_chunk(&mut self) -> BoxFuture<'_, io::Result<Option<Bytes>>> {
        async move {
            let chunk = match (self.small.take(), self.reader.as_mut()) {
                (Some(small), _) if !small.is_empty() => Some(small),
                (Some(_), _) => None,
                (None, Some(reader)) => reader.next_chunk().await?,
                (None, None) => None,
            };
            match chunk {
                Some(chunk) => {
                    self.read += chunk.len() as u64;
                    self.hasher.update(&chunk);
                    Ok(Some(chunk))
                }
                None => self.check_end(),
            }
        }
        .boxed()
    }
}
