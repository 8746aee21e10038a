//! The in-bench load generator: a minimal blocking HTTP/1.1 GET client (one request per
//! connection) that timestamps the first response byte and streams the body through a
//! fixed 256 KiB buffer, optionally comparing it byte for byte with the expected file.
//! Every read is bounded by the request's deadline.

use anyhow::{anyhow, bail, Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Barrier;
use std::time::{Duration, Instant};

const BUF_SIZE: usize = 256 * 1024;

/// One completed GET.
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The `X-Cache` header, empty when absent.
    pub x_cache: String,
    /// Taken just before connecting.
    pub started: Instant,
    /// When the first byte of the status line arrived (curl's `time_starttransfer`).
    pub first_byte: Instant,
    /// When the last body byte arrived.
    pub finished: Instant,
    /// Body bytes received.
    pub body_len: u64,
    /// With an expected body: whether the body was byte-identical to it.
    pub body_ok: Option<bool>,
}

impl Response {
    /// Time to first byte.
    pub fn ttfb(&self) -> Duration {
        self.first_byte - self.started
    }

    /// Whether `X-Cache` says HIT (nginx and package-cache spell the case differently).
    pub fn is_hit(&self) -> bool {
        self.x_cache.eq_ignore_ascii_case("hit")
    }

    /// Fails unless the status is 200, the length is `len` and (if checked) the body matched.
    pub fn expect_ok(&self, len: u64) -> Result<()> {
        if self.status != 200 {
            bail!("status {} (x-cache {:?})", self.status, self.x_cache);
        }
        if self.body_len != len {
            bail!("body has {} bytes, expected {len}", self.body_len);
        }
        if self.body_ok == Some(false) {
            bail!("body differs from the upstream file");
        }
        Ok(())
    }
}

/// GETs `path` from `addr`, failing if the whole exchange takes longer than `timeout`.
pub fn get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    expected: Option<&[u8]>,
) -> Result<Response> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: package-cache-bench\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes())?;
    let mut conn = Conn {
        stream,
        buf: vec![0; BUF_SIZE],
        start: 0,
        end: 0,
        deadline,
        first_byte: None,
    };

    let status_line = conn.line()?;
    let first_byte = conn.first_byte.expect("a line was read, so a byte arrived");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let (mut length, mut chunked, mut x_cache) = (None, false, String::new());
    loop {
        let line = conn.line()?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| anyhow!("bad header line {line:?}"))?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = Some(value.parse::<u64>().context("content-length")?),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "x-cache" => x_cache = value.to_string(),
            _ => {}
        }
    }

    let mut check = expected.map(|e| BodyCheck {
        expected: e,
        offset: 0,
        ok: true,
    });
    let mut sink = |chunk: &[u8]| {
        if let Some(c) = check.as_mut() {
            c.feed(chunk);
        }
    };
    let body_len = if chunked {
        conn.chunked(&mut sink)?
    } else if let Some(n) = length {
        conn.exact(n, &mut sink)?;
        n
    } else {
        conn.until_eof(&mut sink)?
    };
    Ok(Response {
        status,
        x_cache,
        started,
        first_byte,
        finished: Instant::now(),
        body_len,
        body_ok: check.map(|c| c.ok && c.offset == c.expected.len()),
    })
}

/// `clients` concurrent GETs of one path, released together by a barrier.
pub fn get_many(
    clients: usize,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    expected: Option<&[u8]>,
) -> Vec<Result<Response>> {
    let barrier = Barrier::new(clients);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    get(addr, path, timeout, expected)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("client thread panicked")))
            })
            .collect()
    })
}

/// Compares a streamed body with the expected bytes.
struct BodyCheck<'a> {
    expected: &'a [u8],
    offset: usize,
    ok: bool,
}

impl BodyCheck<'_> {
    fn feed(&mut self, chunk: &[u8]) {
        let end = self.offset + chunk.len();
        if self.ok && self.expected.get(self.offset..end) != Some(chunk) {
            self.ok = false;
        }
        self.offset = end;
    }
}

/// A connection with a read buffer; `buf[start..end]` holds unconsumed bytes.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    deadline: Instant,
    first_byte: Option<Instant>,
}

impl Conn {
    /// Reads more bytes into the buffer; returns how many (0 at end of stream).
    fn fill(&mut self) -> Result<usize> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.end == self.buf.len() {
            bail!("response line longer than {BUF_SIZE} bytes");
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("response not complete before the deadline");
        }
        self.stream.set_read_timeout(Some(left))?;
        let n = self
            .stream
            .read(&mut self.buf[self.end..])
            .context("reading the response")?;
        if n > 0 && self.first_byte.is_none() {
            self.first_byte = Some(Instant::now());
        }
        self.end += n;
        Ok(n)
    }

    fn line(&mut self) -> Result<String> {
        loop {
            if let Some(i) = self.buf[self.start..self.end]
                .iter()
                .position(|&b| b == b'\n')
            {
                let raw = &self.buf[self.start..self.start + i];
                let line = String::from_utf8_lossy(raw)
                    .trim_end_matches('\r')
                    .to_string();
                self.start += i + 1;
                return Ok(line);
            }
            if self.fill()? == 0 {
                bail!("connection closed inside the response head");
            }
        }
    }

    fn exact(&mut self, mut n: u64, sink: &mut impl FnMut(&[u8])) -> Result<()> {
        while n > 0 {
            if self.start == self.end && self.fill()? == 0 {
                bail!("connection closed with {n} body bytes missing");
            }
            let k = ((self.end - self.start) as u64).min(n) as usize;
            sink(&self.buf[self.start..self.start + k]);
            self.start += k;
            n -= k as u64;
        }
        Ok(())
    }

    fn until_eof(&mut self, sink: &mut impl FnMut(&[u8])) -> Result<u64> {
        let mut total = 0;
        loop {
            if self.start == self.end && self.fill()? == 0 {
                return Ok(total);
            }
            sink(&self.buf[self.start..self.end]);
            total += (self.end - self.start) as u64;
            self.start = self.end;
        }
    }

    fn chunked(&mut self, sink: &mut impl FnMut(&[u8])) -> Result<u64> {
        let mut total = 0;
        loop {
            let line = self.line()?;
            let size_hex = line.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(size_hex, 16)
                .with_context(|| format!("chunk size {line:?}"))?;
            if size == 0 {
                while !self.line()?.is_empty() {}
                return Ok(total);
            }
            self.exact(size, sink)?;
            total += size;
            if !self.line()?.is_empty() {
                bail!("chunk data not followed by CRLF");
            }
        }
    }
}
