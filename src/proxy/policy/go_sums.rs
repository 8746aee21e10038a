//! Reloading the operator's `--go-sum` files on SIGHUP (`crate::hangup`), as
//! `--mirror-auth` files are: each file is read off the runtime, and one
//! that fails to read keeps the hashes in use; the log says which and why.
//! The hashes themselves are `config::GoSumFile`; checking a download
//! against them is `proxy::indexed`'s job.

use crate::config::GoSumFile;
use crate::hangup::OnHangup;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The SIGHUP handler for a set of go.sum files.
pub struct GoSumReloader {
    files: Arc<Vec<GoSumFile>>,
    hangup: OnHangup,
}

impl GoSumReloader {
    /// Installs the handler at once. `None` when there is no file.
    pub fn install(files: Vec<GoSumFile>) -> std::io::Result<Option<GoSumReloader>> {
        if files.is_empty() {
            return Ok(None);
        }
        Ok(Some(GoSumReloader {
            files: Arc::new(files),
            hangup: OnHangup::install()?,
        }))
    }

    /// Reloads every file on each SIGHUP until `stop` fires.
    pub async fn run(self, stop: CancellationToken) {
        let files = self.files;
        let reload = move || {
            for file in files.iter() {
                match file.reload() {
                    Ok(loaded) => log_loaded(file, loaded, "go.sum reloaded"),
                    Err(err) => {
                        tracing::error!(mount = file.mount(), file = %file.file().display(),
                        error = %err, "go.sum not reloaded; keeping the hashes in use")
                    }
                }
            }
        };
        self.hangup.run("go.sum", stop, reload).await;
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
