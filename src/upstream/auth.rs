//! Reloading the operator's upstream credentials (`--mirror-auth` files) on
//! SIGHUP, as the TLS certificate is: a file that fails to read keeps the
//! credential in use, and the log names the mount and the file, never the
//! secret. The credentials themselves are `config::Credential`; sending them
//! is `Upstream::fetch`'s job.

use crate::config::Credential;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// The SIGHUP handler for a set of file-backed credentials.
pub struct Reloader {
    credentials: Vec<Credential>,
    hangup: Signal,
}

impl Reloader {
    /// Installs the handler at once, so that a SIGHUP sent as soon as the
    /// server listens is neither lost nor fatal. `None` when no credential
    /// comes from a file.
    pub fn install(credentials: Vec<Credential>) -> std::io::Result<Option<Reloader>> {
        if credentials.is_empty() {
            return Ok(None);
        }
        Ok(Some(Reloader {
            credentials,
            hangup: signal(SignalKind::hangup())?,
        }))
    }

    /// Reloads every credential on each SIGHUP until `stop` fires.
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                got = self.hangup.recv() => if got.is_none() { return },
            }
            for credential in &self.credentials {
                let reloading = credential.clone();
                let mount = credential.label();
                match tokio::task::spawn_blocking(move || reloading.reload()).await {
                    Ok(Ok(())) => tracing::info!(mount, "upstream credentials reloaded"),
                    Ok(Err(err)) => tracing::error!(mount, error = %err,
                        "upstream credentials not reloaded; keeping the ones in use"),
                    Err(err) => tracing::error!(mount, error = %err,
                        "upstream credentials reload failed"),
                }
            }
        }
    }
}
