//! Raw HTTP/1.1 client-side helpers for tests that must see the bytes on the wire (framing,
//! truncation, resets), which a hyper client would hide or turn into errors.
//! Every read has a timeout, so a stalled peer fails the test instead of hanging it.
//! No connection management: callers own their streams.

use std::io;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::time::timeout;

/// Each single read may wait this long before the helper gives up.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A response head read off a raw connection, plus the bytes that arrived after it.
#[derive(Debug)]
pub struct RawHead {
    /// The status code.
    pub status: u16,
    /// Header names and values, in received order, as sent (names not lower-cased).
    pub headers: Vec<(String, String)>,
    /// Bytes read after the head (the start of the body, or of the next response).
    pub rest: Vec<u8>,
}

impl RawHead {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn read_some<R: AsyncRead + Unpin>(
    io: &mut R,
    chunk: &mut [u8],
) -> anyhow::Result<io::Result<usize>> {
    timeout(READ_TIMEOUT, io.read(chunk))
        .await
        .context("timed out reading from the peer")
}

/// Reads one response head; `buf` holds bytes already read (e.g. a previous `rest`).
pub async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
    mut buf: Vec<u8>,
) -> anyhow::Result<RawHead> {
    let mut chunk = [0u8; 4096];
    loop {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut slots);
        if let httparse::Status::Complete(len) = response.parse(&buf)? {
            let headers = response
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let status = response.code.context("a complete head has a status code")?;
            return Ok(RawHead {
                status,
                headers,
                rest: buf[len..].to_vec(),
            });
        }
        let n = read_some(io, &mut chunk).await??;
        ensure!(n > 0, "EOF before the response head was complete");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads until `buf` holds at least `len` bytes; EOF or an error before that fails.
pub async fn read_body<R: AsyncRead + Unpin>(
    io: &mut R,
    mut buf: Vec<u8>,
    len: usize,
) -> anyhow::Result<Vec<u8>> {
    let mut chunk = [0u8; 16 * 1024];
    while buf.len() < len {
        let n = read_some(io, &mut chunk).await??;
        ensure!(n > 0, "EOF after {} of {len} body bytes", buf.len());
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

/// Reads until EOF or a read error; returns `buf` plus what arrived, and how the stream ended
/// (`Ok(())` for a clean EOF, e.g. `Err(ConnectionReset)` for an RST).
pub async fn read_to_end<R: AsyncRead + Unpin>(
    io: &mut R,
    mut buf: Vec<u8>,
) -> anyhow::Result<(Vec<u8>, io::Result<()>)> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match read_some(io, &mut chunk).await? {
            Ok(0) => return Ok((buf, Ok(()))),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(err) => return Ok((buf, Err(err))),
        }
    }
}

/// Decodes a complete chunked body without trailers; returns the data and the number of
/// non-empty chunks. Fails on any framing error, including a missing last chunk.
pub fn dechunk(mut wire: &[u8]) -> anyhow::Result<(Vec<u8>, usize)> {
    let (mut data, mut chunks) = (Vec::new(), 0);
    loop {
        let line_end = wire
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk size line")?;
        let size = usize::from_str_radix(std::str::from_utf8(&wire[..line_end])?, 16)?;
        wire = &wire[line_end + 2..];
        if size == 0 {
            ensure!(wire == b"\r\n", "no trailers, then the end of the body");
            return Ok((data, chunks));
        }
        ensure!(wire.len() >= size + 2, "chunk of {size} bytes is cut short");
        data.extend_from_slice(&wire[..size]);
        ensure!(&wire[size..size + 2] == b"\r\n", "chunk ends with CRLF");
        wire = &wire[size + 2..];
        chunks += 1;
    }
}
