//! `proxy::Error`: every way a proxied request can fail, with where the fault
//! lies (`Class`: the upstream, the client, or the cache itself) and whether
//! another attempt may succeed. It says nothing of HTTP statuses or response
//! texts: `respond::error` picks both, from the class, in one place.
//!
//! Errors are cheap to clone (their causes are shared), because one error can
//! answer many requests: a fill's leader hands its error to the store as a
//! `store::Failure`, and every request that followed the fill answers with a
//! clone of it.

use super::route::RejectReason;
use super::target::TargetError;
use crate::store::{self, Failure, KeyError};
use crate::upstream::{self, ShownUrl};
use http::Method;
use std::sync::Arc;

/// Where the fault lies; `respond` picks the status family from it, as
/// pingora's `fail_to_proxy` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// The upstream failed, refused, or sent something unusable (502, 504,
    /// or 404 when it said the file does not exist).
    Upstream,
    /// The request itself cannot be served (4xx).
    Client,
    /// The cache failed or is overloaded (500, 503).
    Internal,
}

/// Why a request could not be answered from the cache or the upstream.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The request names a host that is not allowed (not an open proxy).
    #[error("host {host} is not allowed")]
    Forbidden {
        /// The host as the client named it.
        host: String,
    },
    /// The request target cannot be understood.
    #[error("malformed request: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Only GET and HEAD are served.
    #[error("method {method} is not served")]
    Method {
        /// The method asked for.
        method: Method,
    },
    /// The path is hostile or malformed.
    #[error("refused path: {source}")]
    Path {
        /// What is wrong with it.
        #[source]
        source: KeyError,
    },
    /// A path under a mount that names nothing it can fetch (a files host
    /// that is not configured, say).
    #[error("{path} is not a path this mount serves")]
    NotOnMount {
        /// The path after the mount's name.
        path: String,
    },
    /// The supply-chain policy refuses this release (too young, after the
    /// cutoff, undated, or on a deny list).
    #[error("{what} refused by the supply-chain policy: {why}")]
    Held {
        /// The release (`pypi six 1.17.0`).
        what: String,
        /// Why, and when it becomes available.
        why: String,
    },
    /// An index document the supply-chain policy must filter, and cannot:
    /// served to nobody rather than unfiltered.
    #[error("{path}: the supply-chain policy cannot be applied: {reason}")]
    Unfiltered {
        /// The document's path.
        path: String,
        /// Why.
        reason: String,
        /// A kind of document that is never served under a policy (404),
        /// rather than one that failed to read (502).
        never: bool,
    },
    /// Every source failed (or none could be asked).
    #[error("upstream failed: {failed}")]
    Fetch {
        /// One error per source tried.
        #[source]
        failed: Arc<upstream::Failed>,
    },
    /// Every source said 404 for this key within the negative TTL.
    #[error("{key} was not found upstream (remembered)")]
    Missing {
        /// The entry's key, or the document's path.
        key: String,
    },
    /// The upstream answered an index document with an HTML page (a login
    /// or captive portal).
    #[error("{} answered an index document with an HTML page", ShownUrl(url))]
    Portal {
        /// The URL that answered.
        url: String,
    },
    /// An index document's body failed on its way in.
    #[error("index document from {}: {source}", ShownUrl(url))]
    DocumentBody {
        /// The URL that answered.
        url: String,
        /// The transport error.
        #[source]
        source: Arc<upstream::BodyError>,
    },
    /// An index document is larger than the cache takes.
    #[error("index document from {} is larger than {limit} bytes", ShownUrl(url))]
    DocumentTooLarge {
        /// The URL that answered.
        url: String,
        /// The limit (`store::MAX_DOC_LEN`).
        limit: u64,
    },
    /// A download does not have the sha256 its index lists.
    #[error("{key} has sha256 {got}, its index lists {listed}")]
    Digest {
        /// The entry.
        key: String,
        /// What the index lists.
        listed: String,
        /// What arrived.
        got: String,
    },
    /// The hashes known for a Go module file disagree (an operator's go.sum
    /// and a cached checksum-database lookup, or two go.sum lines): which is
    /// right cannot be told, so the file is refused, never stored.
    #[error("{key}: the hashes known for it disagree: {known}")]
    Disagree {
        /// The entry.
        key: String,
        /// Each hash with where it comes from.
        known: String,
    },
    /// A download's body failed after its head.
    #[error("download of {key} from {} failed: {source}", ShownUrl(url))]
    Body {
        /// The entry.
        key: String,
        /// The URL it came from.
        url: String,
        /// The transport error.
        #[source]
        source: Arc<upstream::BodyError>,
    },
    /// The fill this request was to stream from failed before the response
    /// began, so there is nothing to send.
    #[error("the download of {key} failed before this response began")]
    Aborted {
        /// The entry.
        key: String,
    },
    /// The request gave up after looking the key up too often (its fill
    /// leaders kept giving up).
    #[error("{key}: too many lookups")]
    Busy {
        /// The entry.
        key: String,
    },
    /// The cache directory failed.
    #[error("cache: {source}")]
    Store {
        /// The store's error.
        #[source]
        source: Arc<store::Error>,
    },
}

