//! `BodyReader`: a byte stream over a committed entry or over a fill that is
//! still growing. It reads with positional reads on a shared descriptor, off the
//! runtime, and follows a fill through its `watch` channel until `Complete`;
//! an `Aborted` fill ends the stream with an error, never a clean end. A
//! committed body is read through its `Check` (whole blocks, each proved
//! before any of it goes out); a fill's bytes are covered by the fill's own
//! hashing until it commits, and by the sums it recorded after.

use super::check::Check;
use super::fill::{FillShared, FillState};
use super::quarantine::Damage;
use bytes::Bytes;
use futures_util::Stream;
use rustix::io::ReadWriteFlags;
use std::fs::File;
use std::io::{self, IoSliceMut};
use std::sync::Arc;
use tokio::sync::watch;

/// Largest chunk handed to hyper: big reads keep syscalls and task hops few.
pub const CHUNK: u64 = 256 * 1024;

/// Where the bytes come from.
enum Source {
    /// A committed file of known length.
    Fixed { len: u64 },
    /// A fill in progress; `id` is this reader's place in its spill registry.
    /// `seen`: bytes known to be readable, also after the fill fails.
    Growing {
        rx: watch::Receiver<FillState>,
        shared: Arc<FillShared>,
        id: u64,
        seen: u64,
    },
}

/// Streams `[start, end)` of a file. For a growing file, `end` may be
/// `u64::MAX` ("until complete"). Not `Sync`; one reader per response.
pub struct BodyReader {
    file: Arc<File>,
    pos: u64,
    end: u64,
    source: Source,
    /// How the bytes of a committed body are proved (`None`: a plain file
    /// of an earlier version, or a part of an entry without block sums).
    check: Option<Check>,
}

impl BodyReader {
    pub(crate) fn fixed(
        file: Arc<File>,
        len: u64,
        start: u64,
        end: u64,
        check: Option<Check>,
    ) -> BodyReader {
        BodyReader {
            file,
            pos: start,
            end: end.min(len),
            source: Source::Fixed { len },
            check,
        }
    }

    pub(crate) fn growing(
        shared: Arc<FillShared>,
        file: Arc<File>,
        start: u64,
        end: u64,
        seen: u64,
    ) -> BodyReader {
        let rx = shared.state.subscribe();
        let id = shared.spill().register(start);
        BodyReader {
            file,
            pos: start,
            end,
            source: Source::Growing {
                rx,
                shared,
                id,
                seen,
            },
            check: None,
        }
    }

    /// Once the fill this reader follows is committed, the rest is read as
    /// a committed body, checked by the block sums the fill recorded.
    fn follow_commit(&mut self) {
        let Source::Growing { rx, shared, .. } = &self.source else {
            return;
        };
        let FillState::Complete {
            len,
            committed: true,
        } = *rx.borrow()
        else {
            return;
        };
        let Some(sealed) = shared.committed.get() else {
            return;
        };
        if self.end != u64::MAX && self.end > len {
            // Left to the growing path, which reports the short entry.
            return;
        }
        self.check = Some(Check::sealed(sealed.home.clone(), sealed.sums.clone()));
        self.end = self.end.min(len);
        let old = std::mem::replace(&mut self.source, Source::Fixed { len });
        if let Source::Growing { shared, id, .. } = old {
            shared.spill().unregister(id);
            shared.drained.notify_one();
        }
    }

