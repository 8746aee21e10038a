//! Reading a body back: `SharedBody` streams it, checks its length and sha256 as it
//! goes, and holds the last chunk back until the whole body matched, so a reader of a
//! damaged object (short, long, wrong digest) never receives a complete-looking body.
//! A damaged body is deleted at once; the caller fetches from upstream and replaces the
//! reference (`SharedStore::replace`).

use super::breaker::Counters;
use super::{Answer, Damage, Error, Found, SharedStore};
use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A verified stream of a shared body. Yields `Ok` chunks and ends cleanly only if
/// the whole body matched its reference; otherwise its last item is an `Err`
/// (`Damaged`, or `Store` when the transfer failed). Dropping it early is fine.
pub struct SharedBody {
    store: SharedStore,
    name: String,
    stream: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    expected_len: u64,
    expected_sha256: String,
    hasher: Sha256,
    received: u64,
    held: Option<Bytes>,
}

impl SharedStore {
    /// Opens the body `found` names. A missing body or one of another size is
    /// `Err(Damaged)` at once.
    pub async fn body<M>(&self, found: &Found<M>) -> Result<SharedBody, Error> {
        let reference = &found.reference;
        let name = reference.body.clone();
        let path = self.path(&name)?;
        let got = match self
            .call("read body", &name, self.inner.s3.get(&path))
            .await?
        {
            Answer::Done(got) => got,
            _ => return Err(self.damaged(name, Damage::Missing)),
        };
        let size = got.meta.size;
        if size != reference.size {
            let damage = match size < reference.size {
                true => Damage::Short {
                    expected: reference.size,
                    got: size,
                },
                false => Damage::Long {
                    expected: reference.size,
                },
            };
            self.discard_body(name.clone());
            return Err(self.damaged(name, damage));
        }
        Ok(SharedBody {
            store: self.clone(),
            name,
            stream: Some(got.into_stream()),
            expected_len: reference.size,
            expected_sha256: reference.sha256.clone(),
            hasher: Sha256::new(),
            received: 0,
            held: None,
        })
    }

    /// Deletes a body proved damaged, in the background. Its name is its digest or
    /// random and unique, so whatever copy is there under it is the damaged one (a
    /// good copy uploaded in the meantime is at worst uploaded again).
    fn discard_body(&self, name: String) {
        let store = self.clone();
        self.spawn(async move { store.delete_quietly(name).await });
    }
}

impl SharedBody {
    /// The body's length, as its reference states it.
    pub fn len(&self) -> u64 {
        self.expected_len
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.expected_len == 0
    }

    fn fail(&mut self, damage: Damage) -> Poll<Option<Result<Bytes, Error>>> {
        self.stream = None;
        self.held = None;
        self.store.discard_body(self.name.clone());
        Poll::Ready(Some(Err(self.store.damaged(self.name.clone(), damage))))
    }
}

impl Stream for SharedBody {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            let Some(stream) = this.stream.as_mut() else {
                return Poll::Ready(None);
            };
            match stream.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    this.received += chunk.len() as u64;
                    if this.received > this.expected_len {
                        return this.fail(Damage::Long {
                            expected: this.expected_len,
                        });
                    }
                    this.hasher.update(&chunk);
                    Counters::add(&this.store.inner.counters.bytes_down, chunk.len() as u64);
                    if chunk.is_empty() {
                        continue;
                    }
                    // Hand out the previous chunk; keep this one until the next arrives
                    // or the digest is known.
                    if let Some(previous) = this.held.replace(chunk) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                Poll::Ready(Some(Err(source))) => {
                    this.stream = None;
                    this.held = None;
                    this.store.failed_late();
                    return Poll::Ready(Some(Err(Error::Store {
                        op: "read body",
                        name: this.name.clone(),
                        source,
                    })));
                }
                Poll::Ready(None) => {
                    this.stream = None;
                    if this.received < this.expected_len {
                        return this.fail(Damage::Short {
                            expected: this.expected_len,
                            got: this.received,
                        });
                    }
                    let got = hex::encode(this.hasher.clone().finalize());
                    if got != this.expected_sha256 {
                        let expected = this.expected_sha256.clone();
                        return this.fail(Damage::Digest { expected, got });
                    }
                    return Poll::Ready(this.held.take().map(Ok));
                }
            }
        }
    }
}
