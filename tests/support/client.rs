//! Test clients: a hyper HTTP/1 client that exposes status, headers, body and
//! how the body ended; raw socket exchanges for requests hyper will not send;
//! and the real `curl` and `wget` binaries.

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Default limit for any one exchange in tests.
pub const LIMIT: Duration = Duration::from_secs(20);

/// A response read to its end (or to its failure).
#[derive(Debug)]
pub struct Got {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The bytes received.
    pub body: Vec<u8>,
    /// `None` when the body ended cleanly, else the error that ended it.
    pub error: Option<String>,
    /// Time from sending the request to the response head.
    pub head_after: Duration,
}

impl Got {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `x-cache` value.
    pub fn cache(&self) -> &str {
        self.header("x-cache").unwrap_or("-")
    }
}

fn addr_of(url: &str) -> (SocketAddr, String) {
    let uri: http::Uri = url.parse().expect("test URL");
    let addr = uri
        .authority()
        .expect("authority")
        .as_str()
        .parse()
        .expect("ip:port authority");
    (
        addr,
        uri.path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or("/".into()),
    )
}

/// Opens a response: head received, body not yet read.
pub async fn open(
    url: &str,
    headers: &[(&str, &str)],
) -> (http::response::Parts, Incoming, Duration) {
    let (addr, path) = addr_of(url);
    open_at(addr, &path, "GET", headers).await
}

/// Opens a response for `method target` sent to `addr`.
pub async fn open_at(
    addr: SocketAddr,
    target: &str,
    method: &str,
    headers: &[(&str, &str)],
) -> (http::response::Parts, Incoming, Duration) {
    tokio::time::timeout(LIMIT, async {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut builder = Request::builder().method(method).uri(target);
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            builder = builder.header("host", addr.to_string());
        }
        for (n, v) in headers {
            builder = builder.header(*n, *v);
        }
        let started = Instant::now();
        let response = sender
            .send_request(builder.body(Empty::<Bytes>::new()).expect("request"))
            .await
            .expect("response head");
        let head_after = started.elapsed();
        let (parts, body) = response.into_parts();
        (parts, body, head_after)
    })
    .await
    .expect("response head in time")
}

/// Reads a body to its end, recording how it ended.
pub async fn read_body(mut body: Incoming) -> (Vec<u8>, Option<String>) {
    let mut out = Vec::new();
    let result = tokio::time::timeout(LIMIT, async {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        out.extend_from_slice(&data);
                    }
                }
                Err(err) => return Some(err.to_string()),
            }
        }
        None
    })
    .await;
    match result {
        Ok(error) => (out, error),
        Err(_) => (out, Some("timed out".into())),
    }
}

/// Sends `method url` with extra headers; reads the whole body.
pub async fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Got {
    let (addr, path) = addr_of(url);
    let (parts, body, head_after) = open_at(addr, &path, method, headers).await;
    let (body, error) = read_body(body).await;
    Got {
        status: parts.status,
        headers: parts.headers,
        body,
        error,
        head_after,
    }
}

/// GET `url` with extra headers.
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Got {
    request("GET", url, headers).await
}

/// GET `url`.
pub async fn get(url: &str) -> Got {
    request("GET", url, &[]).await
}

/// HEAD `url`.
pub async fn head(url: &str) -> Got {
    request("HEAD", url, &[]).await
}

/// Writes `request` bytes to `addr` and reads one response: its head and a
/// Content-Length body, or until the server closes (at most 5 s).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
            if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n".as_slice()) {
                let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if let Some(len) = len {
                    if out.len() >= end + 4 + len {
                        return;
                    }
                }
            }
        }
    })
    .await;
    out
}

/// The status code of a raw HTTP response.
pub fn raw_status(response: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Runs the real curl; returns (exit code, stdout bytes, stderr text).
pub async fn curl(args: &[&str]) -> (i32, Vec<u8>, String) {
    run("curl", args).await
}

/// Runs the real wget; returns (exit code, stdout bytes, stderr text).
pub async fn wget(args: &[&str]) -> (i32, Vec<u8>, String) {
    run("wget", args).await
}

async fn run(program: &str, args: &[&str]) -> (i32, Vec<u8>, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(program)
            .args(args)
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("no_proxy")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{program} finished in time"))
    .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    (
        output.status.code().unwrap_or(-1),
        output.stdout,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Deterministic pseudo-random bytes (xorshift), so bodies are incompressible and checkable.
pub fn bytes_of(len: usize, seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Lower-case hex sha256.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// The versions a RubyGems compact-index `/info/NAME` document at `url`
/// lists (the first word of each line after the `---` header); asserts a 200.
pub async fn info_versions(url: &str) -> std::collections::BTreeSet<String> {
    let got = get_with(url, &[]).await;
    assert_eq!(got.status, 200, "{url}");
    String::from_utf8_lossy(&got.body)
        .lines()
        .skip(1)
        .filter_map(|l| l.split(' ').next().map(str::to_string))
        .collect()
}
