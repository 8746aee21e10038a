//! The circuit breaker in front of the object store, and the tier's counters.
//!
//! After `failures` consecutive failed requests the breaker opens: calls are skipped at
//! once (the caller serves from disk or upstream) for `cooldown`; then one call is let
//! through as a probe. Its success closes the breaker, its failure opens it again. A
//! request the store *answered* (found, not found, already exists) is a success: only
//! transport errors, timeouts and error statuses count as failures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Whether the store is being used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests go to the store.
    Closed,
    /// The store failed repeatedly: requests are skipped until the cooldown ends.
    Open,
    /// One probe request is in flight; the others are skipped until it answers.
    Probing,
}

impl BreakerState {
    /// A short name for logs and the status page.
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::Probing => "probing",
        }
    }
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    Probing,
}

/// The breaker; shared by every clone of the store.
#[derive(Debug)]
pub(super) struct Breaker {
    state: Mutex<State>,
    failures_to_open: u32,
    cooldown: Duration,
    counters: Arc<Counters>,
}

/// The right to send one request, from [`Breaker::admit`]. Report the outcome with
/// `succeeded` or `failed`; a permit dropped without either (its request was cancelled)
/// counts for nothing, except that a cancelled probe lets the next call probe at once.
#[derive(Debug)]
pub(super) struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    done: bool,
}

impl Breaker {
    pub(super) fn new(failures_to_open: u32, cooldown: Duration, counters: Arc<Counters>) -> Self {
        Breaker {
            state: Mutex::new(State::Closed { failures: 0 }),
            failures_to_open: failures_to_open.max(1),
            cooldown,
            counters,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("breaker lock is never poisoned")
    }

    /// The state now.
    pub(super) fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::Probing => BreakerState::Probing,
        }
    }

    /// A permit to send a request, or `None` while the store is skipped.
    pub(super) fn admit(&self, now: Instant) -> Option<Permit<'_>> {
        let mut state = self.lock();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until } if now >= until => {
                *state = State::Probing;
                true
            }
            State::Open { .. } | State::Probing => {
                self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        Some(Permit {
            breaker: self,
            probe,
            done: false,
        })
    }

    /// A permit whatever the state (an explicit probe, maintenance). Its outcome counts.
    pub(super) fn force(&self) -> Permit<'_> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        Permit {
            breaker: self,
            probe: true,
            done: false,
        }
    }

    fn record(&self, probe: bool, ok: bool, now: Instant) {
        let mut state = self.lock();
        if ok {
            if !matches!(*state, State::Closed { .. }) {
                tracing::info!("shared store answers again; using it");
            }
            *state = State::Closed { failures: 0 };
            return;
        }
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        let open = match *state {
            State::Closed { failures } => {
                let failures = failures + 1;
                *state = State::Closed { failures };
                failures >= self.failures_to_open
            }
            // A late failure of a request sent before the breaker opened changes nothing.
            State::Open { .. } => probe,
            State::Probing => probe,
        };
        if open {
            if matches!(*state, State::Closed { .. }) {
                self.counters.trips.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    cooldown_ms = self.cooldown.as_millis() as u64,
                    "shared store failing; skipping it"
                );
            }
            *state = State::Open {
                until: now + self.cooldown,
            };
        }
    }
}

impl Permit<'_> {
    /// The store answered.
    pub(super) fn succeeded(mut self) {
        self.done = true;
        self.breaker.record(self.probe, true, Instant::now());
    }

    /// The request failed (transport, timeout, error status).
    pub(super) fn failed(mut self) {
        self.done = true;
        self.breaker.record(self.probe, false, Instant::now());
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.done || !self.probe {
            return;
        }
        let mut state = self.breaker.lock();
        if matches!(*state, State::Probing) {
            *state = State::Open {
                until: Instant::now(),
            };
        }
    }
}

