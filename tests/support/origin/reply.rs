//! `Reply`: what the test origin answers on one route, and `write`, which puts it on the wire.
//! Framing (Content-Length, chunked, close-delimited) and faults (truncate, reset, stall) are
//! written byte for byte here, which is why the origin does not use hyper's server.
//! This module neither parses requests nor owns sockets: `origin.rs` does both and carries out
//! the `Outcome` that `write` returns (FIN, RST, stall or keep-alive).

use std::io;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::StatusCode;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Body pieces are this large when the body is not throttled, so chunked replies have several chunks.
const PIECE: usize = 16 * 1024;
/// A throttled body is sent in pieces about this far apart.
const TICK: Duration = Duration::from_millis(10);
/// `Last-Modified` of every file reply (2023-11-14), fixed so that tests are reproducible.
const FILE_MTIME_SECS: u64 = 1_700_000_000;

/// What the origin sends for one request: status, headers, body, framing, pacing and an
/// optional fault. Built with `Reply::file`/`status`/`redirect`/`stall_headers`, then
/// adjusted with the chaining methods. Cloning is cheap (the body is `Bytes`).
/// A HEAD request gets the same head without a body; body faults then do not apply.
#[derive(Clone, Debug)]
pub struct Reply {
    status: StatusCode,
    body: Bytes,
    /// Headers set by the constructor (ETag, Location, ...), lower-case names.
    base: Vec<(String, String)>,
    /// `header`/`without_header` calls in order; `None` removes the header.
    overrides: Vec<(String, Option<String>)>,
    guess_content_type: bool,
    stall_headers: bool,
    framing: Framing,
    end: End,
    throttle: Option<u64>,
    first_byte_delay: Duration,
    /// Sent byte for byte instead of a head and body; see [`Reply::raw`].
    raw: Option<Bytes>,
}

#[derive(Clone, Copy, Debug)]
enum Framing {
    Length,
    Chunked,
    CloseDelimited,
}

/// How the body ends; the `usize` is the number of body bytes sent before the fault.
#[derive(Clone, Copy, Debug)]
enum End {
    Complete,
    Truncate(usize),
    Reset(usize),
    Stall(usize),
}

/// What the connection must do once `write` has returned.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The reply is complete; the next request may follow on this connection.
    KeepAlive,
    /// Send FIN (TLS: close_notify, then FIN) and close.
    Close,
    /// Close with SO_LINGER 0, so that the peer sees a TCP RST.
    Reset,
    /// Keep the connection open and send nothing until the origin stops.
    Stall,
}

/// The parts of a request that shape the reply.
pub(super) struct Ask<'a> {
    /// Path of the request-target, used to guess the Content-Type of files.
    pub path: &'a str,
    pub head_only: bool,
    /// The client asked to close (or the origin must close after this reply).
    pub close: bool,
}

impl Reply {
    /// 200 with `body`, `Content-Length`, a strong `ETag` (`"` + 16 hex digits of its SHA-256 + `"`),
    /// a fixed `Last-Modified`, and a `Content-Type` guessed from the request path
    /// (`application/octet-stream` when unknown).
    pub fn file(body: impl Into<Bytes>) -> Self {
        let body = body.into();
        let digest = hex::encode(Sha256::digest(&body));
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(FILE_MTIME_SECS);
        let mut reply = Self::new(StatusCode::OK, body);
        reply.base = vec![
            ("etag".into(), format!("\"{}\"", &digest[..16])),
            ("last-modified".into(), httpdate::fmt_http_date(mtime)),
        ];
        reply.guess_content_type = true;
        reply
    }

    /// `code` with a short `text/plain` body such as `404 Not Found\n` (no body for 1xx, 204, 304).
    /// Panics if `code` is not in 100..=999.
    pub fn status(code: u16) -> Self {
        let status = StatusCode::from_u16(code).expect("a test passes a valid status code");
        let mut reply = Self::new(status, reason_body(status));
        reply.base = vec![("content-type".into(), "text/plain".into())];
        reply
    }

    /// `code` (e.g. 301, 302, 307) with `Location: location` and a short text body.
    pub fn redirect(code: u16, location: &str) -> Self {
        let mut reply = Self::status(code);
        reply.base.push(("location".into(), location.into()));
        reply
    }

