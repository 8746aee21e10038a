//! The digest check at a fill's commit: the body's streamed hashes held
//! against the digest its index lists, or, for a Go `h1:`, the finished file
//! read back (by offset, off the runtime) and hashed as a module zip; and the
//! same check over a committed body read whole (`differs_at_rest`, for
//! `confirm`). Knows digests and files only: which digest applies is the
//! caller's business.

use crate::digest::{h1, BodyDigests, BodyHasher, Digest, Verdict};
use std::io::{Read, Seek};
use std::sync::Arc;

/// What the body is instead of `expected` (its digest in that algorithm),
/// or `None` when it matches. A Go `h1:` is computed over the finished
/// file, read back off the runtime; a spilled body (not all on disk)
/// cannot be read back, so it fails the check.
pub(super) async fn differs(
    expected: &Digest,
    digests: &BodyDigests,
    file: Option<Arc<std::fs::File>>,
    len: u64,
) -> Option<String> {
    match digests.verdict(expected) {
        Verdict::Matches => None,
        Verdict::Differs(got) => Some(got.to_string()),
        Verdict::NeedsFile => {
            let Some(file) = file else {
                return Some("a body that was not kept whole on disk".into());
            };
            let computed = tokio::task::spawn_blocking(move || {
                h1::of_zip(std::io::BufReader::new(AtOffset::new(&file, len)))
            })
            .await;
            match computed {
                Ok(Ok(got)) if &got == expected => None,
                Ok(Ok(got)) => Some(got.to_string()),
                Ok(Err(err)) => Some(format!("no {} ({err})", expected.algorithm())),
                Err(err) => Some(format!("no {} ({err})", expected.algorithm())),
            }
        }
    }
}

/// What the whole body `body` reads as is instead of `expected` (its
/// digest in that algorithm, or why it has none, such as a zip that does
/// not open), or `None` when it matches. `Err` only when reading fails.
/// Blocking: it reads every byte (a Go `h1:` inflates every file).
pub(super) fn differs_at_rest<R: Read + Seek>(
    expected: &Digest,
    mut body: R,
) -> std::io::Result<Option<String>> {
    let mut hasher = BodyHasher::new(Some(expected));
    if expected.is_streamable() {
        let mut buf = vec![0u8; super::BLOCK as usize];
        loop {
            match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(match hasher.finish().verdict(expected) {
        Verdict::Matches => None,
        Verdict::Differs(got) => Some(got.to_string()),
        Verdict::NeedsFile => match h1::of_zip(std::io::BufReader::new(body)) {
            Ok(got) if &got == expected => None,
            Ok(got) => Some(got.to_string()),
            Err(h1::Error::Zip(zip::result::ZipError::Io(e))) => return Err(e),
            Err(err) => Some(format!("no {} ({err})", expected.algorithm())),
        },
    })
}

/// Reads a file by offset (`pread`), leaving the descriptor's shared cursor
/// alone: the fill's file is also its readers', and a committed entry's
/// descriptor is shared by the hits that opened it.
pub(super) struct AtOffset<'f> {
    file: &'f std::fs::File,
    pos: u64,
    len: u64,
}

impl<'f> AtOffset<'f> {
    /// The first `len` bytes of `file`.
    pub(super) fn new(file: &'f std::fs::File, len: u64) -> AtOffset<'f> {
        AtOffset { file, pos: 0, len }
    }
}

impl std::io::Read for AtOffset<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let left = self.len.saturating_sub(self.pos);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for AtOffset<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            std::io::SeekFrom::Start(n) => Some(n),
            std::io::SeekFrom::End(d) => self.len.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.pos)
    }
}
