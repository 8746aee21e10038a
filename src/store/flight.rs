//! Single flight: at most one leader per key does a piece of shared work (a
//! fill, a document revalidation), and every request that asks for the same
//! key meanwhile follows it instead of doing the work again.
//!
//! `Flights` only pairs keys with the flights in progress. What a flight
//! publishes to its followers (a `watch` of its state) belongs to the
//! flight's own type, `V`. The leader holds a [`Lead`]: the flight leaves the
//! registry when the leader says so ([`Lead::leave`]) or drops the `Lead`, so
//! a request that comes after that starts a new flight.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

/// The flights in progress, by key. Shared behind an `Arc`: each [`Lead`]
/// keeps one, to take its flight out when it ends.
pub(crate) struct Flights<K, V> {
    map: Mutex<HashMap<K, Arc<V>>>,
}

/// What [`Flights::claim`] found.
pub(crate) enum Claim<K: Eq + Hash, V> {
    /// No flight was in progress: the caller leads a new one.
    Lead(Lead<K, V>),
    /// A flight is in progress: follow it.
    Follow(Arc<V>),
}

impl<K: Eq + Hash + Clone, V> Flights<K, V> {
    /// An empty registry.
    pub(crate) fn new() -> Arc<Flights<K, V>> {
        Arc::new(Flights {
            map: Mutex::new(HashMap::new()),
        })
    }

    fn map(&self) -> MutexGuard<'_, HashMap<K, Arc<V>>> {
        // Held for map operations only, never across an `.await`.
        self.map.lock().expect("flight map lock is never poisoned")
    }

    /// The flight in progress for `key`, if any.
    pub(crate) fn get(&self, key: &K) -> Option<Arc<V>> {
        self.map().get(key).cloned()
    }

    /// Follows the flight in progress for `key`, or, when there is none,
    /// registers `start()` as a new one led by the caller. Atomic: of many
    /// callers at once, exactly one leads.
    pub(crate) fn claim(self: &Arc<Self>, key: &K, start: impl FnOnce() -> V) -> Claim<K, V> {
        let mut map = self.map();
        if let Some(flight) = map.get(key) {
            return Claim::Follow(flight.clone());
        }
        let flight = Arc::new(start());
        map.insert(key.clone(), flight.clone());
        Claim::Lead(Lead {
            flights: self.clone(),
            key: key.clone(),
            flight,
            listed: true,
        })
    }

    /// Number of flights in progress.
    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }

    /// Every flight in progress, in no particular order.
    pub(crate) fn all(&self) -> Vec<Arc<V>> {
        self.map().values().cloned().collect()
    }
}

/// The right to lead one flight. While it is listed, requests for its key
/// follow it; dropped, it leaves the registry (the flight's own type tells
/// its followers why, before or after).
pub(crate) struct Lead<K: Eq + Hash, V> {
    flights: Arc<Flights<K, V>>,
    key: K,
    flight: Arc<V>,
    listed: bool,
}

impl<K: Eq + Hash, V> Lead<K, V> {
    /// The flight this leads.
    pub(crate) fn flight(&self) -> &Arc<V> {
        &self.flight
    }

    /// Takes the flight out of the registry (once; later calls do nothing).
    /// Requests that come after start a new flight; those already following
    /// keep their handle.
    pub(crate) fn leave(&mut self) {
        if !std::mem::take(&mut self.listed) {
            return;
        }
        let mut map = self
            .flights
            .map
            .lock()
            .expect("flight map lock is never poisoned");
        // Only our own flight: after a `leave`, another may have taken the key.
        if map
            .get(&self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            map.remove(&self.key);
        }
    }
}

impl<K: Eq + Hash, V> Drop for Lead<K, V> {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_leader_per_key_until_it_leaves() {
        let flights = Flights::<&str, u32>::new();
        let Claim::Lead(mut lead) = flights.claim(&"a", || 1) else {
            panic!("the first claim leads");
        };
        assert!(matches!(flights.claim(&"a", || 2), Claim::Follow(f) if *f == 1));
        assert!(matches!(flights.claim(&"b", || 3), Claim::Lead(_)));
        assert_eq!(flights.len(), 1, "b's lead was dropped at once");
        assert_eq!(flights.get(&"a").as_deref(), Some(&1));
        lead.leave();
        assert!(flights.get(&"a").is_none());
        let Claim::Lead(next) = flights.claim(&"a", || 4) else {
            panic!("a request after the flight left starts a new one");
        };
        // The old lead leaving again (or dropping) never removes the new flight.
        lead.leave();
        drop(lead);
        assert_eq!(flights.get(&"a").as_deref(), Some(&4));
        drop(next);
        assert_eq!(flights.len(), 0);
    }
}
