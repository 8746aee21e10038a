//! The upload quota: how many bytes of uploaded sources each client may have
//! waiting for their build requests. Bytes are reserved before they are
//! written (the whole declared length at once, or chunk by chunk), under one
//! lock, so concurrent uploads of one client never add up past the limit, and
//! one client at its limit never holds up another. Owns the counts only: who
//! a client is comes from the API, and the bytes themselves from the inbox.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Who an upload is counted against: the local user that owns the client's
/// socket when the API can tell (a loopback connection), else the client's
/// address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClientId {
    /// A local user.
    Uid(u32),
    /// A client known by its address only.
    Addr(IpAddr),
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientId::Uid(uid) => write!(f, "uid {uid}"),
            ClientId::Addr(addr) => write!(f, "client {addr}"),
        }
    }
}

/// A reservation that would take a client past its limit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{client} has {held} bytes of uploads waiting or arriving; {more} more would pass the quota of {limit}")]
pub struct OverQuota {
    /// The client.
    pub client: ClientId,
    /// Bytes it holds already.
    pub held: u64,
    /// Bytes it asked for.
    pub more: u64,
    /// The limit.
    pub limit: u64,
}

/// Bytes held per client, against one limit. Shared (`Arc`) by every upload.
#[derive(Debug)]
pub struct Ledger {
    limit: u64,
    held: Mutex<HashMap<ClientId, u64>>,
}

impl Ledger {
    /// A ledger where each client may hold `limit` bytes.
    pub fn new(limit: u64) -> Arc<Ledger> {
        Arc::new(Ledger {
            limit,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// The limit per client.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes `client` holds now.
    pub fn held(&self, client: &ClientId) -> u64 {
        self.lock().get(client).copied().unwrap_or(0)
    }

    /// Reserves `bytes` for `client`, all or nothing. The reservation holds
    /// them until it is dropped.
    pub fn reserve(
        self: &Arc<Ledger>,
        client: ClientId,
        bytes: u64,
    ) -> Result<Reservation, OverQuota> {
        let mut reservation = Reservation {
            ledger: Arc::clone(self),
            client,
            bytes: 0,
        };
        reservation.grow(bytes)?;
        Ok(reservation)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientId, u64>> {
        // Counts stay consistent whatever panicked while holding the lock:
        // every change is one insert or remove.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Bytes held for one upload; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    ledger: Arc<Ledger>,
    client: ClientId,
    bytes: u64,
}

impl Reservation {
    /// Holds `more` bytes too, or none of them if that would pass the limit.
    pub fn grow(&mut self, more: u64) -> Result<(), OverQuota> {
        if more == 0 {
            return Ok(());
        }
        let mut held = self.ledger.lock();
        let now = held.get(&self.client).copied().unwrap_or(0);
        match now
            .checked_add(more)
            .filter(|&total| total <= self.ledger.limit)
        {
            Some(total) => {
                held.insert(self.client.clone(), total);
                self.bytes += more;
                Ok(())
            }
            None => Err(OverQuota {
                client: self.client.clone(),
                held: now,
                more,
                limit: self.ledger.limit,
            }),
        }
    }

    /// Gives back what is held beyond `bytes`.
    pub fn shrink_to(&mut self, bytes: u64) {
        if bytes < self.bytes {
            self.release(self.bytes - bytes);
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The client they are held for.
    pub fn client(&self) -> &ClientId {
        &self.client
    }

    fn release(&mut self, bytes: u64) {
        let mut held = self.ledger.lock();
        let left = held
            .get(&self.client)
            .copied()
            .unwrap_or(0)
            .saturating_sub(bytes);
        if left == 0 {
            held.remove(&self.client);
        } else {
            held.insert(self.client.clone(), left);
        }
        self.bytes -= bytes;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_has_its_own_limit_and_drops_give_back() {
        let ledger = Ledger::new(100);
        let (a, b) = (ClientId::Uid(1), ClientId::Uid(2));
        let first = ledger.reserve(a.clone(), 60).unwrap();
        let err = ledger.reserve(a.clone(), 41).unwrap_err();
        assert_eq!((err.held, err.more, err.limit), (60, 41, 100));
        let other = ledger
            .reserve(b.clone(), 100)
            .expect("b is not held up by a");
        let mut second = ledger.reserve(a.clone(), 40).unwrap();
        assert!(second.grow(1).is_err(), "all or nothing");
        assert_eq!(ledger.held(&a), 100);
        second.shrink_to(10);
        assert_eq!(ledger.held(&a), 70);
        drop(first);
        drop(second);
        drop(other);
        assert_eq!(ledger.held(&a), 0);
        assert_eq!(ledger.held(&b), 0);
        assert!(ledger.lock().is_empty());
    }

    #[test]
    fn concurrent_reservations_never_pass_the_limit() {
        let ledger = Ledger::new(1000);
        let granted: Vec<Option<Reservation>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    let ledger = Arc::clone(&ledger);
                    s.spawn(move || {
                        let mut r = ledger.reserve(ClientId::Uid(7), 0).unwrap();
                        for _ in 0..10 {
                            if r.grow(10).is_err() {
                                return None;
                            }
                        }
                        Some(r)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let total: u64 = granted.iter().flatten().map(Reservation::bytes).sum();
        assert!(total <= 1000, "{total}");
        assert_eq!(ledger.held(&ClientId::Uid(7)), total);
    }
}
