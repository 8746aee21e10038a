//! `config::Error`: every way the command line can be wrong, reported before
//! anything starts. One enum for all of `config`, so that `main` prints any
//! of them the same way.

/// A configuration error, reported before start-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `--source` URL is not an absolute http(s) URL.
    #[error("invalid source URL {url:?}: {reason}")]
    Source {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A host name in an option is not valid.
    #[error("invalid host {0:?}")]
    Host(String),
    /// A `--resolve` entry is not `HOST:PORT:ADDR`.
    #[error("invalid --resolve {0:?}: expected HOST:PORT:ADDR")]
    Resolve(String),
    /// No cache directory was given and no default could be derived.
    #[error("no cache directory: pass --cache DIR")]
    NoCacheDir,
    /// Nothing to fetch from: no `--source`, `--mirror` or `--transparent-host`,
    /// so every request would be a 404.
    #[error(
        "no upstream to cache from: add --source URL (a mirror, repeatable, e.g. \
         --source http://mirror.example/gentoo) or --mirror NAME=URL (e.g. \
         --mirror pypi=https://pypi.example); see --help"
    )]
    NoUpstream,
    /// A `--mirror`, `--profile`, `--files-host`, `--mirror-auth`, `--index-path` or
    /// `--go-sum` entry is malformed.
    #[error("invalid {option} {value:?}: {reason}")]
    Mount {
        /// The option.
        option: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A size is not a number with an optional K/M/G/T suffix.
    #[error("invalid size {0:?}: expected a number of bytes with an optional K, M, G or T suffix")]
    Size(String),
    /// `--public-url` is not an absolute http(s) URL of its own.
    #[error("invalid --public-url {value:?}: {reason}")]
    PublicUrl {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A listener option is neither `HOST:PORT` nor `off`.
    #[error("invalid {0} {1:?}: expected HOST:PORT or off")]
    Listen(&'static str, String),
    /// A build option is malformed.
    #[error("invalid {option} {value:?}: {reason}")]
    Build {
        /// The option.
        option: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `--no-cache` or `--pin` pattern is not a valid glob.
    #[error("invalid pattern {pattern:?}: {reason}")]
    Pattern {
        /// The pattern given.
        pattern: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A supply-chain policy option is malformed.
    #[error("invalid {option} {value:?}: {reason}")]
    Supply {
        /// The option.
        option: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `--shared-store` or a `--shared-store-opt` is malformed.
    #[error("invalid shared store setting {value:?}: {reason}")]
    SharedStore {
        /// The URL or option given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}
