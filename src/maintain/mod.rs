//! The maintenance subcommands: `stats`, `verify`, `gc` and `purge`, one file
//! each. They work on a cache directory with blocking filesystem calls, also
//! while a server serves from it; they rely on `store`'s maintenance API and
//! its `Layout` only (never on the proxy or upstream code) and print their findings to `out`, one line per
//! item and a summary line last. Progress goes to stderr when it is a terminal.

mod gc;
mod purge;
mod shared;
mod stats;
mod verify;

use crate::cli::Command;
use crate::store::Layout;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Errors that stop a maintenance command. Damage found in the cache is not
/// an error: it is counted and reported.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command is not a maintenance command.
    #[error("not a maintenance command")]
    NotMaintenance,
    /// The cache directory cannot be walked.
    #[error(transparent)]
    Scan(#[from] crate::store::maintenance::ScanError),
    /// The purge pattern is not a valid glob.
    #[error("invalid pattern {pattern:?}: {reason}")]
    Pattern {
        /// The pattern given.
        pattern: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A filesystem operation the command depends on failed.
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
    /// An option of a command is malformed.
    #[error("{0}")]
    Usage(String),
    /// The shared store failed (not damage, which is reported).
    #[error(transparent)]
    Shared(Box<crate::store::shared::Error>),
    /// Writing the report failed (a closed pipe).
    #[error("writing the report: {0}")]
    Output(#[from] io::Error),
}

/// How a command ended, for the exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing wrong (or everything found was fixed, as `gc` does).
    Clean,
    /// `verify` found entries that do not match their sha256, or could not read some.
    Failed,
}

/// Runs `command` on the cache at `root`, writing its report to `out`.
pub fn run(command: &Command, root: &Path, out: &mut dyn Write) -> Result<Verdict, Error> {
    if let Some((config, shared_command)) = on_bucket(command)? {
        return shared::run(&config, &shared_command, out);
    }
    let layout = Layout::new(root);
    match command {
        Command::Stats { json, .. } => stats::run(&layout, *json, out),
        Command::Verify { .. } => verify::run(&layout, out),
        Command::Gc { dry_run, .. } => gc::run(&layout, *dry_run, out),
        Command::Purge {
            pattern, dry_run, ..
        } => purge::run(&layout, pattern, *dry_run, out),
        Command::Build(_) | Command::Inbox(_) => Err(Error::NotMaintenance),
    }
}

/// The bucket and what to do there, when the command names a shared store.
fn on_bucket(
    command: &Command,
) -> Result<Option<(crate::config::SharedStoreConfig, shared::SharedCommand)>, Error> {
    use shared::SharedCommand as S;
    let (arg, what) = match command {
        Command::Stats { shared, json, .. } => (shared, S::Stats { json: *json }),
        Command::Verify { shared, .. } => (shared, S::Verify),
        Command::Purge {
            shared,
            pattern,
            dry_run,
            ..
        } => (
            shared,
            S::Purge {
                pattern: pattern.clone(),
                dry_run: *dry_run,
            },
        ),
        Command::Gc {
            shared: true,
            store,
            dry_run,
            max_size,
            grace,
            ..
        } => {
            let max_size = max_size
                .as_deref()
                .map(crate::config::parse_size)
                .transpose()
                .map_err(|e| Error::Usage(e.to_string()))?;
            let grace = humantime::parse_duration(grace)
                .map_err(|e| Error::Usage(format!("--grace {grace}: {e}")))?;
            let what = S::Gc {
                dry_run: *dry_run,
                grace,
                max_size,
            };
            (store, what)
        }
        _ => return Ok(None),
    };
    let Some(url) = &arg.shared_store else {
        return Ok(None);
    };
    let config = crate::config::SharedStoreConfig::try_from_args(url, &arg.shared_store_opts)
        .map_err(|e| Error::Usage(e.to_string()))?;
    Ok(Some((config, what)))
}

/// A progress bar on stderr, drawn only when stderr is a terminal so that
/// logs and test output stay clean. `total` is in bytes when given; without
/// it, a spinner counts items.
fn progress(total: Option<u64>) -> ProgressBar {
    let target = if io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = match total {
        Some(total) => {
            let bar = ProgressBar::with_draw_target(Some(total), target);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        }
        None => {
            let bar = ProgressBar::with_draw_target(None, target);
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}: {human_pos} files") {
                bar.set_style(style);
            }
            bar
        }
    };
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A path for the report: relative to the cache root when beneath it.
fn shown(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Whether a state file or directory was last changed more than `grace` ago.
/// A server writes an entry's metadata just before renaming its body into
/// place, and creates its directories just before that: anything younger may
/// be a commit in progress.
fn settled(mtime: SystemTime, grace: Duration) -> bool {
    SystemTime::now()
        .duration_since(mtime)
        .is_ok_and(|age| age >= grace)
}

/// Removes a file, counting one already gone as removed by someone else.
fn remove_file(path: &Path) -> io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}
