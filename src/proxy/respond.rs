//! The only place that turns outcomes and errors into status codes and
//! headers: cached representations (with Range, If-Range, If-None-Match and
//! If-Modified-Since), pass-through responses, and every error text.

use super::conditional::{self, RangeAnswer};
use super::headers;
use super::route::RejectReason;
use super::target::TargetError;
use crate::body::{self, Body};
use crate::store::{FillFailure, KeyError};
use crate::upstream::{Failed, Fetched};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};

/// The response header telling what the cache did.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// What the cache did for a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from a committed entry.
    Hit,
    /// Served from a fill in progress (started by this or another request).
    Miss,
    /// Fetched and streamed without storing.
    Pass,
}

impl CacheStatus {
    /// The `X-Cache` value.
    pub fn as_str(&self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Pass => "PASS",
        }
    }
}

/// A short text answer (errors).
pub fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut message = message.into();
    message.push('\n');
    let mut response = Response::new(body::full(message));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A request that names no allowed upstream.
pub fn target_error(err: &TargetError) -> Response<Body> {
    match err {
        TargetError::Forbidden { host } => text(
            StatusCode::FORBIDDEN,
            format!("package-cache: host {host} is not allowed here (this is not an open proxy)"),
        ),
        TargetError::Malformed(why) => {
            text(StatusCode::BAD_REQUEST, format!("package-cache: {why}"))
        }
    }
}

/// A refused request.
pub fn reject(reason: &RejectReason) -> Response<Body> {
    match reason {
        RejectReason::Method => {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "package-cache: only GET and HEAD are served",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            r
        }
        RejectReason::Path(KeyError::TooLong) => {
            text(StatusCode::URI_TOO_LONG, "package-cache: path too long")
        }
        RejectReason::Path(err) => text(StatusCode::BAD_REQUEST, format!("package-cache: {err}")),
    }
}

/// Status and text for a fetch that failed on every source: 404 when every
/// source said so (or there is no source to ask), 504 when all timed out,
/// else 502.
pub fn upstream_failed(failed: &Failed) -> (StatusCode, String) {
    let status = if failed.attempts.is_empty() || failed.all_not_found() {
        StatusCode::NOT_FOUND
    } else if failed.all_timed_out() {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    };
    let summary = match status {
        StatusCode::NOT_FOUND => "not found upstream",
        StatusCode::GATEWAY_TIMEOUT => "upstream timed out",
        _ => "upstream failed",
    };
    (status, format!("package-cache: {summary}: {failed}"))
}

/// A waiter's answer when the fill it joined failed before starting.
pub fn fill_failed(failure: &FillFailure) -> Response<Body> {
    text(
        StatusCode::from_u16(failure.status).unwrap_or(StatusCode::BAD_GATEWAY),
        failure.message.clone(),
    )
}

/// An internal failure (the cache directory misbehaved).
pub fn internal(message: &str) -> Response<Body> {
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("package-cache: {message}"),
    )
}

