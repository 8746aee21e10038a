//! `store::Error`: what can go wrong touching the cache directory, with the
//! path or key it concerns. No HTTP here: callers choose the status.

use super::lock;
use std::io;
use std::path::PathBuf;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another process holds the cache directory's lock.
    #[error("cache directory {root} is locked by {} (lock file {path})", lock::describe(*pid))]
    Locked {
        /// The cache root.
        root: PathBuf,
        /// The lock file.
        path: PathBuf,
        /// The holder's PID, as it wrote it in the lock file.
        pid: Option<u32>,
    },
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The body ended before its announced length.
    #[error("body of {key} ended after {got} of {expected} bytes")]
    Short {
        /// The entry.
        key: String,
        /// Announced length.
        expected: u64,
        /// Bytes received.
        got: u64,
    },
    /// The body went on past its announced length.
    #[error("body of {key} is longer than the announced {expected} bytes")]
    TooLong {
        /// The entry.
        key: String,
        /// Announced length.
        expected: u64,
    },
    /// The body does not have the digest its index lists.
    #[error("body of {key} has {got}, the index lists {expected}")]
    Digest {
        /// The entry.
        key: String,
        /// The index's digest.
        expected: String,
        /// The body's, in the same algorithm (or its sha256 where that
        /// could not be computed).
        got: String,
    },
    /// The disk refused a fill and every reader of it left.
    #[error("every reader of {key} left while it was streamed uncached")]
    NoReaders {
        /// The entry.
        key: String,
    },
    /// A committed body is damaged on disk; it was quarantined.
    #[error("cached body of {key} is damaged: {damage}")]
    Damaged {
        /// The entry.
        key: String,
        /// What is wrong with it.
        damage: super::Damage,
    },
    /// Reading a committed body to check it against a listed digest failed.
    #[error("cannot check {key} against {digest}: {message}")]
    Check {
        /// The entry.
        key: String,
        /// The digest listed for it.
        digest: String,
        /// What went wrong (shared with every request that waited for the
        /// check, hence text).
        message: String,
    },
    /// A blocking task panicked or was cancelled.
    #[error("blocking task failed: {0}")]
    Join(String),
    /// The shared object-store tier failed (see `shared::Error`).
    #[error("shared tier, {key}: {source}")]
    Shared {
        /// The entry.
        key: String,
        /// What the shared tier said (boxed: it is large, and rare).
        #[source]
        source: Box<super::shared::Error>,
    },
}

impl Error {
    pub(crate) fn join(err: tokio::task::JoinError) -> Error {
        Error::Join(err.to_string())
    }
}
