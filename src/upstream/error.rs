//! The upstream's errors: one failed attempt (`Error`), every source failed
//! (`Failed`), and a body that failed after its first byte (`BodyError`),
//! with the predicates callers branch on. Their texts show URLs as
//! [`ShownUrl`] does, without the query: they reach logs at warn level, the
//! status page and error answers, and queries carry tokens (signed URLs).

use super::connect;
use http::StatusCode;
use std::fmt;

/// One failed attempt against one upstream URL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting or sending the request failed (refused, reset, TLS, DNS,
    /// a malformed response head).
    #[error("{}: {}", ShownUrl(url), causes(source))]
    Connect {
        /// The URL tried.
        url: String,
        /// The client's error.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// No response header, or no first body byte, within the idle timeout.
    #[error("{}: no answer within {secs} s", ShownUrl(url))]
    Timeout {
        /// The URL tried.
        url: String,
        /// The idle timeout.
        secs: u64,
    },
    /// The upstream answered with a status that moves on to the next source.
    #[error("{}: status {status}", ShownUrl(url))]
    Status {
        /// The URL tried.
        url: String,
        /// Its status.
        status: StatusCode,
    },
    /// The body failed before its first byte.
    #[error("{}: body failed before the first byte: {source}", ShownUrl(url))]
    Body {
        /// The URL tried.
        url: String,
        /// The transport error.
        #[source]
        source: hyper::Error,
    },
    /// A redirect was missing, malformed, not http(s), or one too many.
    #[error("{}: bad redirect: {reason}", ShownUrl(url))]
    Redirect {
        /// The URL tried.
        url: String,
        /// What was wrong.
        reason: &'static str,
    },
    /// A body to decode came in a coding this proxy does not know.
    #[error("{}: unsupported Content-Encoding {coding:?}", ShownUrl(url))]
    Encoding {
        /// The URL tried.
        url: String,
        /// The coding.
        coding: String,
    },
    /// An https URL redirected to http: a network attacker could answer the
    /// plain request, so it is never made.
    #[error(
        "{}: redirect to {} refused: https must not fall back to http",
        ShownUrl(url),
        ShownUrl(location)
    )]
    Downgrade {
        /// The URL that redirected.
        url: String,
        /// Where it pointed.
        location: String,
    },
    /// A redirect to another origin led to a special address that the
    /// operator did not allow.
    #[error("{}: redirect refused: {source}", ShownUrl(url))]
    RedirectRefused {
        /// The URL the redirect led to.
        url: String,
        /// Where it resolved.
        #[source]
        source: connect::Refused,
    },
}

impl Error {
    /// The URL tried, query included: for debug logs only.
    pub fn url(&self) -> &str {
        match self {
            Error::Connect { url, .. }
            | Error::Timeout { url, .. }
            | Error::Status { url, .. }
            | Error::Body { url, .. }
            | Error::Redirect { url, .. }
            | Error::Encoding { url, .. }
            | Error::Downgrade { url, .. }
            | Error::RedirectRefused { url, .. } => url,
        }
    }

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
            Error::Body { .. } | Error::Encoding { .. } => "body",
            Error::Redirect { .. } | Error::Downgrade { .. } | Error::RedirectRefused { .. } => {
                "redirect"
            }
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

/// Failure of a body after its first byte.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// No byte for the idle timeout.
    #[error("upstream sent nothing for {0} s")]
    Idle(u64),
    /// The connection failed (reset, closed short of Content-Length, bad chunking).
    #[error("upstream body failed: {0}")]
    Transport(#[source] hyper::Error),
    /// A content-coded body did not decode (corrupt, cut short, or too large).
    #[error("upstream body does not decode: {0}")]
    Decode(#[source] std::io::Error),
}

/// An upstream URL as logs, the status page and error answers show it:
/// scheme, host, port and path, never the user info, query or fragment.
pub struct ShownUrl<'a>(pub &'a str);

impl fmt::Display for ShownUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url::Url::parse(self.0) {
            Ok(u) if u.has_host() => {
                write!(f, "{}://{}", u.scheme(), u.host_str().unwrap_or(""))?;
                if let Some(port) = u.port() {
                    write!(f, ":{port}")?;
                }
                f.write_str(u.path())
            }
            // Not a URL we could have fetched: up to the query, as written.
            _ => f.write_str(self.0.split(['?', '#']).next().unwrap_or_default()),
        }
    }
}

/// The first cause of type `T` in `err`'s chain.
pub(super) fn find_cause<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        if let Some(found) = c.downcast_ref::<T>() {
            return Some(found);
        }
        cause = c.source();
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_have_no_query_or_user_info() {
        let shown = |u: &str| ShownUrl(u).to_string();
        assert_eq!(
            shown("https://user:pw@files.example:8443/a/b.whl?X-Amz-Signature=SECRET#frag"),
            "https://files.example:8443/a/b.whl"
        );
        assert_eq!(
            shown("http://h.example/x%20y?token=SECRET"),
            "http://h.example/x%20y"
        );
        assert_eq!(shown("http://[::1]:8080/p"), "http://[::1]:8080/p");
        assert_eq!(shown("not a url?token=SECRET"), "not a url");
        let err = Error::Status {
            url: "http://h.example/f?token=SECRET".into(),
            status: http::StatusCode::BAD_GATEWAY,
        };
        assert_eq!(
            err.to_string(),
            "http://h.example/f: status 502 Bad Gateway"
        );
        assert_eq!(err.url(), "http://h.example/f?token=SECRET");
        let err = Error::Downgrade {
            url: "https://h.example/f?a=SECRET".into(),
            location: "http://h.example/f?b=SECRET".into(),
        };
        assert!(!err.to_string().contains("SECRET"), "{err}");
    }
}
