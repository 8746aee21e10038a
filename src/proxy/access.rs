//! The access log: one `tracing` line per request, written when its body is
//! finished or dropped, with the bytes actually sent and whether the body
//! ended cleanly. The line names the path only: query strings carry tokens,
//! so they are logged at debug level, on a line of their own.

use super::target::ConnInfo;
use crate::body::Body;
use crate::cache_status::CacheStatus;
use crate::metrics::{Ending, Metrics, Row, Served};
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// What the log line says about a request.
pub struct AccessRecord {
    /// Method.
    pub method: http::Method,
    /// Request target as received.
    pub target: http::Uri,
    /// Response status.
    pub status: u16,
    /// What the cache did; `None` when the answer says nothing of it
    /// (errors, redirects, refusals).
    pub cache: Option<CacheStatus>,
    /// Served (MISS) from a fill another request started ([`JoinedFill`]).
    pub joined: bool,
    /// The `--mirror` mount the request was for, if any.
    pub mount: Option<String>,
    /// Where the metrics count it.
    pub row: Row,
    /// Client address.
    pub peer: Option<std::net::SocketAddr>,
    /// Where the client meant to connect, when a DNAT rule sent it here.
    pub orig_dst: Option<std::net::SocketAddr>,
    /// When the request arrived.
    pub started: Instant,
    /// The response's Content-Length: hyper stops polling a body once that
    /// many bytes are sent, so reaching it is a complete response.
    pub expected: Option<u64>,
}

impl AccessRecord {
    /// The record of `req`, answered with `response` (not yet sent), which
    /// `cache` says how the cache served, counted in `row` and logged with
    /// its `--mirror` mount.
    pub fn new(
        req: &http::request::Parts,
        response: &http::Response<Body>,
        cache: Option<CacheStatus>,
        (row, mount): (Row, Option<String>),
        conn: Option<&ConnInfo>,
        started: Instant,
    ) -> AccessRecord {
        AccessRecord {
            method: req.method.clone(),
            target: req.uri.clone(),
            status: response.status().as_u16(),
            cache,
            joined: response.extensions().get::<JoinedFill>().is_some(),
            mount,
            row,
            peer: conn.map(|c| c.peer),
            orig_dst: conn.and_then(ConnInfo::redirected_from),
            started,
            expected: response
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        }
    }
}

/// Marks a response served from a fill another request leads (a response
/// extension, set where the answer is made), for [`AccessRecord::joined`].
#[derive(Clone, Copy, Debug)]
pub struct JoinedFill;

/// Wraps a response body; logs once and counts the request in the
/// metrics once, on drop (hyper drops it after the end of stream too).
pub struct LoggedBody {
    inner: Body,
    record: AccessRecord,
    bytes: u64,
    ending: Option<Ending>,
    metrics: Arc<Metrics>,
}

impl LoggedBody {
    /// Wraps `inner`.
    pub fn new(inner: Body, record: AccessRecord, metrics: Arc<Metrics>) -> LoggedBody {
        LoggedBody {
            inner,
            record,
            bytes: 0,
            ending: None,
            metrics,
        }
    }
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => self.ending = Some(Ending::Aborted),
            Poll::Ready(None) => {
                self.ending.get_or_insert(Ending::Complete);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        let ending = match self.ending {
            Some(ending) => ending,
            None if self.inner.is_end_stream() || Some(self.bytes) == self.record.expected => {
                Ending::Complete
            }
            None => Ending::ClientGone,
        };
        let r = &self.record;
        self.metrics.request_served(&Served {
            row: r.row,
            cache: r.cache,
            joined: r.joined,
            bytes: self.bytes,
            ending,
        });
        let outcome = match ending {
            Ending::Complete => "complete",
            Ending::Aborted => "aborted",
            Ending::ClientGone => "client gone",
        };
        let cache = r.cache.as_ref().map_or("-", CacheStatus::as_str);
        let elapsed_ms = r.started.elapsed().as_millis() as u64;
        let peer = r.peer.map(tracing::field::display);
        let mount = r.mount.as_deref();
        let path = WithoutQuery(&r.target);
        log_query(&r.method, &r.target);
        match r.orig_dst {
            None => {
                tracing::info!(method = %r.method, path = %path, status = r.status, cache,
                mount, bytes = self.bytes, elapsed_ms, peer, outcome, "request")
            }
            Some(dst) => {
                tracing::info!(method = %r.method, path = %path, status = r.status, cache,
                mount, bytes = self.bytes, elapsed_ms, peer, orig_dst = %dst, outcome, "request")
            }
        }
    }
}

/// Logs a request whose client left before any response existed (hyper
/// drops the handler then); disarmed once the response is built.
pub struct Unanswered {
    method: http::Method,
    target: http::Uri,
    peer: Option<std::net::SocketAddr>,
    started: Instant,
    row: Row,
    armed: bool,
    metrics: Arc<Metrics>,
}

impl Unanswered {
    /// Arms the guard for one request, counted in `row`.
    pub fn new(
        req: &http::request::Parts,
        conn: Option<&ConnInfo>,
        started: Instant,
        row: Row,
        metrics: &Arc<Metrics>,
    ) -> Unanswered {
        Unanswered {
            method: req.method.clone(),
            target: req.uri.clone(),
            peer: conn.map(|c| c.peer),
            started,
            row,
            armed: true,
            metrics: metrics.clone(),
        }
    }

    /// The response exists; its body will log.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if self.armed {
            self.metrics.request_served(&Served {
                row: self.row,
                cache: None,
                joined: false,
                bytes: 0,
                ending: Ending::ClientGone,
            });
            log_query(&self.method, &self.target);
            tracing::info!(
                method = %self.method,
                path = %WithoutQuery(&self.target),
                cache = "-",
                bytes = 0u64,
                elapsed_ms = self.started.elapsed().as_millis() as u64,
                peer = self.peer.map(tracing::field::display),
                outcome = "client gone before response",
                "request"
            );
        }
    }
}

/// A request target as logs show it at the default level: scheme, host
/// (absolute-form requests) and path, never the query.
pub struct WithoutQuery<'a>(pub &'a http::Uri);

impl std::fmt::Display for WithoutQuery<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let (Some(scheme), Some(authority)) = (self.0.scheme_str(), self.0.authority()) {
            write!(f, "{scheme}://{authority}")?;
        }
        f.write_str(self.0.path())
    }
}

/// The query of a request, for whoever runs at debug level.
fn log_query(method: &http::Method, target: &http::Uri) {
    if let Some(query) = target.query() {
        tracing::debug!(method = %method, path = %WithoutQuery(target), query, "request query");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_paths_have_no_query() {
        let shown = |uri: &str| WithoutQuery(&uri.parse().unwrap()).to_string();
        assert_eq!(shown("/a/b.whl?token=secret"), "/a/b.whl");
        assert_eq!(shown("/a%20b"), "/a%20b");
        assert_eq!(
            shown("http://mirror.example:8080/x?sig=abc"),
            "http://mirror.example:8080/x"
        );
    }
}
