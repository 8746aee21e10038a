//! `Fill`: an entry being written by one fill task, and how a permit
//! becomes one (`FillPermit::start`, or `FillPermit::fill_from_lower` from a
//! lower tier's hit). It writes each chunk to
//! the local disk's temporary file, which its readers follow (`reader`), and
//! to each lower tier; holds bytes in memory for the readers when the disk
//! refuses them (`spill`); and at the end verifies the body (length, the
//! digest an index listed), commits it locally, then publishes it below. A
//! fill given up (`Fill::abort`, or a short or mismatched body at the commit)
//! records why, for followers that have not begun their responses.

use super::check::Home;
use super::disk::DiskWrite;
use super::fill::{CommittedBody, FillHead, FillPermit, FillShared, FillState};
use super::flight::Lead;
use super::spill::WINDOW;
use super::tier::{Sealed, Tier, TierRead, TierWrite};
use super::verify::differs;
use super::{CacheKey, Error, Failure, Inner};
use crate::digest::{BodyHasher, Digest};
use bytes::Bytes;
use std::sync::Arc;

impl FillPermit {
    /// Reserves room for the body under `--max-size` (its Content-Length;
    /// a body of unknown length reserves as it grows), creates the temporary
    /// file, starts a write to each lower tier, and publishes `head`; readers
    /// may start. On failure the permit comes back unused, so the caller
    /// decides what waiters see (dropping it tells them to look up again).
    pub async fn start(self, head: FillHead) -> Result<Fill, (Error, FillPermit)> {
        let lower = self.inner.lower_tiers();
        self.start_writing(head, &lower).await
    }

    /// Fills the key from the first lower tier that has it (a shared
    /// store's hit becomes a local entry, readers following it as they
    /// follow an upstream fetch; the digest recorded with it is checked
    /// before the last byte is released), driving the fill to its end.
    /// `Err(permit)` when no lower tier has the key (or none is set): fetch
    /// it upstream then. A lower tier's failure counts as a miss before the
    /// fill starts; after, the fill is aborted (its readers end uncleanly and
    /// look up again) and the damaged entry is removed from that tier, so the
    /// next lookup goes upstream.
    pub async fn fill_from_lower(self) -> Result<Committed, FillPermit> {
        let tiers = self.inner.lower_tiers();
        for (i, tier) in tiers.iter().enumerate() {
            let hit = match tier.lookup(&self.shared.key).await {
                Ok(Some(hit)) => hit,
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(key = %self.shared.key, tier = tier.name(), error = %err,
                        "tier lookup failed; trying the next");
                    continue;
                }
            };
            let meta = hit.meta;
            // The sha256 recorded with the entry is held against it like an
            // index's digest; an entry whose record names none is no hit.
            let Some(expected) = Digest::sha256(&meta.sha256) else {
                tracing::warn!(key = %self.shared.key, tier = tier.name(),
                    "a lower tier's entry records no valid sha256; trying the next");
                continue;
            };
            let head = FillHead {
                headers: meta.headers.clone(),
                content_length: Some(meta.size),
                source: meta.source.clone(),
                expected: Some(expected),
            };
            // Written back to every other tier, not to the one it came from.
            let others: Vec<_> = tiers
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, t)| t.clone())
                .collect();
            let mut fill = match self.start_writing(head, &others).await {
                Ok(fill) => fill,
                Err((err, permit)) => {
                    tracing::warn!(key = %permit.shared.key, error = %err,
                        "cannot start a fill from a lower tier");
                    return Err(permit);
                }
            };
            let key = fill.key().clone();
            let filled = match fill.pump_from(hit.body).await {
                Ok(()) => fill.commit().await,
                Err(err) => Err(err),
            };
            return match filled {
                Ok(committed) => Ok(committed),
                Err(err) => {
                    tracing::warn!(key = %key, tier = tier.name(), error = %err,
                        "a lower tier's entry is damaged; nothing committed, removing it there");
                    if let Err(err) = tier.remove(&key, &meta).await {
                        tracing::warn!(key = %key, tier = tier.name(), error = %err,
                            "cannot remove a damaged entry from a lower tier");
                    }
                    Ok(Committed::NotStored)
                }
            };
        }
        Err(self)
    }

    async fn start_writing(
        mut self,
        head: FillHead,
        lower: &[Arc<dyn Tier>],
    ) -> Result<Fill, (Error, FillPermit)> {
        let disk = match DiskWrite::create(self.inner.clone(), head.content_length).await {
            Ok(disk) => disk,
            Err(err) => return Err((err, self)),
        };
        let mut writes = Vec::new();
        for tier in lower {
            match tier.begin(&self.shared.key, &head).await {
                Ok(write) => writes.push(LowerWrite {
                    tier: tier.name(),
                    write,
                }),
                Err(err) => tracing::warn!(key = %self.shared.key, tier = tier.name(),
                    error = %err, "cannot write to a lower tier; the fill goes on without it"),
            }
        }
        let _ = self.shared.file.set(disk.file().clone());
        let expected_len = head.content_length;
        let hold_back = u64::from(head.expected.is_some());
        let hasher = BodyHasher::new(head.expected.as_ref());
        let _ = self.shared.head.set(Arc::new(head));
        self.shared
            .state
            .send_replace(FillState::Streaming { written: 0 });
        let lead = self.lead.take().expect("an unused permit holds its lead");
        Ok(Fill {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            lead,
            disk: Some(disk),
            lower: writes,
            hasher: Some(hasher),
            written: 0,
            expected_len,
            hold_back,
            spilled: false,
            finished: false,
        })
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
    /// The local disk's temporary file (readers follow it) and room, until
    /// the commit.
    disk: Option<DiskWrite>,
    /// The same body on its way to each lower tier.
    lower: Vec<LowerWrite>,
    hasher: Option<BodyHasher>,
    written: u64,
    expected_len: Option<u64>,
    /// Bytes kept from readers until the digest is checked at commit.
    hold_back: u64,
    /// The disk refused a write: the rest goes to memory, nothing is stored.
    spilled: bool,
    finished: bool,
}

