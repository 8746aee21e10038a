//! `ListedDigests`: what the index pages served so far say each file they
//! link must hash to, by the file's store key, so that its download is
//! checked before it is committed. Filled from each document as it is
//! fetched (and from a stored one the first time it is served after a
//! start); bounded, and forgotten wholesale past the bound.

use crate::digest::Digest;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// Most remembered file digests (a PyPI page lists up to a few thousand).
const MAX_LISTED: usize = 2_000_000;

/// File digests by store key (`CacheKey::canonical`).
#[derive(Default)]
pub struct ListedDigests {
    digests: Mutex<HashMap<String, Digest>>,
    /// The documents whose digests are in `digests`.
    registered: Mutex<HashSet<String>>,
}

impl ListedDigests {
    /// Records the digests the document `doc_key` lists (`listed`, by file
    /// key). `fresh`: the document was just fetched (always recorded);
    /// otherwise only the first time it is served since start-up.
    pub fn register(&self, doc_key: &str, listed: &[(String, Digest)], fresh: bool) {
        {
            let mut seen = self.registered.lock().expect("never poisoned");
            // Every hit of a page comes here: no allocation once it is known.
            if seen.contains(doc_key) && !fresh {
                return;
            }
            seen.insert(doc_key.to_string());
        }
        let mut map = self.digests.lock().expect("never poisoned");
        if map.len() + listed.len() > MAX_LISTED {
            map.clear();
            self.registered.lock().expect("never poisoned").clear();
        }
        for (key, digest) in listed {
            map.insert(key.clone(), digest.clone());
        }
    }

    /// The digest an index listed for the file `key` (`CacheKey::canonical`).
    pub fn get(&self, key: &str) -> Option<Digest> {
        self.digests
            .lock()
            .expect("never poisoned")
            .get(key)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetched_page_replaces_what_a_served_one_said() {
        let (a, b) = (
            Digest::sha256(&"a".repeat(64)).unwrap(),
            Digest::sha256(&"b".repeat(64)).unwrap(),
        );
        let listed = ListedDigests::default();
        listed.register("page", &[("f".into(), a.clone())], false);
        assert_eq!(listed.get("f"), Some(a.clone()));
        // Served again from the store: already known, nothing to do.
        listed.register("page", &[("f".into(), b.clone())], false);
        assert_eq!(listed.get("f"), Some(a));
        listed.register("page", &[("f".into(), b.clone())], true);
        assert_eq!(listed.get("f"), Some(b));
        assert_eq!(listed.get("g"), None);
    }
}