    /// Reads the request (it is recorded) and never answers; the connection stays open until
    /// the origin stops.
    pub fn stall_headers() -> Self {
        let mut reply = Self::status(200);
        reply.stall_headers = true;
        reply
    }

    /// Sends exactly `wire` (no head of its own, no framing, no Date), then closes cleanly (FIN),
    /// also for HEAD. For malformed responses that the other constructors cannot produce: an
    /// invalid status line, a header line without a colon, conflicting `Content-Length`s.
    /// `first_byte_delay` applies; the other chaining methods do not.
    pub fn raw(wire: impl Into<Bytes>) -> Self {
        let mut reply = Self::new(StatusCode::OK, Bytes::new());
        reply.raw = Some(wire.into());
        reply
    }

    fn new(status: StatusCode, body: Bytes) -> Self {
        Self {
            status,
            body,
            base: Vec::new(),
            overrides: Vec::new(),
            guess_content_type: false,
            stall_headers: false,
            framing: Framing::Length,
            end: End::Complete,
            throttle: None,
            first_byte_delay: Duration::ZERO,
            raw: None,
        }
    }

    /// Replaces the status code, keeping body and headers (e.g. a 500 or 206 with a file body).
    pub fn with_status(mut self, code: u16) -> Self {
        self.status = StatusCode::from_u16(code).expect("a test passes a valid status code");
        self
    }

    /// Sets header `name` to `value`, replacing the default and any earlier value of that name
    /// (case-insensitive). Works for framing headers too: `.header("content-length", "999")`
    /// announces a wrong length.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.overrides
            .push((name.to_ascii_lowercase(), Some(value.into())));
        self
    }

    /// Removes header `name` (default or set earlier), e.g. `.without_header("etag")`.
    pub fn without_header(mut self, name: &str) -> Self {
        self.overrides.push((name.to_ascii_lowercase(), None));
        self
    }

    /// Paces the body at about `bytes_per_sec` (pieces every ~10 ms), so the whole body takes
    /// about `len / bytes_per_sec` seconds. Combines with every framing and fault.
    pub fn throttle(mut self, bytes_per_sec: u64) -> Self {
        self.throttle = Some(bytes_per_sec.max(1));
        self
    }

    /// Waits `delay` after reading the request before sending the response head.
    pub fn first_byte_delay(mut self, delay: Duration) -> Self {
        self.first_byte_delay = delay;
        self
    }

    /// Sends the full framing headers, then only the first `n` body bytes, then a clean close
    /// (FIN; with TLS, close_notify first).
    pub fn truncate_after(mut self, n: usize) -> Self {
        self.end = End::Truncate(n);
        self
    }

    /// Sends the first `n` body bytes, then resets the connection (SO_LINGER 0, then close: RST).
    pub fn reset_after(mut self, n: usize) -> Self {
        self.end = End::Reset(n);
        self
    }

    /// Sends the first `n` body bytes, then sends nothing more while keeping the connection open
    /// until the origin stops.
    pub fn stall_after(mut self, n: usize) -> Self {
        self.end = End::Stall(n);
        self
    }

    /// `Transfer-Encoding: chunked` instead of `Content-Length`.
    pub fn chunked(mut self) -> Self {
        self.framing = Framing::Chunked;
        self
    }

    /// Neither `Content-Length` nor `Transfer-Encoding`; `Connection: close`, and the body ends
    /// when the origin closes the connection (RFC 9112 §6.3, rule 8).
    pub fn close_delimited(mut self) -> Self {
        self.framing = Framing::CloseDelimited;
        self
    }

    /// The body this reply sends when complete.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// 1xx, 204 and 304 responses have no body and no Content-Length (RFC 9110 §8.6).
    fn bodiless(&self) -> bool {
        self.status.is_informational()
            || self.status == StatusCode::NO_CONTENT
            || self.status == StatusCode::NOT_MODIFIED
    }

    fn head(&self, ask: &Ask<'_>) -> Vec<u8> {
        let mut headers: Vec<(String, String)> =
            vec![("date".into(), httpdate::fmt_http_date(SystemTime::now()))];
        match self.framing {
            _ if self.bodiless() => {}
            Framing::Length => headers.push(("content-length".into(), self.body.len().to_string())),
            Framing::Chunked => headers.push(("transfer-encoding".into(), "chunked".into())),
            Framing::CloseDelimited => {}
        }
        headers.extend(self.base.iter().cloned());
        if self.guess_content_type && !headers.iter().any(|(n, _)| n == "content-type") {
            let mime = mime_guess::from_path(ask.path).first_or_octet_stream();
            headers.push(("content-type".into(), mime.to_string()));
        }
        if ask.close || matches!(self.framing, Framing::CloseDelimited) {
            headers.push(("connection".into(), "close".into()));
        }
        for (name, value) in &self.overrides {
            headers.retain(|(n, _)| n != name);
            if let Some(value) = value {
                headers.push((name.clone(), value.clone()));
            }
        }
        let reason = self.status.canonical_reason().unwrap_or("Unknown");
        let mut head = format!("HTTP/1.1 {} {reason}\r\n", self.status.as_u16());
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        head.into_bytes()
    }
}

