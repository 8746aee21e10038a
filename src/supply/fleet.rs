//! First-seen times shared by the nodes of a fleet through the shared store
//! (`--shared-store`): before a node dates a release it has never seen, it
//! looks the release up in the bucket (bounded in count and time, so a slow
//! store costs a request at most [`LOOKUP_BOUND`]); what it dates itself it
//! publishes (created once — the first node's time is the fleet's). While
//! the store is away the node judges by its own times and keeps what it could
//! not publish in a bounded backlog, published when the store answers again
//! (and tried once, bounded, at shutdown; what is still unpublished then stays
//! on this node); a time the fleet had earlier then replaces its own.

use super::first_seen::FirstSeen;
use crate::store::shared::{Backlog, SharedStore};
use futures_util::StreamExt as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The longest a document or download waits for the fleet's times.
pub const LOOKUP_BOUND: Duration = Duration::from_secs(2);
/// Lookups for one document at most; releases past them are dated here and
/// published, and a node that published one earlier wins when this one publishes.
const MAX_LOOKUPS: usize = 256;
/// Lookups in flight at once.
const CONCURRENCY: usize = 16;
/// Unpublished times kept while the store is away.
const MAX_BACKLOG: usize = 100_000;
/// How soon publishing is tried again after the store failed.
const RETRY: Duration = Duration::from_secs(2);

/// The shared store as the first-seen record uses it.
#[derive(Debug)]
pub struct Fleet {
    store: SharedStore,
    backlog: Backlog<(String, i64)>,
    /// Whether the store failed last time: logged once per outage.
    down: AtomicBool,
}

impl Fleet {
    /// Shares first-seen times through `store`.
    pub fn new(store: SharedStore) -> Fleet {
        Fleet {
            store,
            backlog: Backlog::new(MAX_BACKLOG),
            down: AtomicBool::new(false),
        }
    }

    /// Queues a time dated here for publication.
    pub(super) fn queue(&self, key: String, secs: i64) {
        self.backlog.push((key, secs));
    }

    /// How many times wait for publication.
    pub fn backlog(&self) -> usize {
        self.backlog.len()
    }

    fn failed(&self, what: &str, err: &crate::store::shared::Error) {
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(error = %err, backlog = self.backlog.len(),
                "shared store unavailable for first-seen times ({what}); judging by this node's own and publishing them later");
        }
    }

    fn answered(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!(
                backlog = self.backlog.len(),
                "shared store answers first-seen requests again"
            );
        }
    }

    /// Publishes the queued times ([`CONCURRENCY`] at once), adopting the
    /// fleet's where it had one earlier; `Some(delay)` to try again after
    /// when the store failed.
    pub(super) async fn publish(
        &self,
        record: &FirstSeen,
        stop: &CancellationToken,
    ) -> Option<Duration> {
        loop {
            let batch: Vec<(String, i64)> = std::iter::from_fn(|| self.backlog.pop())
                .take(CONCURRENCY)
                .collect();
            if batch.is_empty() || stop.is_cancelled() {
                for item in batch.into_iter().rev() {
                    self.backlog.push_front(item);
                }
                return None;
            }
            let puts = batch
                .iter()
                .map(|(key, secs)| self.store.publish_first_seen(key, *secs));
            let answers = futures_util::future::join_all(puts).await;
            let mut retry = false;
            for ((key, secs), answer) in batch.into_iter().zip(answers) {
                match answer {
                    Ok(theirs) => {
                        self.answered();
                        record.adopt(&key, theirs);
                    }
                    Err(err) if err.is_unavailable() => {
                        self.failed("publishing", &err);
                        self.backlog.push_front((key, secs));
                        retry = true;
                    }
                    // A damaged record in the bucket: this node keeps its own time.
                    Err(err) => tracing::warn!(key = %key.replace('\t', " "), error = %err,
                        "cannot publish a first-seen time; kept on this node"),
                }
            }
            if retry {
                return Some(RETRY);
            }
        }
    }

    /// Looks `keys` up in the store (those `record` does not know, at most
    /// [`MAX_LOOKUPS`], within [`LOOKUP_BOUND`]) and adopts the times found.
    /// Keys not found, or not answered in time, are left for the judge to date.
    pub(super) async fn resolve(&self, record: &FirstSeen, mut keys: Vec<String>) {
        keys.sort_unstable();
        keys.dedup();
        keys.retain(|k| record.known(k).is_none());
        keys.truncate(MAX_LOOKUPS);
        if keys.is_empty() {
            return;
        }
        let deadline = tokio::time::Instant::now() + LOOKUP_BOUND;
        let mut lookups = futures_util::stream::iter(keys)
            .map(|key| async move {
                let found = self.store.first_seen(&key).await;
                (key, found)
            })
            .buffer_unordered(CONCURRENCY);
        loop {
            match tokio::time::timeout_at(deadline, lookups.next()).await {
                Ok(Some((key, Ok(found)))) => {
                    self.answered();
                    if let Some(secs) = found {
                        record.adopt(&key, secs);
                    }
                }
                Ok(Some((_, Err(err)))) if err.is_unavailable() => {
                    self.failed("looking up", &err);
                    return;
                }
                Ok(Some((key, Err(err)))) => tracing::warn!(key = %key.replace('\t', " "),
                    error = %err, "unreadable first-seen time in the shared store; dating it here"),
                Ok(None) => return,
                Err(_) => {
                    tracing::warn!(
                        bound_ms = LOOKUP_BOUND.as_millis() as u64,
                        "first-seen lookups in the shared store not answered in time; dating the rest here"
                    );
                    return;
                }
            }
        }
    }
}
