//! `sandbox::Error`: why the sandbox could not do what was asked; shared by
//! the in-process executor and the privileged helper (which sends it back
//! over its wire as a `Failure`).

use std::path::PathBuf;

/// Why the sandbox could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Isolation cannot be set up here (not root, tools missing, namespaces
    /// refused); builds must be refused unless the operator allows insecure ones.
    #[error("build isolation is unavailable: {0}")]
    Unavailable(String),
    /// A step, path or uid that the sandbox refuses (bad configuration, or a
    /// request the privileged helper will not carry out).
    #[error("refused: {0}")]
    Invalid(String),
    /// The step's first process could not be started.
    #[error("starting {program}: {source}")]
    Spawn {
        /// What was started.
        program: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Processes of a build uid survived SIGKILL; the uid is not reused.
    #[error("processes of build uid {uid} outlived SIGKILL: {pids:?}")]
    Leftover {
        /// The build uid.
        uid: u32,
        /// Those still alive.
        pids: Vec<i32>,
    },
    /// The privileged helper failed, went away, or answered nonsense.
    #[error("sandbox helper: {0}")]
    Helper(String),
    /// The step was cancelled and every process of it killed.
    #[error("cancelled")]
    Cancelled,
}
