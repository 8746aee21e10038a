//! `Upstream`: fetches a path from the `--source` mirrors in order, or from one
//! allowed host, following redirects, failing over on 404/410, 5xx, connect
//! errors, resets and timeouts before the first body byte.
//!
//! It knows nothing of the cache: it returns a response whose first body chunk
//! is already in hand, so the caller commits to a source only once bytes flow.

pub mod client;

use crate::config::{Authority, SourceUrl, UpstreamConfig};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `User-Agent` sent upstream.
pub const USER_AGENT: &str = concat!("package-cache/", env!("CARGO_PKG_VERSION"));

/// One failed attempt against one upstream URL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting or sending the request failed (refused, reset, TLS, DNS,
    /// a malformed response head).
    #[error("{url}: {}", causes(source))]
    Connect {
        /// The URL tried.
        url: String,
        /// The client's error.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// No response header, or no first body byte, within the idle timeout.
    #[error("{url}: no answer within {secs} s")]
    Timeout {
        /// The URL tried.
        url: String,
        /// The idle timeout.
        secs: u64,
    },
    /// The upstream answered with a status that moves on to the next source.
    #[error("{url}: status {status}")]
    Status {
        /// The URL tried.
        url: String,
        /// Its status.
        status: StatusCode,
    },
    /// The body failed before its first byte.
    #[error("{url}: body failed before the first byte: {source}")]
    Body {
        /// The URL tried.
        url: String,
        /// The transport error.
        #[source]
        source: hyper::Error,
    },
    /// A redirect was missing, malformed, not http(s), or one too many.
    #[error("{url}: bad redirect: {reason}")]
    Redirect {
        /// The URL tried.
        url: String,
        /// What was wrong.
        reason: &'static str,
    },
}

impl Error {
    /// Whether the upstream said the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Status { status, .. } if *status == StatusCode::NOT_FOUND || *status == StatusCode::GONE)
    }

    /// A short name for the metrics' `kind` label.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Connect { .. } => "connect",
            Error::Timeout { .. } => "timeout",
            Error::Status { .. } if self.is_not_found() => "not_found",
            Error::Status { .. } => "status",
            Error::Body { .. } => "body",
            Error::Redirect { .. } => "redirect",
        }
    }

    /// Whether the upstream did not answer in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }
}

/// Every source failed; one error per attempt, in order.
#[derive(Debug)]
pub struct Failed {
    /// The attempts.
    pub attempts: Vec<Error>,
}

impl Failed {
    /// True when every source said 404/410 (and there was at least one).
    pub fn all_not_found(&self) -> bool {
        !self.attempts.is_empty() && self.attempts.iter().all(Error::is_not_found)
    }

    /// True when every source timed out.
    pub fn all_timed_out(&self) -> bool {
        !self.attempts.is_empty() && self.attempts.iter().all(Error::is_timeout)
    }
}

impl std::error::Error for Failed {}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.attempts.is_empty() {
            return write!(f, "no upstream source is configured");
        }
        for (i, attempt) in self.attempts.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{attempt}")?;
        }
        Ok(())
    }
}

/// Which upstream to ask.
#[derive(Clone, Copy, Debug)]
pub enum Via<'a> {
    /// The `--source` mirrors in order.
    Sources,
    /// These sources in order (a mount's).
    List(&'a [SourceUrl]),
    /// One named host.
    Host {
        /// Scheme.
        https: bool,
        /// The host.
        authority: &'a Authority,
    },
}

/// A request to send upstream.
pub struct FetchRequest<'a> {
    /// Where.
    pub via: Via<'a>,
    /// The client's raw path and query, encoding untouched.
    pub path_and_query: &'a str,
    /// GET or HEAD.
    pub method: Method,
    /// Headers to send (already free of hop-by-hop and Host).
    pub headers: HeaderMap,
}

/// A response whose status is final, with its first body chunk already read.
pub struct Fetched {
    /// The URL that answered (after redirects).
    pub url: String,
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    first: Option<Bytes>,
    body: Incoming,
    idle: Duration,
}

impl Fetched {
    /// The next body chunk; `None` at a clean end. Fails when no byte arrives
    /// within the idle timeout or the connection breaks.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        next_data(&mut self.body, self.idle).await
    }

    /// The upstream's Content-Length, if it sent a valid one.
    pub fn content_length(&self) -> Option<u64> {
        self.headers
            .get(header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    }
}

/// Failure of a body after its first byte.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// No byte for the idle timeout.
    #[error("upstream sent nothing for {0} s")]
    Idle(u64),
    /// The connection failed (reset, closed short of Content-Length, bad chunking).
    #[error("upstream body failed: {0}")]
    Transport(#[source] hyper::Error),
}