    /// The next chunk, `None` at a clean end, `Err` when the fill failed.
    pub async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            self.follow_commit();
            if self.pos >= self.end {
                return Ok(None);
            }
            let readable = match &mut self.source {
                Source::Fixed { len } => *len,
                Source::Growing { rx, seen, .. } => {
                    let state = rx.borrow_and_update().clone();
                    match state {
                        FillState::Pending => 0,
                        FillState::Streaming { written } => {
                            *seen = written;
                            written
                        }
                        FillState::Spilling { received, .. } => {
                            *seen = received;
                            received
                        }
                        FillState::Complete { len, .. } => {
                            if self.pos >= len {
                                if self.end == u64::MAX || self.end == len {
                                    return Ok(None);
                                }
                                return Err(io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    "entry shorter than announced",
                                ));
                            }
                            len
                        }
                        // The descriptor keeps what was written readable, so the
                        // bytes already seen go out before the error: a response
                        // whose body fails on its first poll loses its head too.
                        FillState::Aborted
                        | FillState::Failed(_)
                        | FillState::Vacated
                        | FillState::Uncacheable
                            if self.pos >= *seen =>
                        {
                            return Err(io::Error::new(
                                io::ErrorKind::ConnectionAborted,
                                "upstream fetch failed",
                            ));
                        }
                        FillState::Aborted
                        | FillState::Failed(_)
                        | FillState::Vacated
                        | FillState::Uncacheable => *seen,
                    }
                }
            };
            let limit = readable.min(self.end);
            if self.pos < limit {
                let chunk = match (&self.source, self.check.is_some()) {
                    (Source::Fixed { len }, true) => self.read_checked(*len).await?,
                    _ => self.read_at(limit).await?,
                };
                self.pos += chunk.len() as u64;
                if let Source::Growing { shared, id, .. } = &self.source {
                    if shared.spill().advance(*id, self.pos) {
                        shared.drained.notify_one();
                    }
                }
                return Ok(Some(chunk));
            }
            match &mut self.source {
                Source::Fixed { .. } => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "range beyond entry",
                    ));
                }
                Source::Growing { rx, .. } => {
                    if rx.changed().await.is_err() {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "fill went away",
                        ));
                    }
                }
            }
        }
    }

    /// The next bytes of a committed body of `len` bytes, read whole blocks
    /// at a time and proved by the check before any of them is handed out.
    async fn read_checked(&mut self, len: u64) -> io::Result<Bytes> {
        let check = self.check.as_mut().expect("called with a check");
        let (from, to) = check.span(self.pos, len, CHUNK);
        let data = match read_chunk(self.file.clone(), from, (to - from) as usize).await {
            Ok(data) => data,
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                // Truncated since it was opened.
                let file = self.file.clone();
                let found = tokio::task::spawn_blocking(move || file.metadata().map(|m| m.len()))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(0);
                let damage = Damage::Size {
                    recorded: len,
                    found,
                };
                return Err(check.home.damaged(damage).await);
            }
            Err(err) => return Err(err),
        };
        if let Err(damage) = check.verify(from, &data, len) {
            return Err(check.home.damaged(damage).await);
        }
        let stop = self.end.min(to);
        Ok(data.slice((self.pos - from) as usize..(stop - from) as usize))
    }

    /// The next bytes before `limit`: from the file, or from memory past the
    /// point where the disk refused a spilled fill.
    async fn read_at(&self, limit: u64) -> io::Result<Bytes> {
        let mut limit = limit;
        if let Source::Growing { shared, .. } = &self.source {
            let spill = shared.spill();
            if let Some(on_disk) = spill.on_disk() {
                if self.pos >= on_disk {
                    return spill
                        .read(self.pos, (limit - self.pos).min(CHUNK))
                        .ok_or_else(|| {
                            io::Error::other("bytes of an uncached fill are no longer held")
                        });
                }
                limit = limit.min(on_disk);
            }
        }
        let n = (limit - self.pos).min(CHUNK) as usize;
        read_chunk(self.file.clone(), self.pos, n).await
    }

    /// The reader as a `Stream`, for a response body.
    pub fn into_stream(self) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        futures_util::stream::unfold(Some(self), |reader| async move {
            let mut reader = reader?;
            match reader.next_chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(reader))),
                Ok(None) => None,
                Err(err) => Some((Err(err), None)),
            }
        })
    }
}

impl Drop for BodyReader {
    fn drop(&mut self) {
        if let Source::Growing { shared, id, .. } = &self.source {
            shared.spill().unregister(*id);
            // A spilled fill may be waiting for this reader.
            shared.drained.notify_one();
        }
    }
}

/// Reads exactly `n` bytes at `pos`.
///
/// Bytes already in the page cache are read right here with `RWF_NOWAIT`,
/// which returns what is cached and never waits for the disk; the rest (a
/// cold file) is read on the blocking pool. Hits on warm files thus cost no
/// thread hop per chunk.
pub(crate) async fn read_chunk(file: Arc<File>, pos: u64, n: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    match rustix::io::preadv2(
        &*file,
        &mut [IoSliceMut::new(&mut buf)],
        pos,
        ReadWriteFlags::NOWAIT,
    ) {
        Ok(got) => filled = got,
        Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::OPNOTSUPP) => {}
        Err(err) => return Err(err.into()),
    }
    if filled == n {
        return Ok(Bytes::from(buf));
    }
    tokio::task::spawn_blocking(move || {
        while filled < n {
            let got = rustix::io::pread(&*file, &mut buf[filled..], pos + filled as u64)?;
            if got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shorter than its entry",
                ));
            }
            filled += got;
        }
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(io::Error::other)?
}
