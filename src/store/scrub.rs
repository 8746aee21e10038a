//! The store's side of the background scrub (`crate::scrub` paces it): one
//! committed entry opened for a full check, through the same checks a hit
//! goes through (`entry`, `check`), without touching its recency or the hot
//! set. Damage found is quarantined and reported like a read's.

use super::entry::{open_blocking, Opened};
use super::{BodyReader, CacheKey, Error, Store};

/// One entry, opened for a scrub.
pub enum Scrub {
    /// Nothing to check: gone, a conflict, or a plain file of package-cache
    /// 0.2 not yet adopted (nothing recorded to check it against).
    Skip,
    /// Found damaged when opened (wrong length, no metadata in an adopted
    /// directory, or a small body that does not match); quarantined.
    Damaged,
    /// A small body, read whole and checked when opened: `len` bytes.
    Checked(u64),
    /// A reader over the whole body that checks every byte it reads: read
    /// it to its end (an `Err` from it is damage, quarantined already, or a
    /// read error).
    Read(BodyReader),
}

impl Store {
    /// Opens `key`'s committed body for a scrub (see [`Scrub`]).
    pub async fn scrub(&self, key: &CacheKey) -> Result<Scrub, Error> {
        let inner = self.inner.clone();
        let key = key.clone();
        let opened = tokio::task::spawn_blocking(move || open_blocking(&inner, &key, false))
            .await
            .map_err(Error::join)??;
        Ok(match opened {
            Opened::Missing | Opened::Conflict => Scrub::Skip,
            Opened::Damaged => Scrub::Damaged,
            Opened::Entry(entry) if entry.meta.is_none() => Scrub::Skip,
            Opened::Entry(entry) => match entry.small_body() {
                Some(_) => Scrub::Checked(entry.len),
                None => Scrub::Read(entry.reader(0, entry.len)),
            },
        })
    }
}
