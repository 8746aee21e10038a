//! `Origin`: a real upstream HTTP/1.1 server on `127.0.0.1:0` for integration tests, built
//! linkerd-style (`Origin::builder().route(..).start().await`), optionally over TLS.
//! It parses request heads itself and writes raw responses (see `reply.rs`), so tests can inject
//! byte-exact faults; it records every request and owns every task it spawns, which `stop()` or
//! drop ends. It never honours Range or conditional requests: it always sends the full body.

mod reply;

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Method;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::reply::Reply;
use self::reply::{Ask, Outcome};
use super::tls::TlsIdentity;

/// Larger request heads are answered with 431 and the connection is closed.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a clean close, unread input is drained this long so the close is a FIN, not an RST.
const LINGER: Duration = Duration::from_secs(1);
/// Pause between the last body bytes and an RST, so the peer reads them before the reset.
const RESET_PAUSE: Duration = Duration::from_millis(20);

/// A running test origin. All of its tasks (listener and connections) are owned by it:
/// `stop()` ends them and waits; dropping it cancels them, so they end within one poll.
/// Counters and records may be read from any task at any time.
#[derive(Debug)]
pub struct Origin {
    addr: SocketAddr,
    tls: Option<TlsIdentity>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

/// Configures an [`Origin`]; `start` binds and serves. Routes match the request-target's path
/// (the part before `?`) exactly, with percent-encoding as received; unknown paths get the
/// fallback, by default `Reply::status(404)`.
#[derive(Debug)]
pub struct OriginBuilder {
    routes: HashMap<String, Reply>,
    firsts: HashMap<String, (usize, Reply)>,
    fallback: Reply,
    tls: Option<TlsIdentity>,
    keep_alive: Option<Duration>,
    close_reused: bool,
    bind: SocketAddr,
    require_auth: Option<String>,
}

/// One request as the origin received it, recorded when its head was complete.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The request method.
    pub method: Method,
    /// The request-target exactly as received (percent-encoding and query preserved).
    pub target: String,
    /// The request headers, in received order per name.
    pub headers: HeaderMap,
    /// When the request head had fully arrived.
    pub at: Instant,
}

impl Recorded {
    /// The path of the request-target: before `?`, and without scheme and authority if the
    /// target was in absolute form.
    pub fn path(&self) -> &str {
        target_path(&self.target)
    }
}

#[derive(Debug)]
struct Shared {
    routes: HashMap<String, Reply>,
    firsts: HashMap<String, (usize, Reply)>,
    fallback: Reply,
    keep_alive: Option<Duration>,
    close_reused: bool,
    require_auth: Option<String>,
    requests: Mutex<Vec<Recorded>>,
    connections: AtomicUsize,
}

impl Shared {
    fn requests(&self) -> MutexGuard<'_, Vec<Recorded>> {
        // A test that panicked while holding the lock must not hide the records from others.
        self.requests
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl OriginBuilder {
    /// Serves `body` at `path` as `Reply::file(body)`.
    pub fn file(self, path: &str, body: impl Into<Bytes>) -> Self {
        self.route(path, Reply::file(body))
    }

    /// Answers requests for exactly `path` with `reply`; a later route for the same path wins.
    pub fn route(mut self, path: &str, reply: Reply) -> Self {
        self.routes.insert(path.to_string(), reply);
        self
    }

    /// Answers the first `n` requests for exactly `path` with `reply`, and later ones with the
    /// path's route (or the fallback): an upstream whose first attempts fail, say.
    pub fn route_first(mut self, path: &str, n: usize, reply: Reply) -> Self {
        self.firsts.insert(path.to_string(), (n, reply));
        self
    }

    /// Answers requests for paths without a route (default: `Reply::status(404)`).
    pub fn fallback(mut self, reply: Reply) -> Self {
        self.fallback = reply;
        self
    }

    /// Closes a connection (FIN) that waits longer than `idle` for its next request head, as
    /// real servers do; without it, idle keep-alive connections stay open until the origin stops.
    pub fn keep_alive_timeout(mut self, idle: Duration) -> Self {
        self.keep_alive = Some(idle);
        self
    }

    /// Answers only the first request of each connection: a later request on a kept-alive
    /// connection is read (and recorded), then the connection is closed (FIN) without an
    /// answer, as when a server's keep-alive timeout fires just as a request arrives.
    pub fn close_reused_connections(mut self) -> Self {
        self.close_reused = true;
        self
    }

    /// Listens on `addr` instead of `127.0.0.1:0` (e.g. `127.0.0.2` with the
    /// port of another origin, so that only the address tells them apart).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Answers 401 (with `WWW-Authenticate`) to every request whose
    /// `Authorization` is not exactly `value`, as a private index does.
    pub fn require_authorization(mut self, value: &str) -> Self {
        self.require_auth = Some(value.to_string());
        self
    }

    /// Serves HTTPS with `identity` instead of plain HTTP.
    pub fn tls(mut self, identity: TlsIdentity) -> Self {
        self.tls = Some(identity);
        self
    }

    /// Binds `127.0.0.1:0` (or the `bind` address) and starts serving. Panics if binding fails.
    pub async fn start(self) -> Origin {
        let listener = TcpListener::bind(self.bind)
            .await
            .unwrap_or_else(|e| panic!("binding {}: {e}", self.bind));
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let shared = Arc::new(Shared {
            routes: self.routes,
            firsts: self.firsts,
            fallback: self.fallback,
            keep_alive: self.keep_alive,
            close_reused: self.close_reused,
            require_auth: self.require_auth,
            requests: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
        });
        let acceptor = self
            .tls
            .as_ref()
            .map(|identity| TlsAcceptor::from(identity.server_config()));
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let accept = accept_loop(
            listener,
            shared.clone(),
            acceptor,
            cancel.clone(),
            tracker.clone(),
        );
        tracker.spawn(cancel.clone().run_until_cancelled_owned(accept));
        Origin {
            addr,
            tls: self.tls,
            shared,
            cancel,
            tracker,
        }
    }
}

impl Origin {
    /// A builder with no routes, fallback `Reply::status(404)` and plain HTTP.
    pub fn builder() -> OriginBuilder {
        OriginBuilder {
            routes: HashMap::new(),
            firsts: HashMap::new(),
            fallback: Reply::status(404),
            tls: None,
            keep_alive: None,
            close_reused: false,
            bind: (Ipv4Addr::LOCALHOST, 0).into(),
            require_auth: None,
        }
    }

