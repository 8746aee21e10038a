//! `Site`: a real static upstream for the client tests (pip, gem/bundler, wget). It serves a
//! directory over HTTP/1.1 on `IP:0` (127.0.0.1, or 127.0.0.2 for a second "files host") with
//! PEP 691 negotiation for `dir/` pages, ETag / Last-Modified and 304s, single byte ranges, and a
//! request log. Files are read on every request, so tests may change them between requests.
//! `stop()` closes the listener and every connection (peers then see connection refused);
//! `restart()` listens on the same address again. It does not follow `..` out of its root.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Lower-case hex MD5 of `data` (rubygems.org's ETag for compact-index files).
pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

/// The PEP 691 JSON media type.
pub const PYPI_JSON: &str = "application/vnd.pypi.simple.v1+json";

/// How a [`Site`] makes ETags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ETags {
    /// `"<md5 hex of the body>"`, as rubygems.org sends for `/versions` and `/info/*`.
    Md5,
    /// A strong tag derived from the body's sha256 (not an MD5: bundler would notice).
    Strong,
}

/// One request as the site answered it.
#[derive(Clone, Debug)]
pub struct Logged {
    /// `GET` or `HEAD` (others are answered 405).
    pub method: String,
    /// The path, percent-encoded as received, without the query.
    pub path: String,
    /// Selected request headers (absent ones are `None`).
    pub user_agent: Option<String>,
    /// The `Accept` header.
    pub accept: Option<String>,
    /// The `Range` header.
    pub range: Option<String>,
    /// The `If-None-Match` header.
    pub if_none_match: Option<String>,
    /// The `If-Modified-Since` header.
    pub if_modified_since: Option<String>,
    /// The `Cache-Control` header.
    pub cache_control: Option<String>,
    /// The status sent.
    pub status: u16,
    /// The `Content-Type` sent, if any.
    pub content_type: Option<String>,
}

impl Logged {
    /// The User-Agent, or "".
    pub fn ua(&self) -> &str {
        self.user_agent.as_deref().unwrap_or("")
    }
}