/// Writes `reply` for one request and says what the connection must do next.
/// An `Err` means the peer went away; the caller just drops the connection.
pub(super) async fn write<W>(io: &mut W, reply: &Reply, ask: &Ask<'_>) -> io::Result<Outcome>
where
    W: AsyncWrite + Unpin,
{
    if reply.stall_headers {
        return Ok(Outcome::Stall);
    }
    if !reply.first_byte_delay.is_zero() {
        tokio::time::sleep(reply.first_byte_delay).await;
    }
    if let Some(wire) = &reply.raw {
        io.write_all(wire).await?;
        io.flush().await?;
        return Ok(Outcome::Close);
    }
    io.write_all(&reply.head(ask)).await?;
    let close_delimited = matches!(reply.framing, Framing::CloseDelimited);
    if ask.head_only || reply.bodiless() {
        io.flush().await?;
        return Ok(if close_delimited {
            Outcome::Close
        } else {
            Outcome::KeepAlive
        });
    }
    let limit = match reply.end {
        End::Complete => reply.body.len(),
        End::Truncate(n) | End::Reset(n) | End::Stall(n) => n.min(reply.body.len()),
    };
    let chunked = matches!(reply.framing, Framing::Chunked);
    write_body(io, &reply.body[..limit], chunked, reply.throttle).await?;
    if chunked && matches!(reply.end, End::Complete) {
        io.write_all(b"0\r\n\r\n").await?;
    }
    io.flush().await?;
    Ok(match reply.end {
        End::Complete if close_delimited => Outcome::Close,
        End::Complete => Outcome::KeepAlive,
        End::Truncate(_) => Outcome::Close,
        End::Reset(_) => Outcome::Reset,
        End::Stall(_) => Outcome::Stall,
    })
}

/// Writes `body` in pieces, each framed as one chunk if `chunked`; with a throttle the pieces
/// are paced against a fixed start so that sleep overshoot does not add up.
async fn write_body<W>(
    io: &mut W,
    body: &[u8],
    chunked: bool,
    throttle: Option<u64>,
) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let (piece, interval) = match throttle {
        Some(rate) => {
            let per_tick = u128::from(rate) * TICK.as_millis() / 1000;
            let piece = usize::try_from(per_tick).unwrap_or(usize::MAX).max(1);
            (piece, Duration::from_secs_f64(piece as f64 / rate as f64))
        }
        None => (PIECE, Duration::ZERO),
    };
    let start = Instant::now();
    for (i, data) in body.chunks(piece).enumerate() {
        if throttle.is_some() {
            let due = interval.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
            tokio::time::sleep_until(start + due).await;
        }
        if chunked {
            io.write_all(format!("{:x}\r\n", data.len()).as_bytes())
                .await?;
            io.write_all(data).await?;
            io.write_all(b"\r\n").await?;
        } else {
            io.write_all(data).await?;
        }
        if throttle.is_some() {
            io.flush().await?;
        }
    }
    Ok(())
}

fn reason_body(status: StatusCode) -> Bytes {
    let reason = status.canonical_reason().unwrap_or("Unknown");
    Bytes::from(format!("{} {reason}\n", status.as_u16()))
}