impl Error {
    /// Every source failed.
    pub fn fetch(failed: upstream::Failed) -> Error {
        Error::Fetch {
            failed: Arc::new(failed),
        }
    }

    /// The leader's error that `failure` carries, for a request that
    /// followed a fill or a revalidation: every failure the proxy publishes
    /// holds an `Error`, so this answers as the leader did. (Anything else is
    /// taken for an aborted download of `key`.)
    pub fn from_leader(failure: &Failure, key: &str) -> Error {
        failure
            .downcast_ref::<Error>()
            .cloned()
            .unwrap_or_else(|| Error::Aborted {
                key: key.to_string(),
            })
    }

    /// Where the fault lies.
    pub fn class(&self) -> Class {
        match self {
            Error::Forbidden { .. }
            | Error::Malformed { .. }
            | Error::Method { .. }
            | Error::Path { .. }
            | Error::NotOnMount { .. }
            | Error::Held { .. } => Class::Client,
            Error::Fetch { .. }
            | Error::Missing { .. }
            | Error::Portal { .. }
            | Error::DocumentBody { .. }
            | Error::DocumentTooLarge { .. }
            | Error::Digest { .. }
            | Error::Disagree { .. }
            | Error::Body { .. }
            | Error::Aborted { .. }
            | Error::Unfiltered { .. } => Class::Upstream,
            Error::Busy { .. } | Error::Store { .. } => Class::Internal,
        }
    }

    /// Whether the upstream said that the thing does not exist: every source
    /// said 404 or 410 (or there was no source to ask), now or within the
    /// negative TTL.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::Fetch { failed } => failed.attempts.is_empty() || failed.all_not_found(),
            Error::Missing { .. } => true,
            Error::Unfiltered { never, .. } => *never,
            _ => false,
        }
    }

    /// Whether every source failed by not answering in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Fetch { failed } if failed.all_timed_out())
    }

    /// Whether another attempt may succeed: a source could not be reached,
    /// timed out, answered 5xx or cut the body short; or the cache was busy.
    /// A 404, a refused request, a wrong digest or an HTML page would come
    /// back the same.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Fetch { failed } => failed.attempts.iter().any(transient),
            Error::Body { .. } | Error::Busy { .. } => true,
            Error::Store { source } => matches!(**source, store::Error::Short { .. }),
            _ => false,
        }
    }

    /// Whether the upstream answered but the transfer broke before the body
    /// was whole (a reset or an early close, after the head): then the
    /// requests that followed the attempt try again rather than share it.
    /// A source that cannot be reached, does not answer in time or answers
    /// with an error would do the same again at once: that is shared, so
    /// many clients still cost one attempt.
    pub fn is_cut_short(&self) -> bool {
        match self {
            Error::Fetch { failed } => failed
                .attempts
                .iter()
                .any(|attempt| matches!(attempt, upstream::Error::Body { .. })),
            Error::Body { .. } => true,
            Error::Store { source } => matches!(**source, store::Error::Short { .. }),
            _ => false,
        }
    }

    /// Whether a fill that aborted with `cause` (the writer's error, or the
    /// store's own at the commit) was cut short ([`Error::is_cut_short`]).
    /// Without a cause (abandoned at shutdown), no.
    pub fn cut_short_cause(cause: Option<&Failure>) -> bool {
        let Some(cause) = cause else {
            return false;
        };
        if let Some(err) = cause.downcast_ref::<Error>() {
            return err.is_cut_short();
        }
        // A body shorter than announced: cut short, as a reset is.
        matches!(
            cause.downcast_ref::<store::Error>(),
            Some(store::Error::Short { .. })
        )
    }
}