/// A running static site; see the module docs. Dropping it cancels its tasks.
#[derive(Debug)]
pub struct Site {
    addr: SocketAddr,
    shared: Arc<Shared>,
    running: Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

#[derive(Debug)]
struct Shared {
    root: PathBuf,
    etags: ETags,
    /// `Content-Encoding` for `dir/` pages, sent whatever the client accepts.
    coded_pages: Option<&'static str>,
    log: Mutex<Vec<Logged>>,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, Vec<Logged>> {
        self.log.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

impl Site {
    /// Serves `root` on `ip:0` with strong ETags.
    pub async fn start(root: &Path, ip: &str) -> Site {
        Site::start_with(root, ip, ETags::Strong).await
    }

    /// Serves `root` on `ip:0` with its `dir/` pages (simple-index pages)
    /// content-coded with `coding` (`gzip`, `deflate` or `br`) whatever the
    /// client's `Accept-Encoding`, as an object store serving pre-compressed
    /// files does. Other files are sent as they are.
    pub async fn start_coded(root: &Path, ip: &str, coding: &'static str) -> Site {
        Site::start_inner(root, ip, ETags::Strong, Some(coding)).await
    }

    /// Serves `root` on `ip:0` with the given ETag style.
    pub async fn start_with(root: &Path, ip: &str, etags: ETags) -> Site {
        Site::start_inner(root, ip, etags, None).await
    }

    async fn start_inner(
        root: &Path,
        ip: &str,
        etags: ETags,
        coded_pages: Option<&'static str>,
    ) -> Site {
        let ip: IpAddr = ip.parse().expect("an IP address");
        let listener = TcpListener::bind((ip, 0)).await.expect("bind site");
        let addr = listener.local_addr().expect("bound address");
        let shared = Arc::new(Shared {
            root: root.to_path_buf(),
            etags,
            coded_pages,
            log: Mutex::new(Vec::new()),
        });
        let running = serve(listener, shared.clone());
        Site {
            addr,
            shared,
            running: Mutex::new(Some(running)),
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The directory served.
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// Every request so far, in order.
    pub fn log(&self) -> Vec<Logged> {
        self.shared.log().clone()
    }

    /// Requests so far whose path is `path`.
    pub fn requests_for(&self, path: &str) -> Vec<Logged> {
        self.shared
            .log()
            .iter()
            .filter(|l| l.path == path)
            .cloned()
            .collect()
    }

    /// Forgets the log so far.
    pub fn clear_log(&self) {
        self.shared.log().clear();
    }

    /// Closes the listener and every connection and waits for their tasks. Idempotent.
    pub async fn stop(&self) {
        let running = self.running.lock().expect("site state").take();
        if let Some(running) = running {
            running.cancel.cancel();
            running.tracker.close();
            tokio::time::timeout(Duration::from_secs(10), running.tracker.wait())
                .await
                .expect("site tasks end");
        }
    }

    /// Listens on the same address again after `stop()` (a no-op while running).
    pub async fn restart(&self) {
        if self.running.lock().expect("site state").is_some() {
            return;
        }
        let listener = TcpListener::bind(self.addr).await.expect("rebind site");
        let running = serve(listener, self.shared.clone());
        *self.running.lock().expect("site state") = Some(running);
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Some(running) = self.running.lock().ok().and_then(|mut r| r.take()) {
            running.cancel.cancel();
            running.tracker.close();
        }
    }
}

fn serve(listener: TcpListener, shared: Arc<Shared>) -> Running {
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (token, tasks) = (cancel.clone(), tracker.clone());
    tracker.spawn(cancel.clone().run_until_cancelled_owned(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let shared = shared.clone();
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            // Dropping the connection future (on cancel) closes the socket.
            tasks.spawn(token.clone().run_until_cancelled_owned(conn));
        }
    }));
    Running { cancel, tracker }
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let response = respond(shared, &req).await;
    let text = |h: &HeaderMap, name| {
        h.get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let headers = req.headers();
    shared.log().push(Logged {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        user_agent: text(headers, header::USER_AGENT),
        accept: text(headers, header::ACCEPT),
        range: text(headers, header::RANGE),
        if_none_match: text(headers, header::IF_NONE_MATCH),
        if_modified_since: text(headers, header::IF_MODIFIED_SINCE),
        cache_control: text(headers, header::CACHE_CONTROL),
        status: response.status().as_u16(),
        content_type: text(response.headers(), header::CONTENT_TYPE),
    });
    response
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}

async fn respond(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let path = req.uri().path();
    let Some(rel) = relative_path(path) else {
        return status(StatusCode::NOT_FOUND);
    };
    let mut file = shared.root.join(rel);
    let Ok(meta) = tokio::fs::metadata(&file).await else {
        return status(StatusCode::NOT_FOUND);
    };
    let header_text = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let mut content_type = content_type_of(&file);
    let mut negotiated = false;
    if meta.is_dir() {
        if !path.ends_with('/') {
            let mut response = status(StatusCode::MOVED_PERMANENTLY);
            let location = HeaderValue::from_str(&format!("{path}/")).expect("a valid path");
            response.headers_mut().insert(header::LOCATION, location);
            return response;
        }
        negotiated = true;
        let json = file.join("index.json");
        if prefers_json(header_text(header::ACCEPT)) && tokio::fs::metadata(&json).await.is_ok() {
            file = json;
            content_type = PYPI_JSON;
        } else {
            file = file.join("index.html");
            content_type = "text/html";
        }
    }
    let (Ok(mut body), Ok(meta)) = (
        tokio::fs::read(&file).await,
        tokio::fs::metadata(&file).await,
    ) else {
        return status(StatusCode::NOT_FOUND);
    };
    let coding = shared.coded_pages.filter(|_| negotiated);
    if let Some(coding) = coding {
        body = encode(coding, &body);
    }
    let etag = match shared.etags {
        ETags::Md5 => format!("\"{}\"", md5_hex(&body)),
        ETags::Strong => format!("\"s-{}\"", &sha256_hex(&body)[..24]),
    };
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let last_modified = httpdate::fmt_http_date(modified);
    let len = body.len() as u64;

    let mut response = if not_modified(
        header_text(header::IF_NONE_MATCH),
        header_text(header::IF_MODIFIED_SINCE),
        &etag,
        modified,
    ) {
        status(StatusCode::NOT_MODIFIED)
    } else {
        let if_range_ok =
            header_text(header::IF_RANGE).is_none_or(|v| v == etag || v == last_modified);
        match header_text(header::RANGE).filter(|_| if_range_ok) {
            Some(range) => match parse_range(range, len) {
                Some(Ok((first, last))) => {
                    let part = body[first as usize..=last as usize].to_vec();
                    let mut r = with_body(StatusCode::PARTIAL_CONTENT, part, req.method());
                    let value = format!("bytes {first}-{last}/{len}");
                    r.headers_mut()
                        .insert(header::CONTENT_RANGE, value.parse().expect("valid"));
                    r
                }
                Some(Err(())) => {
                    let mut r = status(StatusCode::RANGE_NOT_SATISFIABLE);
                    let value = format!("bytes */{len}");
                    r.headers_mut()
                        .insert(header::CONTENT_RANGE, value.parse().expect("valid"));
                    return r;
                }
                None => with_body(StatusCode::OK, body, req.method()),
            },
            None => with_body(StatusCode::OK, body, req.method()),
        }
    };
    let code = response.status();
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag.parse().expect("valid etag"));
    headers.insert(header::LAST_MODIFIED, last_modified.parse().expect("valid"));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if code != StatusCode::NOT_MODIFIED {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    if negotiated {
        headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    }
    if let Some(coding) = coding {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
    }
    response
}

/// `body` content-coded with `coding`.
fn encode(coding: &str, body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let level = flate2::Compression::default();
    match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
            e.write_all(body).expect("in memory");
            e.finish().expect("in memory")
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
            e.write_all(body).expect("in memory");
            e.finish().expect("in memory")
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                e.write_all(body).expect("in memory");
            }
            out
        }
        other => panic!("no such coding in the test site: {other}"),
    }
}

fn with_body(code: StatusCode, body: Vec<u8>, method: &Method) -> Response<Full<Bytes>> {
    let len = body.len();
    let body = if method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(body)
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    response
}

/// The request path as a relative file path; `None` for `..` or undecodable paths.
fn relative_path(path: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?;
    let mut out = PathBuf::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return None,
            s if s.contains(['\0', '\\']) => return None,
            s => out.push(s),
        }
    }
    Some(out)
}

