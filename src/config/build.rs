//! `BuildConfig`: the build queue's validated settings — runtimes, the API
//! listener and its token, concurrency and queue bounds, the uid range and
//! limits of the sandbox, and the inbox limits.

use super::{parse_size, Error, ListenAddr};
use crate::cli::BuildArgs;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

/// True when `s` may be a name, version, platform or runtime of a build (a
/// part of an artifact's file name): 1 to 128 of `[A-Za-z0-9._+-]`, not
/// starting with a dot (so never `.` or `..`). Here, below the build queue,
/// because `--runtime` names are checked when the options are read;
/// `builds::spec` checks every field of a request by this rule.
pub fn valid_field(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
}

/// The build queue's settings.
#[derive(Clone, Debug)]
pub struct BuildConfig {
    /// Runtime name → interpreter path, as given.
    pub runtimes: Vec<(String, PathBuf)>,
    /// The API listener; `None`: off.
    pub api: Option<ListenAddr>,
    /// Writes to the API need this bearer token, when set.
    pub api_token: Option<String>,
    /// Builds at once.
    pub concurrency: usize,
    /// Jobs waiting at most.
    pub queue_size: usize,
    /// Uids for builds (gid = uid).
    pub uids: Range<u32>,
    /// Wall-clock limit of a step.
    pub timeout: Duration,
    /// CPU-time limit of a step.
    pub cpu: Duration,
    /// RLIMIT_AS of build processes.
    pub memory: u64,
    /// RLIMIT_FSIZE of build processes.
    pub file_size: u64,
    /// RLIMIT_NPROC of a build uid.
    pub processes: u64,
    /// Largest source accepted.
    pub max_source: u64,
    /// Inbox bytes per user.
    pub inbox_quota: u64,
    /// Inbox files older than this are removed.
    pub inbox_stale: Duration,
    /// Build without isolation when it cannot be set up.
    pub insecure: bool,
}

impl BuildConfig {
    /// Defaults for tests: no runtimes, API on 127.0.0.1:0, small bounds.
    pub fn for_test() -> BuildConfig {
        BuildConfig {
            runtimes: Vec::new(),
            api: Some(ListenAddr::loopback_any_port()),
            api_token: None,
            concurrency: 2,
            queue_size: 64,
            uids: 61000..61064,
            timeout: Duration::from_secs(600),
            cpu: Duration::from_secs(600),
            memory: 4 << 30,
            file_size: 1 << 30,
            processes: 512,
            max_source: 512 << 20,
            inbox_quota: 1 << 30,
            inbox_stale: Duration::from_secs(600),
            insecure: false,
        }
    }

    /// Validates the build options.
    pub fn try_from_args(args: &BuildArgs) -> Result<BuildConfig, Error> {
        let bad = |option: &'static str, value: &str, reason: &str| Error::Build {
            option,
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let mut runtimes = Vec::new();
        for raw in &args.runtimes {
            let (name, path) = raw
                .split_once('=')
                .ok_or_else(|| bad("--runtime", raw, "expected NAME=INTERPRETER"))?;
            if !valid_field(name) {
                return Err(bad("--runtime", raw, "a name is letters, digits, . _ + -"));
            }
            if runtimes.iter().any(|(n, _): &(String, PathBuf)| n == name) {
                return Err(bad("--runtime", raw, "this name is given twice"));
            }
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(bad(
                    "--runtime",
                    raw,
                    "the interpreter must be an absolute path",
                ));
            }
            runtimes.push((name.to_string(), path));
        }
        let api = ListenAddr::try_listen("--api", &args.api)?;
        let api_token = match &args.api_token_file {
            Some(file) => {
                let token = std::fs::read_to_string(file).map_err(|err| {
                    bad(
                        "--api-token-file",
                        &file.display().to_string(),
                        &err.to_string(),
                    )
                })?;
                let token = token.trim().to_string();
                if token.is_empty() {
                    return Err(bad(
                        "--api-token-file",
                        &file.display().to_string(),
                        "the file is empty",
                    ));
                }
                Some(token)
            }
            None => None,
        };
        let (first, last) = args
            .build_uids
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?)))
            .filter(|(a, b)| *a > 0 && a <= b)
            .ok_or_else(|| {
                bad(
                    "--build-uids",
                    &args.build_uids,
                    "expected FIRST-LAST, FIRST > 0",
                )
            })?;
        let concurrency = args
            .build_concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1);
        let uids = first..last.saturating_add(1);
        if (uids.len()) < concurrency {
            return Err(bad(
                "--build-uids",
                &args.build_uids,
                "needs at least one uid per concurrent build (--build-concurrency)",
            ));
        }
        let secs = Duration::from_secs;
        Ok(BuildConfig {
            runtimes,
            api,
            api_token,
            concurrency,
            queue_size: args.build_queue.max(1),
            uids,
            timeout: secs(args.build_timeout.max(1)),
            cpu: secs(args.build_cpu.max(1)),
            memory: parse_size(&args.build_memory)?,
            file_size: parse_size(&args.build_file_size)?,
            processes: args.build_processes.max(1),
            max_source: parse_size(&args.max_source)?,
            inbox_quota: parse_size(&args.inbox_quota)?,
            inbox_stale: secs(args.inbox_stale.max(1)),
            insecure: args.insecure_builds,
        })
    }
}