/// A fill's write to one lower tier.
struct LowerWrite {
    tier: &'static str,
    write: Box<dyn TierWrite>,
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
            self.write_lower(&chunks).await;
            return self.hold(chunks).await;
        }
        self.write_lower(&chunks).await;
        let hasher = self.hasher.take();
        let disk = self
            .disk
            .as_mut()
            .expect("a fill keeps its disk write until commit");
        let (hasher, chunks, result) = disk.append(chunks, hasher).await?;
        self.hasher = hasher;
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

    /// Writes `chunks` to each lower tier; a tier that fails is dropped (the
    /// fill goes on without it, and its write is aborted).
    async fn write_lower(&mut self, chunks: &[Bytes]) {
        let mut i = 0;
        while i < self.lower.len() {
            match self.lower[i].write.write(chunks).await {
                Ok(()) => i += 1,
                Err(err) => {
                    let gone = self.lower.swap_remove(i);
                    tracing::warn!(key = %self.shared.key, tier = gone.tier, error = %err,
                        "a lower tier failed a write; the fill goes on without it");
                }
            }
        }
    }

    /// Drives the fill with `body` (a lower tier's) to its end.
    async fn pump_from(&mut self, mut body: Box<dyn TierRead>) -> Result<(), Error> {
        while let Some(chunk) = body.next_chunk().await.map_err(|source| Error::Io {
            op: "read from a lower tier",
            path: self.inner.layout.root().to_path_buf(),
            source,
        })? {
            self.write(vec![chunk]).await?;
        }
        Ok(())
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
        let digests = self
            .hasher
            .take()
            .expect("hasher is present until commit")
            .finish();
        let head = self
            .shared
            .head
            .get()
            .cloned()
            .expect("a started fill has a head");
        if let Some(expected) = &head.expected {
            // The file as written, for a check over the finished body; a
            // spilled body was not all kept on disk.
            let file = match (&self.disk, self.spilled) {
                (Some(disk), false) => Some(disk.file().clone()),
                _ => None,
            };
            if let Some(got) = differs(expected, &digests, file, len).await {
                let digest = || Error::Digest {
                    key: self.shared.key.to_string(),
                    expected: expected.to_string(),
                    got: got.clone(),
                };
                let _ = self.shared.cause.set(Failure::new(digest()));
                return Err(digest());
            }
        }
        let sha256 = digests.sha256.hex();
        let sealed = Sealed {
            key: self.shared.key.clone(),
            len,
            sha256,
            head,
        };
        let committed = if self.spilled {
            // Complete and verified, so readers end cleanly; not stored.
            self.complete_unstored(len)
        } else {
            self.commit_local(&sealed).await
        };
        // Published below once the local readers have their answer.
        for lower in std::mem::take(&mut self.lower) {
            match lower.write.commit(sealed.clone()).await {
                Ok(Committed::Stored) => {
                    tracing::debug!(key = %sealed.key, tier = lower.tier, "published")
                }
                Ok(Committed::NotStored) => {}
                Err(err) => tracing::warn!(key = %sealed.key, tier = lower.tier, error = %err,
                    "a lower tier failed to publish the entry"),
            }
        }
        Ok(committed)
    }

    /// Stores the sealed body on the local disk and tells the readers.
    async fn commit_local(&mut self, sealed: &Sealed) -> Committed {
        let len = sealed.len;
        let disk = self
            .disk
            .take()
            .expect("a fill keeps its disk write until commit");
        let body = CommittedBody {
            home: Home {
                inner: self.inner.clone(),
                key: sealed.key.clone(),
                inode: disk.inode(),
            },
            sums: Arc::new(disk.block_sums()),
        };
        let stored = match disk
            .commit(&sealed.key, len, sealed.sha256.clone(), &sealed.head)
            .await
        {
            Ok(stored) => stored,
            Err(err) => {
                tracing::warn!(key = %self.shared.key, error = %err, "complete body not stored");
                Committed::NotStored
            }
        };
        self.finished = true;
        // Forget the fill only after the rename, so that a lookup that misses
        // the fill map is sure to find the committed file.
        self.lead.leave();
        let committed = stored == Committed::Stored;
        if committed {
            let _ = self.shared.committed.set(body);
        }
        self.shared
            .state
            .send_replace(FillState::Complete { len, committed });
        stored
    }
}

impl Fill {
    /// Ends a complete, verified fill that is not stored: its readers end
    /// cleanly, its temporary file goes.
    fn complete_unstored(&mut self, len: u64) -> Committed {
        self.finished = true;
        self.lead.leave();
        self.shared.state.send_replace(FillState::Complete {
            len,
            committed: false,
        });
        // Its temporary file goes off the runtime (see `DiskWrite`'s drop).
        drop(self.disk.take());
        Committed::NotStored
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.lead.leave();
        self.shared.state.send_replace(FillState::Aborted);
        // Readers keep their open descriptor; the name goes now (off the
        // runtime, see `DiskWrite`'s drop). Lower tiers' writes are aborted.
        drop(self.disk.take());
    }
}