/// Counters of the shared tier, plain atomics any clone may read; see [`SharedStats`].
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) requests: AtomicU64,
    pub(super) failures: AtomicU64,
    pub(super) skipped: AtomicU64,
    pub(super) trips: AtomicU64,
    pub(super) published: AtomicU64,
    pub(super) races_lost: AtomicU64,
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) damaged: AtomicU64,
    pub(super) bytes_up: AtomicU64,
    pub(super) bytes_down: AtomicU64,
    pub(super) uploads_aborted: AtomicU64,
    pub(super) bodies_deleted: AtomicU64,
    pub(super) touches: AtomicU64,
}

/// A snapshot of the shared tier's counters (all monotonic since start).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SharedStats {
    /// Requests sent to the store.
    pub requests: u64,
    /// Requests that failed (transport, timeout, error status).
    pub failures: u64,
    /// Calls skipped because the breaker was open.
    pub skipped: u64,
    /// Times the breaker opened.
    pub trips: u64,
    /// References this node published (it won the race).
    pub published: u64,
    /// Publications that found another node's reference already there.
    pub races_lost: u64,
    /// Lookups that found a reference.
    pub hits: u64,
    /// Lookups that found none.
    pub misses: u64,
    /// Damaged objects found (digest or size mismatch, missing body, bad reference).
    pub damaged: u64,
    /// Body bytes sent to the store.
    pub bytes_up: u64,
    /// Body bytes read from the store.
    pub bytes_down: u64,
    /// Multipart uploads aborted (dropped uploads, stale ones swept).
    pub uploads_aborted: u64,
    /// Bodies deleted (lost races, damage, unpublished uploads, gc).
    pub bodies_deleted: u64,
    /// References whose last use was recorded.
    pub touches: u64,
}

impl Counters {
    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> SharedStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SharedStats {
            requests: get(&self.requests),
            failures: get(&self.failures),
            skipped: get(&self.skipped),
            trips: get(&self.trips),
            published: get(&self.published),
            races_lost: get(&self.races_lost),
            hits: get(&self.hits),
            misses: get(&self.misses),
            damaged: get(&self.damaged),
            bytes_up: get(&self.bytes_up),
            bytes_down: get(&self.bytes_down),
            uploads_aborted: get(&self.uploads_aborted),
            bodies_deleted: get(&self.bodies_deleted),
            touches: get(&self.touches),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(3, Duration::from_secs(10), Arc::new(Counters::default()))
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker();
        let now = Instant::now();
        b.admit(now).unwrap().failed();
        b.admit(now).unwrap().failed();
        b.admit(now).unwrap().succeeded();
        b.admit(now).unwrap().failed();
        b.admit(now).unwrap().failed();
        assert_eq!(b.state(), BreakerState::Closed);
        b.admit(now).unwrap().failed();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.admit(Instant::now()).is_none());
        let stats = b.counters.snapshot();
        assert_eq!((stats.failures, stats.trips, stats.skipped), (5, 1, 1));
    }

    #[test]
    fn one_probe_after_the_cooldown_decides() {
        let b = breaker();
        let now = Instant::now();
        for _ in 0..3 {
            b.admit(now).unwrap().failed();
        }
        let later = Instant::now() + Duration::from_secs(11);
        let probe = b.admit(later).expect("the cooldown is over: a probe");
        assert_eq!(b.state(), BreakerState::Probing);
        assert!(b.admit(later).is_none(), "one probe at a time");
        probe.failed();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(
            b.admit(Instant::now()).is_none(),
            "open again for a new cooldown"
        );
        let much_later = Instant::now() + Duration::from_secs(11);
        b.admit(much_later).unwrap().succeeded();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.admit(much_later).is_some());
    }

    #[test]
    fn a_cancelled_probe_lets_the_next_call_probe() {
        let b = breaker();
        let now = Instant::now();
        for _ in 0..3 {
            b.admit(now).unwrap().failed();
        }
        let later = now + Duration::from_secs(11);
        drop(b.admit(later).unwrap());
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.admit(later).is_some(), "the next call probes");
    }

    #[test]
    fn forced_permits_close_an_open_breaker() {
        let b = breaker();
        let now = Instant::now();
        for _ in 0..3 {
            b.admit(now).unwrap().failed();
        }
        b.force().succeeded();
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