async fn next_data(body: &mut Incoming, idle: Duration) -> Result<Option<Bytes>, BodyError> {
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(BodyError::Idle(idle.as_secs())),
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => return Err(BodyError::Transport(e)),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if !data.is_empty() {
                return Ok(Some(data));
            }
        }
    }
}

/// Told of every attempt on a source (the metrics implement it; `app` wires
/// them in), so that this module reports without knowing who listens.
/// Called on the request path: implementations must be quick and never block.
pub trait Observer: Send + Sync {
    /// An attempt on `source` (an origin, `scheme://host:port`, whatever the
    /// path or redirects) got its final response head after `elapsed`,
    /// whatever its status.
    fn answered(&self, source: &str, elapsed: Duration);

    /// An attempt on `source` failed with `error` (a 404 included).
    fn failed(&self, source: &str, error: &Error);
}

/// The upstream side: a pooled client and the configured sources.
#[derive(Clone)]
pub struct Upstream {
    client: client::HttpClient,
    sources: Vec<SourceUrl>,
    idle: Duration,
    max_redirects: usize,
    observer: Arc<dyn Observer>,
}

impl Upstream {
    /// Builds the client (reads certificate files). Every attempt's latency
    /// and failure is told to `observer`, by the origin of the URL tried.
    pub fn new(
        config: &UpstreamConfig,
        observer: Arc<dyn Observer>,
    ) -> Result<Upstream, client::Error> {
        Ok(Upstream {
            client: client::build(config)?,
            sources: config.sources.clone(),
            idle: config.idle_timeout,
            max_redirects: config.max_redirects,
            observer,
        })
    }

    /// The configured mirrors.
    pub fn sources(&self) -> &[SourceUrl] {
        &self.sources
    }

    /// Tries each candidate URL in order until one answers with a status that
    /// does not call for failover, and (for GET) its first body byte arrived.
    pub async fn fetch(&self, req: FetchRequest<'_>) -> Result<Fetched, Failed> {
        let urls: Vec<String> = match req.via {
            Via::Sources => self
                .sources
                .iter()
                .map(|s| s.url_for(req.path_and_query))
                .collect(),
            Via::List(list) => list.iter().map(|s| s.url_for(req.path_and_query)).collect(),
            Via::Host { https, authority } => {
                let scheme = if https { "https" } else { "http" };
                vec![format!(
                    "{scheme}://{}{}",
                    authority.as_str(),
                    req.path_and_query
                )]
            }
        };
        // Credentials were meant for one server: never replay them to the
        // next mirror in line.
        let credentialed = [header::AUTHORIZATION, header::COOKIE]
            .iter()
            .any(|h| req.headers.contains_key(h));
        let urls = if credentialed {
            urls.into_iter().take(1).collect()
        } else {
            urls
        };
        let mut attempts = Vec::new();
        for url in urls {
            let started = Instant::now();
            let origin = origin_of(&url);
            match self.fetch_one(url, &req, &origin, started).await {
                Ok(fetched) => {
                    tracing::debug!(source = %fetched.url, status = fetched.status.as_u16(),
                        elapsed_ms = started.elapsed().as_millis() as u64, "upstream answered");
                    return Ok(fetched);
                }
                Err(err) => {
                    tracing::warn!(error = %err, elapsed_ms = started.elapsed().as_millis() as u64,
                        "upstream failed; trying next");
                    self.observer.failed(&origin, &err);
                    attempts.push(err);
                }
            }
        }
        Err(Failed { attempts })
    }

    /// One source: `origin` names it to the observer; `started` is when the
    /// attempt began (the head latency spans its redirects).
    async fn fetch_one(
        &self,
        mut url: String,
        req: &FetchRequest<'_>,
        origin: &str,
        started: Instant,
    ) -> Result<Fetched, Error> {
        let mut headers = req.headers.clone();
        for _ in 0..=self.max_redirects {
            let response = self.send(&req.method, &url, &headers).await?;
            let status = response.status();
            if !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
                self.observer.answered(origin, started.elapsed());
            }
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let next = redirect_target(&url, response.headers())?;
                if !same_origin(&url, &next) {
                    // As curl does: credentials do not follow a redirect to another server.
                    for name in [
                        header::AUTHORIZATION,
                        header::COOKIE,
                        header::PROXY_AUTHORIZATION,
                    ] {
                        headers.remove(name);
                    }
                }
                url = next;
                continue;
            }
            if status == StatusCode::NOT_FOUND
                || status == StatusCode::GONE
                || status.is_server_error()
            {
                return Err(Error::Status { url, status });
            }
            let (parts, mut body) = response.into_parts();
            let first = if req.method == Method::HEAD || status == StatusCode::NOT_MODIFIED {
                None
            } else {
                match next_data(&mut body, self.idle).await {
                    Ok(first) => first,
                    Err(BodyError::Idle(secs)) => return Err(Error::Timeout { url, secs }),
                    Err(BodyError::Transport(source)) => return Err(Error::Body { url, source }),
                }
            };
            return Ok(Fetched {
                url,
                status,
                headers: parts.headers,
                first,
                body,
                idle: self.idle,
            });
        }
        Err(Error::Redirect {
            url,
            reason: "too many redirects",
        })
    }
}

