//! The caching policy as it stands in memory, one concern per module: the
//! paths never cached (`no_cache`), the 404s remembered (`negative`) and the
//! digests index pages list for their files (`listed`), with the Go
//! checksum databases seen per mount (whose cached lookups list `h1:`s) and
//! the SIGHUP reload of the operator's go.sum files (`go_sums`).
//! Built once from the validated config; shared by every request behind an `Arc`.

mod go_sums;
mod listed;
mod negative;
mod no_cache;

pub use go_sums::{log_loaded as log_go_sum, GoSumReloader};
pub use listed::ListedDigests;
pub use negative::NegativeCache;
pub use no_cache::NoCache;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The policy of one running proxy.
pub struct Policy {
    /// Index documents are revalidated after this.
    pub index_ttl: Duration,
    /// A file larger than this can never be kept (`--max-size`).
    pub max_entry: Option<u64>,
    /// `--no-cache` patterns.
    pub no_cache: NoCache,
    /// 404s from every upstream, remembered for `--negative-ttl`.
    pub negative: NegativeCache,
    /// Digests listed by the index pages served so far.
    pub listed: ListedDigests,
    /// Checksum-database names asked for through each Go mount.
    sumdbs: Mutex<HashMap<String, Vec<String>>>,
}

impl Policy {
    /// From the validated config.
    pub fn new(config: &crate::config::Policy) -> Policy {
        Policy {
            index_ttl: config.index_ttl,
            max_entry: config.max_size,
            no_cache: NoCache::new(&config.no_cache),
            negative: NegativeCache::new(config.negative_ttl),
            listed: ListedDigests::default(),
            sumdbs: Mutex::default(),
        }
    }

    /// Remembers that `db` was asked for through `mount` (at most `max`
    /// names a mount; the first ones stay).
    pub fn remember_sumdb(&self, mount: &str, db: &str, max: usize) {
        let mut sumdbs = self.sumdbs.lock().expect("never poisoned");
        let names = sumdbs.entry(mount.to_string()).or_default();
        if names.len() < max && !names.iter().any(|n| n == db) {
            names.push(db.to_string());
        }
    }

    /// The checksum databases asked for through `mount` since start-up, or
    /// found in its cache at start-up.
    pub fn sumdbs(&self, mount: &str) -> Vec<String> {
        let sumdbs = self.sumdbs.lock().expect("never poisoned");
        sumdbs.get(mount).cloned().unwrap_or_default()
    }
}
