//! What the proxy reports to the metrics, as values: a request whose answer
//! is over (`Served`), how a download into the cache ended (`FillEnd`), and
//! what asking the upstream about an index document gave (`Refresh`).

use super::rows::Row;
use crate::cache_status::CacheStatus;

/// How the answer to a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The whole body was sent.
    Complete,
    /// The client left before the end (or before any answer).
    ClientGone,
    /// The body broke off on this side (its upstream or the disk failed).
    Aborted,
}

/// One request whose answer is over, as the proxy reports it.
#[derive(Clone, Copy, Debug)]
pub struct Served {
    /// The row it is counted in ([`Metrics::row`]).
    pub row: Row,
    /// What the cache did; `None` for answers that are neither from the
    /// cache nor from upstream (their bytes are not counted).
    pub cache: Option<CacheStatus>,
    /// Served from a download another request started.
    pub joined: bool,
    /// Body bytes sent.
    pub bytes: u64,
    /// How the answer ended.
    pub ending: Ending,
}

/// How a download into the cache ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FillEnd {
    /// Stored.
    Committed,
    /// Complete and served, but the store did not keep it.
    NotStored,
    /// Broken off, wrong length or digest, or a write failed: nothing stored.
    Failed,
    /// Given up at shutdown.
    Abandoned,
}

impl FillEnd {
    pub(super) const ALL: [FillEnd; 4] = [
        FillEnd::Committed,
        FillEnd::NotStored,
        FillEnd::Failed,
        FillEnd::Abandoned,
    ];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            FillEnd::Committed => "committed",
            FillEnd::NotStored => "not_stored",
            FillEnd::Failed => "failed",
            FillEnd::Abandoned => "abandoned",
        }
    }
}

/// What asking the upstream about an index document gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refresh {
    /// A new version, stored.
    Updated,
    /// 304: the stored copy is current.
    NotModified,
    /// No answer, an error, or gone (404/410).
    Failed,
    /// An answer that is not a document, passed on.
    Passed,
}

impl Refresh {
    pub(super) const ALL: [Refresh; 4] = [
        Refresh::Updated,
        Refresh::NotModified,
        Refresh::Failed,
        Refresh::Passed,
    ];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Refresh::Updated => "updated",
            Refresh::NotModified => "not_modified",
            Refresh::Failed => "failed",
            Refresh::Passed => "passed",
        }
    }
}