    /// The bound address (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, or `https://..` with TLS; no trailing slash.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// `url()` followed by `path_and_query`, which should start with `/`.
    pub fn url_for(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.url())
    }

    /// The TLS identity the origin serves with, if any (its `ca_pem()` is what clients trust).
    pub fn tls_identity(&self) -> Option<&TlsIdentity> {
        self.tls.as_ref()
    }

    /// Number of requests so far whose path (see [`Recorded::path`]) equals `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.shared
            .requests()
            .iter()
            .filter(|r| r.path() == path)
            .count()
    }

    /// Number of requests so far, on any path.
    pub fn total_hits(&self) -> usize {
        self.shared.requests().len()
    }

    /// A copy of every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests().clone()
    }

    /// Number of TCP connections accepted so far (shows whether clients reuse connections).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Closes the listener and every open connection, and waits until all tasks have ended.
    /// Afterwards connecting to `addr()` is refused. Idempotent; records stay readable.
    pub async fn stop(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        // Tasks are wrapped in `run_until_cancelled`, so they drop their sockets on their next poll.
        self.cancel.cancel();
        self.tracker.close();
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    acceptor: Option<TlsAcceptor>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // E.g. EMFILE: back off instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        // Small paced writes must leave at once, not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let conn = connection(stream, shared.clone(), acceptor.clone());
        tracker.spawn(cancel.clone().run_until_cancelled_owned(conn));
    }
}

/// A byte stream the origin serves on, with access to the TCP socket underneath (for SO_LINGER).
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {
    fn tcp(&self) -> &TcpStream;
}

impl Transport for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Transport for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

async fn connection(stream: TcpStream, shared: Arc<Shared>, acceptor: Option<TlsAcceptor>) {
    match acceptor {
        None => serve(stream, &shared).await,
        Some(acceptor) => {
            if let Ok(Ok(tls)) = timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                serve(tls, &shared).await;
            }
        }
    }
}

/// Serves requests on one connection until a reply ends it, the peer closes, or an error.
async fn serve<S: Transport>(mut io: S, shared: &Shared) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    for served in 0usize.. {
        let idle = shared.keep_alive.filter(|_| buf.is_empty());
        let next = read_request(&mut io, &mut buf);
        let read = match idle {
            Some(idle) => timeout(idle, next).await.ok(),
            None => Some(next.await),
        };
        let Some(read) = read else {
            return close_cleanly(io).await;
        };
        let request = match read {
            Ok(Some(Parsed::Request(request))) => request,
            Ok(None) | Err(_) => return,
            Ok(Some(Parsed::Bad(reply))) => {
                let ask = Ask {
                    path: "/",
                    head_only: false,
                    close: true,
                };
                if reply::write(&mut io, &reply, &ask).await.is_ok() {
                    close_cleanly(io).await;
                }
                return;
            }
        };
        let Request {
            recorded,
            body_len,
            chunked_body,
            close,
        } = request;
        if discard(&mut io, &mut buf, body_len).await.is_err() {
            return;
        }
        let path = recorded.path().to_string();
        let head_only = recorded.method == Method::HEAD;
        let authorized = shared.require_auth.as_ref().is_none_or(|required| {
            recorded
                .headers
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes())
                == Some(required.as_bytes())
        });
        let nth = {
            let mut requests = shared.requests();
            requests.push(recorded);
            requests.iter().filter(|r| r.path() == path).count()
        };
        if shared.close_reused && served > 0 {
            return close_cleanly(io).await;
        }
        let denied = Reply::status(401).header("www-authenticate", "Basic realm=\"test\"");
        let reply = if !authorized {
            &denied
        } else {
            match shared.firsts.get(&path) {
                Some((n, first)) if nth <= *n => first,
                _ => shared.routes.get(&path).unwrap_or(&shared.fallback),
            }
        };
        // A chunked request body is not parsed, so the connection cannot be reused after it.
        let close = close || chunked_body;
        let ask = Ask {
            path: &path,
            head_only,
            close,
        };
        match reply::write(&mut io, reply, &ask).await {
            Err(_) => return,
            Ok(Outcome::KeepAlive) if !close => continue,
            Ok(Outcome::KeepAlive | Outcome::Close) => return close_cleanly(io).await,
            Ok(Outcome::Reset) => {
                tokio::time::sleep(RESET_PAUSE).await;
                // Linger 0 turns close() into an RST (RFC 9293 §3.6.1's "abort").
                let _ = socket2::SockRef::from(io.tcp()).set_linger(Some(Duration::ZERO));
                return;
            }
            // Ends when the origin stops: the task is cancelled and drops the socket.
            Ok(Outcome::Stall) => return std::future::pending().await,
        }
    }
}

