//! The one SIGHUP loop behind every operator file that is re-read on a
//! hangup (`--mirror-auth` credentials, `--go-sum` files, the TLS
//! certificate): the handler is installed at start-up, so that a SIGHUP sent
//! as soon as the server listens reloads rather than kills, and each reload
//! runs off the runtime (it reads files). What to reload, and what to log
//! about it, is the caller's.

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// An installed SIGHUP handler, waiting to be run.
pub struct OnHangup {
    hangup: Signal,
}

impl OnHangup {
    /// Installs the handler now.
    pub fn install() -> std::io::Result<OnHangup> {
        Ok(OnHangup {
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Calls `reload` (blocking; it logs its own outcome) on the blocking
    /// pool after each SIGHUP, one at a time, until `stop` fires. `what`
    /// names it in the log line of a reload that panicked.
    pub async fn run<F>(mut self, what: &'static str, stop: CancellationToken, reload: F)
    where
        F: Fn() + Clone + Send + 'static,
    {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                got = self.hangup.recv() => if got.is_none() { return },
            }
            if let Err(err) = tokio::task::spawn_blocking(reload.clone()).await {
                tracing::error!(error = %err, "{what} reload failed; keeping what is in use");
            }
        }
    }
}
