//! `builds::Error`: why a build request failed, and `ErrorKind`, how the
//! API should answer it (the API maps kinds to status codes in one place).

use super::job::ErrorClass;
use super::{inbox, kind, queue, quota, runtime, spec};

/// Why a build request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong.
    #[error(transparent)]
    Spec(#[from] spec::Error),
    /// No runtime of that name is configured.
    #[error("unknown runtime {0:?} (configured: {1})")]
    UnknownRuntime(String, String),
    /// No package type of that name.
    #[error("unknown package type {0:?} (known: gem, pip)")]
    UnknownKind(String),
    /// The type does not build for the runtime's language.
    #[error("a {kind} package cannot be built for runtime {runtime:?}, which is {family}")]
    WrongFamily {
        /// The package type.
        kind: &'static str,
        /// The runtime.
        runtime: String,
        /// Its language.
        family: &'static str,
    },
    /// The queue refused the job.
    #[error(transparent)]
    Queue(#[from] queue::Error),
    /// A local source was refused.
    #[error(transparent)]
    Inbox(#[from] inbox::Error),
    /// The client's uploads would pass its quota.
    #[error("{0}; retry once builds have claimed its uploads")]
    OverQuota(#[from] quota::OverQuota),
    /// No upload with that id.
    #[error("no upload {0:?} (uploads are kept for a limited time)")]
    NoUpload(String),
    /// The runtime could not be probed.
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
    /// A VCAP file name names no release on the index.
    #[error(transparent)]
    Kind(#[from] kind::Error),
    /// Builds cannot run here (isolation unavailable, or no runtimes).
    #[error("builds are off on this server: {0}")]
    Disabled(String),
    /// A blocking `PUT /load` build failed.
    #[error("{message}")]
    Failed {
        /// Whose fault.
        class: ErrorClass,
        /// Why.
        message: String,
    },
    /// Reading or writing the build directories failed.
    #[error("build storage: {0}")]
    Io(#[from] std::io::Error),
}

/// How the API answers an `Error`; `api` maps these to status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400.
    BadRequest,
    /// 404.
    NotFound,
    /// 403.
    Forbidden,
    /// 409.
    Conflict,
    /// 413.
    TooLarge,
    /// 503 with Retry-After.
    Busy,
    /// 503: builds cannot run.
    Unavailable,
    /// A blocking build failed for the request's reasons.
    BuildFailed,
    /// 500.
    Server,
}

impl Error {
    /// How to answer it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Spec(_)
            | Error::UnknownRuntime(..)
            | Error::UnknownKind(_)
            | Error::WrongFamily { .. } => ErrorKind::BadRequest,
            Error::Queue(queue::Error::Full(_)) => ErrorKind::Busy,
            Error::Queue(queue::Error::NotFound) => ErrorKind::NotFound,
            Error::Queue(queue::Error::NotAllowed) => ErrorKind::Forbidden,
            Error::Queue(queue::Error::Conflict) => ErrorKind::Conflict,
            Error::Queue(queue::Error::Stopping) => ErrorKind::Unavailable,
            Error::Queue(queue::Error::Journal(_)) => ErrorKind::Server,
            Error::Inbox(inbox::Error::TooBig { .. }) => ErrorKind::TooLarge,
            Error::Inbox(err) if err.is_client() => ErrorKind::BadRequest,
            Error::Inbox(_) => ErrorKind::Server,
            Error::NoUpload(_) => ErrorKind::BadRequest,
            // Alone over the quota: never accepted; else: once some are claimed.
            Error::OverQuota(over) if over.more > over.limit => ErrorKind::TooLarge,
            Error::OverQuota(_) => ErrorKind::Busy,
            Error::Runtime(_) => ErrorKind::Server,
            Error::Kind(err) if err.is_client() => ErrorKind::BadRequest,
            Error::Kind(_) => ErrorKind::Server,
            Error::Disabled(_) => ErrorKind::Unavailable,
            Error::Failed {
                class: ErrorClass::Client,
                ..
            } => ErrorKind::BuildFailed,
            Error::Failed { .. } => ErrorKind::Server,
            Error::Io(_) => ErrorKind::Server,
        }
    }
}
