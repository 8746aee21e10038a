//! Reloading the operator's `--go-sum` files on SIGHUP, as `--mirror-auth`
//! files are (`upstream::auth`): each file is read off the runtime, and one
//! that fails to read keeps the hashes in use; the log says which and why.
//! The hashes themselves are `config::GoSumFile`; checking a download
//! against them is `proxy::indexed`'s job.

use crate::config::GoSumFile;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// The SIGHUP handler for a set of go.sum files.
pub struct GoSumReloader {
    files: Vec<GoSumFile>,
    hangup: Signal,
}

impl GoSumReloader {
    /// Installs the handler at once, so that a SIGHUP sent as soon as the
    /// server listens is neither lost nor fatal. `None` when there is no file.
    pub fn install(files: Vec<GoSumFile>) -> std::io::Result<Option<GoSumReloader>> {
        if files.is_empty() {
            return Ok(None);
        }
        Ok(Some(GoSumReloader {
            files,
            hangup: signal(SignalKind::hangup())?,
        }))
    }

    /// Reloads every file on each SIGHUP until `stop` fires.
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                got = self.hangup.recv() => if got.is_none() { return },
            }
            for file in &self.files {
                let reloading = file.clone();
                let (mount, path) = (file.mount(), file.file().display());
                match tokio::task::spawn_blocking(move || reloading.reload()).await {
                    Ok(Ok(loaded)) => log_loaded(file, loaded, "go.sum reloaded"),
                    Ok(Err(err)) => tracing::error!(mount, file = %path, error = %err,
                        "go.sum not reloaded; keeping the hashes in use"),
                    Err(err) => tracing::error!(mount, file = %path, error = %err,
                        "go.sum reload failed; keeping the hashes in use"),
                }
            }
        }
    }
}

/// The log line for a go.sum read: how many hashes, and how many lines were skipped.
pub fn log_loaded(file: &GoSumFile, loaded: crate::config::GoSumLoaded, what: &str) {
    let (mount, path) = (file.mount(), file.file().display());
    if loaded.malformed > 0 {
        tracing::warn!(mount, file = %path, hashes = loaded.hashes,
            malformed = loaded.malformed, "{what}; malformed lines skipped");
    } else {
        tracing::info!(mount, file = %path, hashes = loaded.hashes, "{what}");
    }
}
