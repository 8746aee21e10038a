//! `NegativeCache`: the 404 memory. When every upstream said 404 for a file
//! or document, its key is remembered for `--negative-ttl`, so a storm of
//! requests for a missing file costs one upstream request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most remembered 404s; past it, expired ones are dropped, then all.
const MAX_NEGATIVE: usize = 100_000;

/// Keys every upstream said 404 for, each until its expiry.
pub struct NegativeCache {
    ttl: Duration,
    until: Mutex<HashMap<String, Instant>>,
    /// Whether `until` may hold anything: hits skip its lock otherwise.
    any: AtomicBool,
}

impl NegativeCache {
    /// Remembers each 404 for `ttl`; zero remembers nothing.
    pub fn new(ttl: Duration) -> NegativeCache {
        NegativeCache {
            ttl,
            until: Mutex::new(HashMap::new()),
            any: AtomicBool::new(false),
        }
    }

    /// False while no 404 has been remembered since start-up (the common
    /// case for a hit): then a caller need not even build the key.
    pub fn may_hold(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }

    /// Whether every upstream said 404 for `key` within the TTL.
    pub fn knows_missing(&self, key: &str) -> bool {
        if !self.may_hold() {
            return false;
        }
        let mut map = self.until.lock().expect("never poisoned");
        match map.get(key) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                map.remove(key);
                false
            }
            None => false,
        }
    }

    /// Remembers that every upstream said 404 for `key`.
    pub fn remember(&self, key: &str) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut map = self.until.lock().expect("never poisoned");
        if map.len() >= MAX_NEGATIVE {
            map.retain(|_, until| *until > now);
            if map.len() >= MAX_NEGATIVE {
                map.clear();
            }
        }
        map.insert(key.to_string(), now + self.ttl);
        self.any.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_answers_expire_and_can_be_off() {
        let p = NegativeCache::new(Duration::from_secs(60));
        assert!(!p.knows_missing("k"));
        p.remember("k");
        assert!(p.knows_missing("k"));
        assert!(!p.knows_missing("other"));
        let off = NegativeCache::new(Duration::ZERO);
        off.remember("k");
        assert!(!off.knows_missing("k"));
        let short = NegativeCache::new(Duration::from_millis(1));
        short.remember("k");
        std::thread::sleep(Duration::from_millis(5));
        assert!(!short.knows_missing("k"), "expired");
    }
}
