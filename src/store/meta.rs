//! `EntryMeta`: what is recorded beside each committed body (headers, size,
//! sha256, fetch time) and how it is bound to that body on disk.
//!
//! A metadata file names the inode of the body it describes. The body's rename
//! is the commit point: a crash between writing the metadata and renaming the
//! body leaves metadata whose inode matches nothing, which is ignored. The
//! binding is the inode alone: a body whose length differs from the one
//! recorded for its inode is damaged (truncated or extended), never a plain
//! file of an earlier version.

use super::blocks::BlockSums;
use super::key::CacheKey;
use super::layout::Layout;
use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Largest metadata file read back (guards against a damaged store). Block
/// sums take 16 bytes per 256 KiB: 8 MiB holds those of a 128 GiB body.
const MAX_META_LEN: u64 = 8 << 20;

/// Metadata of one committed entry. Serialized as JSON.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EntryMeta {
    /// The name the file is stored under: `CacheKey::canonical()` of the
    /// entry (or, when an earlier version wrote it, `legacy_canonical()`),
    /// to detect hash collisions and for scans.
    pub key: String,
    /// Body length in bytes.
    pub size: u64,
    /// Lower-case hex sha256 of the body.
    pub sha256: String,
    /// End-to-end response headers as the upstream sent them (names lower case).
    pub headers: Vec<(String, String)>,
    /// Seconds since the Unix epoch when the fetch completed.
    pub fetched_at: u64,
    /// The URL the body was fetched from.
    pub source: String,
    /// Inode number of the body file this metadata belongs to.
    pub inode: u64,
    /// Checksums of each block of the body, taken while it was written;
    /// absent in entries committed by earlier versions (those are checked
    /// against `sha256` when read whole, and by the scrub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<BlockSums>,
    /// A plain file of package-cache 0.2 hashed into metadata when its
    /// directory was adopted (see `adopt`): it has no upstream headers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
    /// Digests an index listed that the body is known to have, beside its
    /// sha256, which decides only sha256 and a go.mod's `h1:`: checked at
    /// the commit (the fill's `expected`) or over the stored body on a later
    /// hit (`Store::confirm`), so that a hit is checked once, not each time.
    /// Absent in entries of earlier versions and in bodies cached before
    /// any index listed them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verified: Vec<Digest>,
}

impl EntryMeta {
    /// Bytes this metadata occupies in memory, roughly (for budgets).
    pub fn approx_size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 48)
            .sum();
        let blocks = self.blocks.as_ref().map_or(0, |b| 8 * b.sums.len() + 32);
        let verified = self.verified.len() * std::mem::size_of::<Digest>();
        128 + self.key.len() + self.sha256.len() + self.source.len() + headers + blocks + verified
    }

    /// Reads a metadata file; `None` when it is missing or unreadable as
    /// metadata. Blocking.
    pub fn read(path: &Path) -> Option<EntryMeta> {
        let file = File::open(path).ok()?;
        let mut buf = Vec::new();
        file.take(MAX_META_LEN).read_to_end(&mut buf).ok()?;
        serde_json::from_slice(&buf).ok()
    }

    /// The metadata of `key` bound to the body with `inode`, looked up under
    /// the key's canonical name, then under the name earlier versions gave it
    /// (see `CacheKey::legacy_canonical`). Its `size` is what the body must
    /// measure: the caller compares it (a mismatch is damage). Blocking.
    pub fn read_bound(layout: &Layout, key: &CacheKey, inode: u64) -> Option<EntryMeta> {
        let bound = |name: String| {
            EntryMeta::read(&layout.meta_file_named(&name))
                .filter(|m| m.inode == inode && m.key == name)
        };
        bound(key.canonical()).or_else(|| key.legacy_canonical().and_then(bound))
    }

    /// The first value of header `name` (lower case), if recorded.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_without_verified_digests_still_reads() {
        let old = r#"{"key":"k","size":3,"sha256":"ab","headers":[],"fetched_at":1,"source":"s","inode":7}"#;
        let meta: EntryMeta = serde_json::from_str(old).expect("old metadata reads");
        assert!(meta.verified.is_empty());
        assert!(!serde_json::to_string(&meta).unwrap().contains("verified"));
        let with = EntryMeta {
            verified: vec![Digest::Sha512([7; 64]), Digest::GoH1([1; 32])],
            ..meta
        };
        let json = serde_json::to_string(&with).unwrap();
        assert_eq!(serde_json::from_str::<EntryMeta>(&json).unwrap(), with);
    }
}
