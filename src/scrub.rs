//! The background scrub (`--scrub-rate`): re-reads committed entries at a
//! bounded rate through the same checks a hit goes through, so damage at
//! rest in files nobody asks for is found (and quarantined) before a client
//! meets it. Entries read in the last [`RECENT`] are skipped: their reads
//! check them already. The first thing it does is adopt the directory if it
//! is not yet (`Store::adopt`). Owned by the app's task tracker; stops when
//! its token is cancelled.

use crate::store::maintenance::Scan;
use crate::store::{CacheKey, Indexed, Scrub, Store};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The default `--scrub-rate`: a full pass over 100 GiB in about 7 hours,
/// at a cost few disks notice.
pub const DEFAULT_RATE: u64 = 4 << 20;
/// An entry used this recently is being read (and so checked); the scrub
/// leaves it. Hits update it only while eviction tracks recency; otherwise
/// it is the commit time.
const RECENT: Duration = Duration::from_secs(2);
/// Pause between passes (and while the cache is empty). The rate, not this
/// pause, bounds what a small cache costs.
const BETWEEN_PASSES: Duration = Duration::from_secs(1);
/// Keys the walk may read ahead of the scrub.
const WALK_AHEAD: usize = 256;

/// What the scrub reports.
pub trait Report: Send + Sync + 'static {
    /// `bytes` more were re-checked.
    fn scrubbed(&self, bytes: u64);
    /// A damaged entry was found (and quarantined).
    fn damage_found(&self);
}

/// Adopts the directory if needed, then, when `rate` is above 0, scrubs
/// `store` at `rate` bytes per second until `cancel` fires.
pub async fn run(store: Store, rate: u64, cancel: CancellationToken, report: impl Report) {
    match tokio::select! {
        _ = cancel.cancelled() => return,
        adopted = store.adopt(cancel.clone()) => adopted,
    } {
        Ok(_) => {}
        Err(err) => {
            tracing::error!(error = %err, "cannot adopt the cache directory; plain files stay unchecked")
        }
    }
    if rate == 0 {
        return;
    }
    let mut pace = Pace::new(rate);
    loop {
        let mut keys = walk(&store);
        let mut scrubbed_any = false;
        while let Some(key) = keys.recv().await {
            if cancel.is_cancelled() {
                return;
            }
            if store
                .indexed(&key)
                .is_some_and(|entry| used_recently(&entry))
            {
                continue;
            }
            scrubbed_any = true;
            if !scrub_one(&store, &key, &mut pace, &cancel, &report).await {
                return;
            }
        }
        if !scrubbed_any {
            pace.idle();
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(BETWEEN_PASSES) => {}
        }
    }
}

/// The keys of the committed entries, walked off the runtime (the index
/// keeps hashes, not keys). The walk stops when the receiver is dropped.
fn walk(store: &Store) -> mpsc::Receiver<CacheKey> {
    let (tx, rx) = mpsc::channel(WALK_AHEAD);
    let scan = Scan::new(store.layout()).without_meta();
    tokio::task::spawn_blocking(move || {
        let entries = match scan.entries() {
            Ok(entries) => entries,
            Err(err) => {
                tracing::warn!(error = %err, "scrub cannot walk the cache");
                return;
            }
        };
        for entry in entries.flatten() {
            if tx.blocking_send(entry.key).is_err() {
                return;
            }
        }
    });
    rx
}

/// Checks one entry; false when cancelled.
async fn scrub_one(
    store: &Store,
    key: &CacheKey,
    pace: &mut Pace,
    cancel: &CancellationToken,
    report: &impl Report,
) -> bool {
    let mut reader = match store.scrub(key).await {
        Ok(Scrub::Skip) => return true,
        Ok(Scrub::Damaged) => {
            report.damage_found();
            return true;
        }
        Ok(Scrub::Checked(bytes)) => {
            report.scrubbed(bytes);
            return pace.spent(bytes, cancel).await;
        }
        Ok(Scrub::Read(reader)) => reader,
        Err(err) => {
            tracing::warn!(key = %key, error = %err, "scrub cannot open an entry");
            return true;
        }
    };
    loop {
        match reader.next_chunk().await {
            Ok(Some(chunk)) => {
                report.scrubbed(chunk.len() as u64);
                if !pace.spent(chunk.len() as u64, cancel).await {
                    return false;
                }
            }
            Ok(None) => return true,
            Err(err) if err.kind() == std::io::ErrorKind::InvalidData => {
                // Quarantined and logged by the store.
                report.damage_found();
                return true;
            }
            Err(err) => {
                tracing::warn!(key = %key, error = %err, "scrub cannot read an entry");
                return true;
            }
        }
    }
}

fn used_recently(entry: &Indexed) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    now.saturating_sub(entry.last_used) < RECENT.as_millis() as u64
}

/// A byte budget that refills at `rate` per second; time spent idle is not
/// saved up beyond a second's worth.
struct Pace {
    rate: u64,
    start: Instant,
    bytes: u64,
}

impl Pace {
    fn new(rate: u64) -> Pace {
        Pace {
            rate,
            start: Instant::now(),
            bytes: 0,
        }
    }

    fn idle(&mut self) {
        self.start = Instant::now();
        self.bytes = 0;
    }

    /// Counts `bytes` read and sleeps until they fit the rate; false when
    /// cancelled meanwhile.
    async fn spent(&mut self, bytes: u64, cancel: &CancellationToken) -> bool {
        self.bytes += bytes;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        let elapsed = self.start.elapsed();
        if elapsed > due + Duration::from_secs(1) {
            self.idle();
            return true;
        }
        if let Some(wait) = due.checked_sub(elapsed) {
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_pace_holds_the_rate() {
        let cancel = CancellationToken::new();
        let mut pace = Pace::new(1 << 20);
        let start = tokio::time::Instant::now();
        for _ in 0..8 {
            assert!(pace.spent(256 << 10, &cancel).await);
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1900), "{took:?}");
        cancel.cancel();
        assert!(
            !pace.spent(16 << 20, &cancel).await,
            "cancelled while waiting"
        );
    }
}
