//! A fill's body on its way up to the shared store (`SharedWrite`): a queue
//! bounded in bytes feeds an upload task, so a fill never waits for the
//! store; the reference is published at commit, or the key deferred to the
//! backlog when the upload fell behind or failed.

use super::SharedTier;
use crate::digest::Digest;
use crate::store::shared::{BreakerState, EntryInfo, SharedStore, UploadHint};
use crate::store::shared::{Error as SharedError, UploadedBody};
use crate::store::tier::{Sealed, TierWrite};
use crate::store::{CacheKey, Committed, Error, FillHead};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

enum Msg {
    Chunk(Bytes, OwnedSemaphorePermit),
    Finish,
}

/// A fill's body on its way up: chunks go to an upload task through a queue
/// bounded in bytes; a fill never waits for the store. Dropped without
/// `commit`, the queue closes and the upload task drops (aborts) its upload.
pub(super) struct SharedWrite {
    tier: SharedTier,
    key: CacheKey,
    stream: Option<Stream>,
    /// Why the stream was dropped, for the log line at commit.
    dropped: Option<&'static str>,
}

struct Stream {
    tx: mpsc::UnboundedSender<Msg>,
    budget: Arc<Semaphore>,
    done: oneshot::Receiver<Result<UploadedBody, SharedError>>,
}

impl SharedWrite {
    pub(super) fn start(tier: SharedTier, key: CacheKey, head: &FillHead) -> SharedWrite {
        let shared = tier.inner.shared.clone();
        if shared.breaker() != BreakerState::Closed {
            return SharedWrite {
                tier,
                key,
                stream: None,
                dropped: Some("the store is skipped"),
            };
        }
        let hint = UploadHint {
            size: head.content_length,
            sha256: head
                .expected
                .as_ref()
                .filter(|d| matches!(d, Digest::Sha256(_)))
                .map(|d| d.hex().to_string()),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done) = oneshot::channel();
        let budget = Arc::new(Semaphore::new(tier.inner.stream_budget));
        shared.clone().spawn(upload(shared, hint, rx, done_tx));
        SharedWrite {
            tier,
            key,
            stream: Some(Stream { tx, budget, done }),
            dropped: None,
        }
    }

    fn drop_stream(&mut self, why: &'static str) {
        if self.stream.take().is_some() {
            self.dropped = Some(why);
            self.tier
                .inner
                .counters
                .abandoned
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(key = %self.key, reason = why, "shared store: upload dropped");
        }
    }
}

/// The upload task of one `SharedWrite`: writes what the queue brings, and
/// finishes on `Finish`. A queue closed without it drops (aborts) the upload.
async fn upload(
    shared: SharedStore,
    hint: UploadHint,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    done: oneshot::Sender<Result<UploadedBody, SharedError>>,
) {
    let result = async {
        let mut up = shared.upload(hint).await?;
        loop {
            match rx.recv().await {
                Some(Msg::Chunk(chunk, _room)) => up.write(chunk).await?,
                Some(Msg::Finish) => return up.finish().await.map(Some),
                None => return Ok(None),
            }
        }
    }
    .await;
    // The queue is dropped first: a writer still sending learns at once.
    drop(rx);
    match result {
        Ok(None) => {}
        Ok(Some(body)) => drop(done.send(Ok(body))),
        Err(err) => drop(done.send(Err(err))),
    }
}

impl TierWrite for SharedWrite {
    fn write<'a>(&'a mut self, chunks: &'a [Bytes]) -> BoxFuture<'a, Result<(), Error>> {
        for chunk in chunks {
            let Some(stream) = &self.stream else { break };
            // A chunk larger than the whole budget takes the whole budget.
            let want = chunk.len().min(self.tier.inner.stream_budget).max(1);
            let Ok(room) = stream
                .budget
                .clone()
                .try_acquire_many_owned(u32::try_from(want).unwrap_or(u32::MAX))
            else {
                self.drop_stream("the store fell behind the fill");
                break;
            };
            if stream.tx.send(Msg::Chunk(chunk.clone(), room)).is_err() {
                self.drop_stream("the upload failed");
            }
        }
        async { Ok(()) }.boxed()
    }

    fn commit(mut self: Box<Self>, sealed: Sealed) -> BoxFuture<'static, Result<Committed, Error>> {
        async move {
            let tier = self.tier.clone();
            let key = self.key.clone();
            let Some(stream) = self.stream.take() else {
                tier.defer(&key, &self.dropped.unwrap_or("no upload"));
                return Ok(Committed::NotStored);
            };
            let _ = stream.tx.send(Msg::Finish);
            let body = match stream.done.await {
                Ok(Ok(body)) => body,
                Ok(Err(err)) => {
                    tier.defer(&key, &err);
                    return Ok(Committed::NotStored);
                }
                Err(_) => {
                    tier.defer(&key, &"the upload task stopped");
                    return Ok(Committed::NotStored);
                }
            };
            let info = EntryInfo {
                headers: sealed.head.headers.clone(),
                source: sealed.head.source.clone(),
                fetched_at: crate::store::unix_now(),
            };
            match tier
                .inner
                .shared
                .publish(&key.canonical(), body, info)
                .await
            {
                Ok(published) if published.won() => {
                    tier.inner.counters.streamed.fetch_add(1, Ordering::Relaxed);
                    Ok(Committed::Stored)
                }
                Ok(_) => Ok(Committed::NotStored),
                Err(err) if err.is_unavailable() => {
                    tier.defer(&key, &err);
                    Ok(Committed::NotStored)
                }
                Err(source) => Err(Error::Shared {
                    key: key.to_string(),
                    source: Box::new(source),
                }),
            }
        }
        .boxed()
    }
}
