//! Streaming a body up: `BodyUpload` takes the bytes as they arrive, hashes them and
//! sends them in parts of `part_size` (at most two parts in flight, so memory stays
//! below three parts per upload). A body that fits in one part is sent with one PUT
//! under its digest. Nothing is visible under a body name until the upload completes,
//! and nothing is published until `SharedStore::publish` writes the reference.

use super::breaker::Counters;
use super::{layout, Answer, Damage, Error, SharedStore};
use bytes::Bytes;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

/// Parts uploading at once per body.
const PARTS_IN_FLIGHT: usize = 2;

/// What the writer knows of a body before it begins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UploadHint {
    /// Its length (the upstream's Content-Length), checked at `finish`.
    pub size: Option<u64>,
    /// Its sha256 (an index lists it), checked at `finish`. With it the body is named
    /// by its digest from the start, and not sent at all if that object exists.
    pub sha256: Option<String>,
}

enum Sink {
    /// Nothing sent yet: the bytes are in `buf`.
    Buffer,
    /// A multipart upload to `name` has begun.
    Parts {
        name: String,
        upload: Box<dyn MultipartUpload>,
        parts: JoinSet<Result<(), Error>>,
    },
    /// The body is already in the store under its digest: bytes are only hashed.
    Exists { name: String },
}

/// One body being streamed up. Feed it with [`BodyUpload::write`], then
/// [`BodyUpload::finish`]. Dropped unfinished (or on any error) its multipart upload is
/// aborted in the background; a node killed mid-upload leaves an incomplete upload that
/// `SharedStore::abort_stale_uploads` removes. `write` waits while two parts are
/// uploading: a caller that must not wait for the store drops the upload instead.
pub struct BodyUpload {
    store: SharedStore,
    hint: UploadHint,
    hasher: Sha256,
    len: u64,
    buf: Vec<Bytes>,
    buffered: usize,
    sink: Sink,
}

/// A body in the store, complete and verified, not yet published. Dropped without being
/// published, a body under a random name is deleted in the background (one named by its
/// digest may be shared, and is left to `gc --shared`).
pub struct UploadedBody {
    store: SharedStore,
    name: String,
    size: u64,
    sha256: String,
    armed: bool,
}

impl SharedStore {
    /// Begins an upload. With `hint.sha256`, asks the store whether that body exists
    /// (one HEAD); otherwise sends nothing until a part is full.
    pub async fn upload(&self, hint: UploadHint) -> Result<BodyUpload, Error> {
        let mut sink = Sink::Buffer;
        if let Some(sha) = hint.sha256.as_deref().filter(|s| layout::is_sha256(s)) {
            let name = layout::digest_body(sha);
            let path = self.path(&name)?;
            if let Answer::Done(meta) = self
                .call("look for body", &name, self.inner.s3.head(&path))
                .await?
            {
                // A body of another size under this digest is damaged: upload anew over it.
                if hint.size.is_none_or(|size| size == meta.size) {
                    sink = Sink::Exists { name };
                }
            }
        }
        Ok(BodyUpload {
            store: self.clone(),
            hint,
            hasher: Sha256::new(),
            len: 0,
            buf: Vec::new(),
            buffered: 0,
            sink,
        })
    }
}

