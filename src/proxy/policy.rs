//! Per-process memory of the caching policy: which 404s are remembered, which
//! paths are never cached, and the sha256 that index pages list for the
//! files they link.

use crate::config::Policy;
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most remembered 404s; past it, expired ones are dropped, then all.
const MAX_NEGATIVE: usize = 100_000;
/// Most remembered file digests (a PyPI page lists up to a few thousand).
const MAX_HASHES: usize = 2_000_000;

/// Shared policy state. Cheap to share behind an `Arc`.
pub struct PolicyState {
    /// Index documents are revalidated after this.
    pub index_ttl: Duration,
    /// A file larger than this can never be kept (`--max-size`).
    pub max_entry: Option<u64>,
    negative_ttl: Duration,
    no_cache: GlobSet,
    negative: Mutex<HashMap<String, Instant>>,
    /// Whether `negative` may hold anything: hits skip its lock otherwise.
    any_negative: std::sync::atomic::AtomicBool,
    hashes: Mutex<HashMap<String, String>>,
    registered: Mutex<HashSet<String>>,
}

impl PolicyState {
    /// From the validated config (globs were checked there; a bad one is skipped).
    pub fn new(policy: &Policy) -> PolicyState {
        let mut builder = GlobSetBuilder::new();
        for pattern in &policy.no_cache {
            match Glob::new(pattern) {
                Ok(glob) => {
                    builder.add(glob);
                }
                Err(err) => tracing::error!(pattern, error = %err, "ignoring --no-cache pattern"),
            }
        }
        PolicyState {
            index_ttl: policy.index_ttl,
            max_entry: policy.max_size,
            negative_ttl: policy.negative_ttl,
            no_cache: builder.build().unwrap_or_else(|_| GlobSet::empty()),
            negative: Mutex::new(HashMap::new()),
            any_negative: std::sync::atomic::AtomicBool::new(false),
            hashes: Mutex::new(HashMap::new()),
            registered: Mutex::new(HashSet::new()),
        }
    }

    /// Whether the operator said never to cache this (decoded) request path.
    pub fn never_cache(&self, path: &str) -> bool {
        if self.no_cache.is_empty() {
            return false;
        }
        let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
        self.no_cache.is_match(decoded.as_ref())
    }

    /// Whether every upstream said 404 for `key` within the negative TTL.
    pub fn known_missing(&self, key: &str) -> bool {
        if !self.may_know_missing() {
            return false;
        }
        let mut map = self.negative.lock().expect("never poisoned");
        match map.get(key) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                map.remove(key);
                false
            }
            None => false,
        }
    }

    /// False when no 404 has been remembered since start-up (the common
    /// case for a hit): then no key needs looking up.
    pub fn may_know_missing(&self) -> bool {
        self.any_negative.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Remembers that every upstream said 404 for `key`.
    pub fn remember_missing(&self, key: &str) {
        if self.negative_ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut map = self.negative.lock().expect("never poisoned");
        if map.len() >= MAX_NEGATIVE {
            map.retain(|_, until| *until > now);
            if map.len() >= MAX_NEGATIVE {
                map.clear();
            }
        }
        map.insert(key.to_string(), now + self.negative_ttl);
        self.any_negative
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records the digests a document lists. `fresh`: the document was just
    /// fetched (always recorded); otherwise only the first time it is served
    /// since start-up.
    pub fn register_hashes(&self, doc_key: &str, hashes: &[(String, String)], fresh: bool) {
        {
            let mut seen = self.registered.lock().expect("never poisoned");
            // Every hit of a page comes here: no allocation once it is known.
            if seen.contains(doc_key) && !fresh {
                return;
            }
            seen.insert(doc_key.to_string());
        }
        let mut map = self.hashes.lock().expect("never poisoned");
        if map.len() + hashes.len() > MAX_HASHES {
            map.clear();
            self.registered.lock().expect("never poisoned").clear();
        }
        for (key, sha) in hashes {
            map.insert(key.clone(), sha.clone());
        }
    }

    /// The digest an index listed for the entry `key` (`CacheKey::canonical`).
    pub fn listed_hash(&self, key: &str) -> Option<String> {
        self.hashes
            .lock()
            .expect("never poisoned")
            .get(key)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(negative: u64, globs: &[&str]) -> PolicyState {
        PolicyState::new(&Policy {
            index_ttl: Duration::from_secs(1),
            negative_ttl: Duration::from_secs(negative),
            no_cache: globs.iter().map(|s| s.to_string()).collect(),
            max_size: None,
            pinned: Vec::new(),
        })
    }

    #[test]
    fn negative_answers_expire_and_can_be_off() {
        let p = policy(60, &[]);
        assert!(!p.known_missing("k"));
        p.remember_missing("k");
        assert!(p.known_missing("k"));
        let off = policy(0, &[]);
        off.remember_missing("k");
        assert!(!off.known_missing("k"));
    }

    #[test]
    fn globs_match_decoded_paths() {
        let p = policy(0, &["/pypi/simple/private-*/**", "**/*.iso"]);
        assert!(p.never_cache("/pypi/simple/private-x/index"));
        assert!(p.never_cache("/a/b%20c.iso"));
        assert!(!p.never_cache("/pypi/simple/six/"));
    }
}
