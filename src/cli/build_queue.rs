//! `BuildArgs`: the server's build queue and build API options, flattened
//! into `Args`. A group of its own because `config::BuildConfig` reads it
//! whole; the `build` client subcommand's options are in `command`.

use clap::Args as ClapArgs;
use std::path::PathBuf;

/// Options of the build queue and its API.
#[derive(Debug, ClapArgs)]
pub struct BuildArgs {
    /// A runtime builds can target (NAME=INTERPRETER, e.g. ruby31=/usr/bin/ruby,
    /// py311=/usr/bin/python3.11); repeatable. Without one, builds are off.
    #[arg(
        long = "runtime",
        value_name = "NAME=PATH",
        env = "PC_RUNTIMES",
        value_delimiter = ' '
    )]
    pub runtimes: Vec<String>,

    /// The build API listener (HOST:PORT, or off).
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = "localhost:4002",
        env = "PC_API"
    )]
    pub api: String,

    /// A file holding a token that writes to the API (submit, upload, cancel,
    /// load) must send as `Authorization: Bearer TOKEN`.
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,

    /// Builds running at once [default: number of cores].
    #[arg(long, value_name = "N")]
    pub build_concurrency: Option<usize>,

    /// Jobs waiting at most; more are refused with 503 and Retry-After.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub build_queue: usize,

    /// The uids builds run as (FIRST-LAST, one per concurrent build; gid = uid).
    #[arg(long, default_value = "61000-61063", value_name = "FIRST-LAST")]
    pub build_uids: String,

    /// Wall-clock limit of one build step, seconds.
    #[arg(long, default_value_t = 1800, value_name = "SECS")]
    pub build_timeout: u64,

    /// CPU-time limit of one build step, seconds.
    #[arg(long, default_value_t = 1800, value_name = "SECS")]
    pub build_cpu: u64,

    /// Address-space limit of each build process (K, M, G suffixes).
    #[arg(long, default_value = "4G", value_name = "SIZE")]
    pub build_memory: String,

    /// Largest file a build may write (K, M, G suffixes).
    #[arg(long, default_value = "1G", value_name = "SIZE")]
    pub build_file_size: String,

    /// Processes (and threads) of one build uid at most.
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub build_processes: u64,

    /// Largest source accepted (inbox, upload, or download), K/M/G suffixes.
    #[arg(long, default_value = "512M", value_name = "SIZE")]
    pub max_source: String,

    /// Bytes of inbox files one user may have waiting (K/M/G suffixes).
    #[arg(long, default_value = "1G", value_name = "SIZE")]
    pub inbox_quota: String,

    /// Inbox files (and unclaimed uploads) older than this many seconds are removed.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub inbox_stale: u64,

    /// Run builds without isolation (as the server's own user, limits and
    /// timeout only) when the sandbox cannot be set up. Only for trusted sources.
    #[arg(long)]
    pub insecure_builds: bool,
}