impl BodyUpload {
    /// Adds the next bytes of the body.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), Error> {
        self.len += chunk.len() as u64;
        if let Some(expected) = self.hint.size.filter(|size| self.len > *size) {
            return Err(Error::Rejected {
                damage: Damage::Long { expected },
            });
        }
        self.hasher.update(&chunk);
        if matches!(self.sink, Sink::Exists { .. }) {
            return Ok(());
        }
        self.buffered += chunk.len();
        self.buf.push(chunk);
        let part_size = self.store.inner.config.part_size;
        while self.buffered >= part_size {
            self.send_part(part_size).await?;
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes `size` bytes (or all) off the buffer as one payload.
    fn take(&mut self, size: usize) -> PutPayload {
        let mut out = Vec::new();
        let mut want = size.min(self.buffered);
        self.buffered -= want;
        let mut rest = std::mem::take(&mut self.buf).into_iter();
        for mut chunk in rest.by_ref() {
            if chunk.len() > want {
                let tail = chunk.split_off(want);
                if !chunk.is_empty() {
                    out.push(chunk);
                }
                self.buf.push(tail);
                break;
            }
            want -= chunk.len();
            out.push(chunk);
            if want == 0 {
                break;
            }
        }
        self.buf.extend(rest);
        out.into_iter().collect()
    }

    /// Sends one part of `size` bytes, starting the multipart upload first if needed.
    async fn send_part(&mut self, size: usize) -> Result<(), Error> {
        if matches!(self.sink, Sink::Buffer) {
            let name = match self.hint.sha256.as_deref().filter(|s| layout::is_sha256(s)) {
                Some(sha) => layout::digest_body(sha),
                None => layout::random_body(self.store.inner.config.node.as_deref()),
            };
            let path = self.store.path(&name)?;
            let request = self.store.inner.s3.put_multipart(&path);
            let upload = match self.store.call("begin upload", &name, request).await? {
                Answer::Done(upload) => upload,
                _ => {
                    return Err(Error::Unexpected {
                        op: "begin upload",
                        name,
                    })
                }
            };
            self.sink = Sink::Parts {
                name,
                upload,
                parts: JoinSet::new(),
            };
        }
        let payload = self.take(size);
        let Sink::Parts {
            name,
            upload,
            parts,
        } = &mut self.sink
        else {
            unreachable!("a multipart upload was begun above")
        };
        while parts.len() >= PARTS_IN_FLIGHT {
            join_part(parts).await?;
        }
        let bytes = payload.content_length() as u64;
        let request = upload.put_part(payload);
        let store = self.store.clone();
        let name = name.clone();
        parts.spawn(async move {
            match store.call("upload part", &name, request).await? {
                Answer::Done(()) => {
                    Counters::add(&store.inner.counters.bytes_up, bytes);
                    Ok(())
                }
                _ => Err(Error::Unexpected {
                    op: "upload part",
                    name,
                }),
            }
        });
        Ok(())
    }

    /// Completes the upload and checks the body against the hint. On any error the
    /// upload is aborted and nothing is left in the store.
    pub async fn finish(mut self) -> Result<UploadedBody, Error> {
        let sha256 = hex::encode(self.hasher.clone().finalize());
        if let Some(expected) = self.hint.size.filter(|size| *size != self.len) {
            return Err(Error::Rejected {
                damage: Damage::Short {
                    expected,
                    got: self.len,
                },
            });
        }
        if let Some(expected) = self.hint.sha256.clone().filter(|s| *s != sha256) {
            return Err(Error::Rejected {
                damage: Damage::Digest {
                    expected,
                    got: sha256,
                },
            });
        }
        let name = match std::mem::replace(&mut self.sink, Sink::Buffer) {
            Sink::Exists { name } => name,
            Sink::Buffer => {
                // Held whole: named by its digest, and rewriting that name with the same
                // bytes is harmless (and mends a damaged copy).
                let name = layout::digest_body(&sha256);
                let path = self.store.path(&name)?;
                let payload = self.take(usize::MAX);
                let bytes = payload.content_length() as u64;
                let options = PutOptions::from(PutMode::Overwrite);
                let request = self.store.inner.s3.put_opts(&path, payload, options);
                self.store.call("upload body", &name, request).await?;
                Counters::add(&self.store.inner.counters.bytes_up, bytes);
                name
            }
            Sink::Parts {
                name,
                upload,
                parts,
            } => {
                // Put back so that a failure below aborts it (see Drop).
                self.sink = Sink::Parts {
                    name,
                    upload,
                    parts,
                };
                if self.buffered > 0 {
                    self.send_part(usize::MAX).await?;
                }
                let Sink::Parts {
                    name,
                    upload,
                    parts,
                } = &mut self.sink
                else {
                    unreachable!("put back above")
                };
                while !parts.is_empty() {
                    join_part(parts).await?;
                }
                let name = name.clone();
                match self
                    .store
                    .call("complete upload", &name, upload.complete())
                    .await?
                {
                    Answer::Done(_) => {}
                    _ => {
                        return Err(Error::Unexpected {
                            op: "complete upload",
                            name,
                        })
                    }
                }
                self.sink = Sink::Buffer;
                name
            }
        };
        Ok(UploadedBody {
            store: self.store.clone(),
            armed: !layout::is_digest_body(&name),
            name,
            size: self.len,
            sha256,
        })
    }
}

/// Waits for the next part to finish.
async fn join_part(parts: &mut JoinSet<Result<(), Error>>) -> Result<(), Error> {
    match parts.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(join)) => Err(Error::Task(join.to_string())),
        None => Ok(()),
    }
}

impl Drop for BodyUpload {
    fn drop(&mut self) {
        let Sink::Parts {
            name, mut upload, ..
        } = std::mem::replace(&mut self.sink, Sink::Buffer)
        else {
            return;
        };
        let store = self.store.clone();
        self.store.spawn(async move {
            match store.call("abort upload", &name, upload.abort()).await {
                Ok(_) => Counters::add(&store.inner.counters.uploads_aborted, 1),
                Err(err) => {
                    tracing::warn!(name = %name, error = %err, "shared store: abort failed")
                }
            }
        });
    }
}

impl UploadedBody {
    /// The body's object name (relative to the prefix).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its length.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Its sha256, lower-case hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Keeps the body: a reference names it now.
    pub(super) fn disarm(&mut self) {
        self.armed = false;
    }

    /// Deletes the body now (a lost race), unless it is shared by digest.
    pub(super) async fn delete(&mut self) {
        if std::mem::take(&mut self.armed) {
            self.store.delete_quietly(self.name.clone()).await;
        }
    }
}

impl Drop for UploadedBody {
    fn drop(&mut self) {
        if self.armed {
            let store = self.store.clone();
            let name = self.name.clone();
            self.store
                .spawn(async move { store.delete_quietly(name).await });
        }
    }
}