/// Sends FIN (TLS: close_notify first) and drains input for a while, because closing a socket
/// with unread input sends an RST that could discard the reply at the peer (RFC 9112 §9.6).
async fn close_cleanly<S: Transport>(mut io: S) {
    if io.shutdown().await.is_err() {
        return;
    }
    let _ = timeout(LINGER, async {
        let mut scratch = [0u8; 4096];
        while matches!(io.read(&mut scratch).await, Ok(n) if n > 0) {}
    })
    .await;
}

struct Request {
    recorded: Recorded,
    body_len: u64,
    chunked_body: bool,
    close: bool,
}

enum Parsed {
    Request(Request),
    /// The head was malformed or too large; answer with this and close.
    Bad(Reply),
}

/// Reads one request head from `buf` and `io`; `Ok(None)` on a clean EOF between requests.
async fn read_request<S: Transport>(io: &mut S, buf: &mut BytesMut) -> io::Result<Option<Parsed>> {
    loop {
        if !buf.is_empty() {
            match parse_head(buf) {
                Some(parsed) => return Ok(Some(parsed)),
                None if buf.len() > MAX_HEAD => return Ok(Some(Parsed::Bad(Reply::status(431)))),
                None => {}
            }
        }
        if io.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
    }
}

/// Parses a complete head off the front of `buf`; `None` if more bytes are needed.
fn parse_head(buf: &mut BytesMut) -> Option<Parsed> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return None,
        Err(httparse::Error::TooManyHeaders) => return Some(Parsed::Bad(Reply::status(431))),
        Err(_) => return Some(Parsed::Bad(Reply::status(400))),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Some(Parsed::Bad(Reply::status(400)));
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Some(Parsed::Bad(Reply::status(400)));
    };
    let mut headers = HeaderMap::new();
    for header in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.name.as_bytes()),
            HeaderValue::from_bytes(header.value),
        ) else {
            return Some(Parsed::Bad(Reply::status(400)));
        };
        headers.append(name, value);
    }
    let recorded = Recorded {
        method,
        target: target.to_string(),
        headers,
        at: Instant::now(),
    };
    buf.advance(len);

    let has_token = |name: http::HeaderName, token: &str| {
        recorded.headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .unwrap_or("")
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    // HTTP/1.0 closes unless it asks for keep-alive; 1.1 keeps alive unless it asks to close.
    let close = if version == 0 {
        !has_token(http::header::CONNECTION, "keep-alive")
    } else {
        has_token(http::header::CONNECTION, "close")
    };
    let chunked_body = recorded
        .headers
        .contains_key(http::header::TRANSFER_ENCODING);
    let body_len = match recorded.headers.get(http::header::CONTENT_LENGTH) {
        None => 0,
        Some(value) => match value.to_str().ok().and_then(|v| v.trim().parse().ok()) {
            Some(len) => len,
            None => return Some(Parsed::Bad(Reply::status(400))),
        },
    };
    Some(Parsed::Request(Request {
        recorded,
        body_len: if chunked_body { 0 } else { body_len },
        chunked_body,
        close,
    }))
}

/// Reads and drops a request body of `len` bytes (the origin never looks at request bodies).
async fn discard<S: Transport>(io: &mut S, buf: &mut BytesMut, len: u64) -> io::Result<()> {
    let buffered = usize::try_from(len).unwrap_or(usize::MAX).min(buf.len());
    buf.advance(buffered);
    let mut rest = len - buffered as u64;
    let mut scratch = [0u8; 8192];
    while rest > 0 {
        let want = usize::try_from(rest)
            .unwrap_or(usize::MAX)
            .min(scratch.len());
        let n = io.read(&mut scratch[..want]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        rest -= n as u64;
    }
    Ok(())
}

/// The path of a request-target: before `?`; for absolute form, after scheme and authority.
fn target_path(target: &str) -> &str {
    let path = target.split('?').next().unwrap_or(target);
    match path.find("://") {
        Some(i) if !path.starts_with('/') => {
            let rest = &path[i + 3..];
            rest.find('/').map_or("/", |slash| &rest[slash..])
        }
        _ => path,
    }
}