/// `scheme://host:port` of `url`, the port always spelled out, so that one
/// source has one label however its URLs are written.
fn origin_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => "invalid".to_string(),
    }
}

impl Upstream {
    /// Sends one request. A pooled connection that the upstream closed
    /// under the request (its keep-alive timeout fired as the request went
    /// out) answered nothing, and GET and HEAD are idempotent, so the request
    /// goes again (RFC 9112 §9.3.1), at most twice more.
    async fn send(
        &self,
        method: &Method,
        url: &str,
        headers: &HeaderMap,
    ) -> Result<hyper::Response<Incoming>, Error> {
        let mut retries = 0;
        loop {
            let mut request = Request::builder()
                .method(method.clone())
                .uri(url)
                .body(Empty::<Bytes>::new())
                .map_err(|_| Error::Redirect {
                    url: url.to_string(),
                    reason: "not a valid URL",
                })?;
            *request.headers_mut() = headers.clone();
            request
                .headers_mut()
                .entry(header::USER_AGENT)
                .or_insert(HeaderValue::from_static(USER_AGENT));
            match tokio::time::timeout(self.idle, self.client.request(request)).await {
                Err(_) => {
                    return Err(Error::Timeout {
                        url: url.to_string(),
                        secs: self.idle.as_secs(),
                    })
                }
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(source)) if retries < 2 && closed_unanswered(&source) => {
                    retries += 1;
                    tracing::debug!(url, error = %source, "pooled connection closed under the request; sending again");
                }
                Ok(Err(source)) => {
                    return Err(Error::Connect {
                        url: url.to_string(),
                        source,
                    })
                }
            }
        }
    }
}

/// Whether a request failed because its (reused) connection closed before
/// any response byte: nothing was answered, so nothing was done.
fn closed_unanswered(err: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(hyper_err) = cause.downcast_ref::<hyper::Error>() {
            return hyper_err.is_incomplete_message() || hyper_err.is_canceled();
        }
        source = cause.source();
    }
    false
}

/// An error and its causes, so a log says "invalid HTTP status-code parsed",
/// not just "client error (SendRequest)".
fn causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

fn same_origin(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

fn redirect_target(current: &str, headers: &HeaderMap) -> Result<String, Error> {
    let bad = |reason| Error::Redirect {
        url: current.to_string(),
        reason,
    };
    let location = headers
        .get(header::LOCATION)
        .ok_or_else(|| bad("no Location"))?;
    let location = location.to_str().map_err(|_| bad("Location is not text"))?;
    let base = url::Url::parse(current).map_err(|_| bad("current URL unparsable"))?;
    let next = base
        .join(location)
        .map_err(|_| bad("Location unparsable"))?;
    if next.scheme() != "http" && next.scheme() != "https" {
        return Err(bad("Location is not http(s)"));
    }
    Ok(next.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(l: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, HeaderValue::from_str(l).unwrap());
        h
    }

    #[test]
    fn origin_labels_spell_out_the_port() {
        assert_eq!(origin_of("http://a/x?y"), "http://a:80");
        assert_eq!(origin_of("https://A.example/x"), "https://a.example:443");
        assert_eq!(origin_of("http://[::1]:8080/x"), "http://[::1]:8080");
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        assert!(same_origin("http://a/x", "http://a:80/y"));
        assert!(!same_origin("http://a/x", "https://a/x"));
        assert!(!same_origin("http://a/x", "http://b/x"));
        assert!(!same_origin("http://a:1/x", "http://a:2/x"));
    }

    #[test]
    fn redirects_resolve_against_the_current_url() {
        assert_eq!(
            redirect_target("http://a/x/y", &loc("/z")).unwrap(),
            "http://a/z"
        );
        assert_eq!(
            redirect_target("http://a/x/y", &loc("z")).unwrap(),
            "http://a/x/z"
        );
        assert_eq!(
            redirect_target("http://a/x", &loc("https://b/q")).unwrap(),
            "https://b/q"
        );
        assert!(redirect_target("http://a/x", &loc("ftp://b/q")).is_err());
        assert!(redirect_target("http://a/x", &HeaderMap::new()).is_err());
    }
}