/// Too many requests or connections.
pub fn busy() -> Response<Body> {
    let mut r = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "package-cache: busy, retry shortly",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// A stored (or filling) representation: its end-to-end headers and length.
pub struct Representation {
    /// Stored headers (Content-Type, ETag, Last-Modified, …).
    pub headers: HeaderMap,
    /// Body length, when known.
    pub len: Option<u64>,
    /// HIT or MISS.
    pub cache: CacheStatus,
}

/// Answers a GET or HEAD from a representation, honouring conditionals and a
/// single Range. `open(start, end)` makes the body; `end` is `u64::MAX` when
/// the length is not known yet.
pub fn representation(
    method: &Method,
    request: &HeaderMap,
    rep: Representation,
    open: impl FnOnce(u64, u64) -> Body,
) -> Response<Body> {
    let etag = rep.headers.get(header::ETAG).and_then(|v| v.to_str().ok());
    let last_modified = rep
        .headers
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok());
    let get = |name| {
        request
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let not_modified = match (get(header::IF_NONE_MATCH), get(header::IF_MODIFIED_SINCE)) {
        (Some(inm), _) => conditional::none_match(inm, etag),
        (None, Some(ims)) => conditional::not_modified_since(ims, last_modified),
        (None, None) => false,
    };
    let mut status = StatusCode::OK;
    let (mut start, mut end) = (0, rep.len.unwrap_or(u64::MAX));
    let mut content_range = None;
    if not_modified {
        status = StatusCode::NOT_MODIFIED;
    } else if let (Some(range), Some(len)) = (get(header::RANGE), rep.len) {
        let honoured = get(header::IF_RANGE)
            .is_none_or(|v| conditional::if_range_matches(v, etag, last_modified));
        if honoured {
            match conditional::range(range, len) {
                RangeAnswer::Full => {}
                RangeAnswer::Partial { start: s, end: e } => {
                    status = StatusCode::PARTIAL_CONTENT;
                    (start, end) = (s, e);
                    content_range = Some(format!("bytes {s}-{}/{len}", e - 1));
                }
                RangeAnswer::Unsatisfiable => {
                    let mut r = text(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "package-cache: range not satisfiable",
                    );
                    r.headers_mut()
                        .insert(header::CONTENT_RANGE, value(format!("bytes */{len}")));
                    r.headers_mut()
                        .insert(X_CACHE, HeaderValue::from_static(rep.cache.as_str()));
                    return r;
                }
            }
        }
    }
    let mut headers = rep.headers;
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(X_CACHE, HeaderValue::from_static(rep.cache.as_str()));
    let body = if status == StatusCode::NOT_MODIFIED {
        for name in [
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::CONTENT_LANGUAGE,
        ] {
            headers.remove(name);
        }
        body::empty()
    } else {
        if let Some(cr) = content_range {
            headers.insert(header::CONTENT_RANGE, value(cr));
        }
        if end != u64::MAX {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
        }
        if method == Method::HEAD {
            body::empty()
        } else {
            open(start, end)
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Streams an upstream response through unchanged (hop-by-hop headers dropped).
pub fn passthrough(method: &Method, fetched: Fetched, cache: CacheStatus) -> Response<Body> {
    let mut headers = headers::response_passable(&fetched.headers);
    headers.insert(X_CACHE, HeaderValue::from_static(cache.as_str()));
    let status = fetched.status;
    let no_body = method == Method::HEAD
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::NO_CONTENT;
    let body = if no_body {
        body::empty()
    } else {
        body::from_stream(futures_util::stream::unfold(
            Some(fetched),
            |state| async move {
                let mut fetched = state?;
                match fetched.next_chunk().await {
                    Ok(Some(chunk)) => Some((Ok(chunk), Some(fetched))),
                    Ok(None) => None,
                    Err(err) => Some((Err(std::io::Error::other(err)), None)),
                }
            },
        ))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).expect("formatted header values are visible ASCII")
}

/// A path every upstream said 404 for within the negative TTL.
pub fn remembered_missing() -> Response<Body> {
    text(
        StatusCode::NOT_FOUND,
        "package-cache: not found upstream (remembered)",
    )
}

/// An index document every upstream said 404 for.
pub fn document_gone() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "package-cache: not found upstream")
}

/// A path a mount cannot fetch (a files host that is not configured).
pub fn not_on_mount() -> Response<Body> {
    text(
        StatusCode::NOT_FOUND,
        "package-cache: not a path this mount serves",
    )
}

/// Another spelling of a canonical proxy path (`location`, query kept).
pub fn moved(location: &str) -> Response<Body> {
    let mut r = text(StatusCode::MOVED_PERMANENTLY, format!("see {location}"));
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// A joined fill that failed (cut short, or not the bytes its index lists)
/// before this response began.
pub fn fill_aborted() -> Response<Body> {
    text(
        StatusCode::BAD_GATEWAY,
        "package-cache: the download failed; nothing was cached",
    )
}

/// The answer a failed document revalidation gave, for a client with no stored copy.
pub fn doc_failed(status: u16, message: &str) -> Response<Body> {
    text(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        message.trim_end().to_string(),
    )
}