impl From<TargetError> for Error {
    fn from(err: TargetError) -> Error {
        match err {
            TargetError::Forbidden { host } => Error::Forbidden { host },
            TargetError::Malformed(reason) => Error::Malformed { reason },
        }
    }
}

impl Error {
    /// A refused request: `method` is the request's (for [`RejectReason::Method`]).
    pub fn rejected(reason: RejectReason, method: &Method) -> Error {
        match reason {
            RejectReason::Method => Error::Method {
                method: method.clone(),
            },
            RejectReason::Path(source) => Error::Path { source },
        }
    }
}

/// One failed attempt that says nothing about the file itself.
fn transient(attempt: &upstream::Error) -> bool {
    match attempt {
        upstream::Error::Connect { .. }
        | upstream::Error::Timeout { .. }
        | upstream::Error::Body { .. } => true,
        upstream::Error::Status { status, .. } => status.is_server_error(),
        upstream::Error::Redirect { .. }
        | upstream::Error::Encoding { .. }
        | upstream::Error::Downgrade { .. }
        | upstream::Error::RedirectRefused { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn status(code: u16) -> upstream::Error {
        upstream::Error::Status {
            url: "http://a/x".into(),
            status: StatusCode::from_u16(code).unwrap(),
        }
    }

    fn timeout() -> upstream::Error {
        upstream::Error::Timeout {
            url: "http://a/x".into(),
            secs: 1,
        }
    }

    fn fetch(attempts: Vec<upstream::Error>) -> Error {
        Error::fetch(upstream::Failed { attempts })
    }

    #[test]
    fn upstream_failures_are_classed_by_what_the_sources_said() {
        let gone = fetch(vec![status(404), status(410)]);
        assert_eq!(gone.class(), Class::Upstream);
        assert!(gone.is_not_found() && !gone.is_retryable() && !gone.is_timeout());
        assert!(fetch(Vec::new()).is_not_found(), "no source to ask");
        let mixed = fetch(vec![status(404), status(503)]);
        assert!(!mixed.is_not_found() && mixed.is_retryable());
        let slow = fetch(vec![timeout(), timeout()]);
        assert!(slow.is_timeout() && slow.is_retryable());
        assert!(!fetch(vec![timeout(), status(500)]).is_timeout());
    }

    #[test]
    fn only_a_transfer_cut_short_sends_followers_to_try_again() {
        // Would come back the same at once: shared by everyone who waited.
        for shared in [
            fetch(vec![timeout()]),
            fetch(vec![status(503)]),
            fetch(vec![status(404)]),
            fetch(Vec::new()),
        ] {
            assert!(!shared.is_cut_short(), "{shared:?}");
        }
        let short = store::Error::Short {
            key: "/a".into(),
            expected: 10,
            got: 5,
        };
        assert!(Error::cut_short_cause(Some(&Failure::new(short))));
        let digest = store::Error::Digest {
            key: "/a".into(),
            expected: "x".into(),
            got: "y".into(),
        };
        assert!(!Error::cut_short_cause(Some(&Failure::new(digest))));
        assert!(!Error::cut_short_cause(None), "abandoned at shutdown");
    }

    #[test]
    fn client_and_content_errors_are_never_retried() {
        let refused = Error::Path {
            source: KeyError::DotSegment,
        };
        assert_eq!(refused.class(), Class::Client);
        assert!(!refused.is_retryable());
        let digest = Error::Digest {
            key: "/a".into(),
            listed: "aa".into(),
            got: "bb".into(),
        };
        assert_eq!(digest.class(), Class::Upstream);
        assert!(!digest.is_retryable());
        let busy = Error::Busy { key: "/a".into() };
        assert_eq!(busy.class(), Class::Internal);
        assert!(busy.is_retryable());
    }
}
