//! `Check`: how a read of a committed body proves each byte before it goes
//! out. With block sums, a read covers whole blocks (a range that starts or
//! ends inside one reads all of it) and hands out nothing of a block until
//! the block matches. An entry of an earlier version (a sha256, no block
//! sums) read whole is hashed as it goes and its last chunk held back until
//! the digest matches; a part of one is not checked here (the scrub does).
//!
//! On a mismatch the body is quarantined (see `quarantine`) and the read
//! fails with [`Error::Damaged`]: the response ends uncleanly, never with a
//! clean wrong body.

use super::blocks::BlockSums;
use super::quarantine::{quarantine_blocking, Damage};
use super::{CacheKey, EntryMeta, Error, Inner};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::io;
use std::sync::Arc;

/// Where a body lives, to quarantine it when a read finds it damaged.
#[derive(Clone)]
pub(crate) struct Home {
    pub(crate) inner: Arc<Inner>,
    pub(crate) key: CacheKey,
    pub(crate) inode: u64,
}

impl Home {
    /// Quarantines the body (off the runtime) and gives the error that ends
    /// the read.
    pub(crate) async fn damaged(&self, damage: Damage) -> io::Error {
        let home = self.clone();
        let cause = damage.clone();
        let quarantined = tokio::task::spawn_blocking(move || {
            quarantine_blocking(&home.inner, &home.key, home.inode, &cause)
        })
        .await;
        if let Err(err) = quarantined {
            tracing::error!(key = %self.key, error = %err, "quarantine task failed");
        }
        self.error(damage)
    }

    /// The error a read of this damaged body ends with.
    pub(crate) fn error(&self, damage: Damage) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            Error::Damaged {
                key: self.key.to_string(),
                damage,
            },
        )
    }
}

/// What a read checks.
enum How {
    Blocks(Arc<BlockSums>),
    /// The whole body against its sha256, `hashed` bytes so far.
    Whole {
        sha256: String,
        hasher: Box<Sha256>,
        hashed: u64,
    },
}

/// The checking state of one reader.
pub(crate) struct Check {
    pub(crate) home: Home,
    how: How,
}

impl Check {
    /// The check for a read of `[start, end)` of a body of `len` bytes with
    /// metadata `meta`; `None` when nothing can be checked (no metadata, or
    /// a part of an entry without block sums).
    pub(crate) fn new(
        home: Home,
        meta: &EntryMeta,
        len: u64,
        start: u64,
        end: u64,
    ) -> Option<Check> {
        let how = match &meta.blocks {
            Some(sums) if sums.fits(len) => How::Blocks(Arc::new(sums.clone())),
            _ if start == 0 && end >= len && !meta.sha256.is_empty() => How::Whole {
                sha256: meta.sha256.clone(),
                hasher: Box::default(),
                hashed: 0,
            },
            _ => return None,
        };
        Some(Check { home, how })
    }

    /// The check of a fill just committed, by the sums its writer took.
    pub(crate) fn sealed(home: Home, sums: Arc<BlockSums>) -> Check {
        Check {
            home,
            how: How::Blocks(sums),
        }
    }

    /// The bytes to read for the next chunk at `pos` of a body of `len`
    /// bytes: `[from, to)`, whole blocks when checking blocks.
    pub(crate) fn span(&self, pos: u64, len: u64, chunk: u64) -> (u64, u64) {
        match &self.how {
            How::Blocks(sums) => {
                let (_, start) = sums.block_of(pos);
                (start, (start + sums.size).min(len))
            }
            How::Whole { .. } => (pos, (pos + chunk).min(len)),
        }
    }

    /// Checks `data`, read at `from` of a body of `len` bytes.
    pub(crate) fn verify(&mut self, from: u64, data: &Bytes, len: u64) -> Result<(), Damage> {
        match &mut self.how {
            How::Blocks(sums) => {
                let (index, start) = sums.block_of(from);
                if sums.matches(index, data) {
                    Ok(())
                } else {
                    Err(Damage::Block { index, start })
                }
            }
            How::Whole {
                sha256,
                hasher,
                hashed,
            } => {
                // Reads go forward in order; anything else is not a whole read.
                if from != *hashed {
                    return Ok(());
                }
                hasher.update(data);
                *hashed += data.len() as u64;
                if *hashed < len {
                    return Ok(());
                }
                let found = hex::encode(std::mem::take(hasher).finalize());
                if found == *sha256 {
                    Ok(())
                } else {
                    Err(Damage::Digest {
                        recorded: sha256.clone(),
                        found,
                    })
                }
            }
        }
    }
}