fn content_type_of(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        // The compact index (versions, info/NAME, names) is text, as rubygems.org serves it.
        None => "text/plain; charset=utf-8",
        Some("html") => "text/html",
        Some("json") => "application/json",
        Some("gz") => "application/x-gzip",
        Some("conf") | Some("metadata") => "text/plain",
        _ => "application/octet-stream",
    }
}

/// Whether `Accept` prefers PEP 691 JSON to HTML (ties and absence go to HTML).
fn prefers_json(accept: Option<&str>) -> bool {
    let (mut json, mut html) = (0.0f32, 0.0f32);
    for part in accept.unwrap_or("text/html").split(',') {
        let mut bits = part.split(';').map(str::trim);
        let media = bits.next().unwrap_or("").to_ascii_lowercase();
        let q = bits
            .find_map(|b| b.strip_prefix("q="))
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/vnd.pypi.simple.v1+json" | "application/vnd.pypi.simple.latest+json" => {
                json = json.max(q)
            }
            "application/vnd.pypi.simple.v1+html"
            | "application/vnd.pypi.simple.latest+html"
            | "text/html"
            | "*/*" => html = html.max(q),
            _ => {}
        }
    }
    json > html
}

/// RFC 9110 §13.1.2 / §13.1.3: If-None-Match wins; If-Modified-Since compares whole seconds.
fn not_modified(inm: Option<&str>, ims: Option<&str>, etag: &str, modified: SystemTime) -> bool {
    if let Some(inm) = inm {
        return inm.split(',').map(str::trim).any(|tag| {
            tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag.trim_start_matches("W/")
        });
    }
    let Some(since) = ims.and_then(|v| httpdate::parse_http_date(v).ok()) else {
        return false;
    };
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    secs(modified) <= secs(since)
}

/// A single `bytes=` range: `Some(Ok((first, last)))`, `Some(Err(()))` when unsatisfiable,
/// `None` when the header is ignored (invalid, or several ranges).
fn parse_range(value: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || len == 0 {
            return Some(Err(()));
        }
        return Some(Ok((len.saturating_sub(n), len - 1)));
    }
    let first: u64 = a.parse().ok()?;
    let last = if b.is_empty() {
        u64::MAX
    } else {
        b.parse().ok()?
    };
    if last < first {
        return None;
    }
    if first >= len {
        return Some(Err(()));
    }
    Some(Ok((first, last.min(len - 1))))
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
