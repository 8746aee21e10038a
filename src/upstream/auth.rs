//! Reloading the operator's upstream credentials (`--mirror-auth` files) on
//! SIGHUP (`crate::hangup`): a file that fails to read keeps the credential
//! in use, and the log names the mount and the file, never the secret. The
//! credentials themselves are `config::Credential`; sending them is
//! `Upstream::fetch`'s job.

use crate::config::Credential;
use crate::hangup::OnHangup;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The SIGHUP handler for a set of file-backed credentials.
pub struct Reloader {
    credentials: Arc<Vec<Credential>>,
    hangup: OnHangup,
}

impl Reloader {
    /// Installs the handler at once. `None` when no credential comes from a file.
    pub fn install(credentials: Vec<Credential>) -> std::io::Result<Option<Reloader>> {
        if credentials.is_empty() {
            return Ok(None);
        }
        Ok(Some(Reloader {
            credentials: Arc::new(credentials),
            hangup: OnHangup::install()?,
        }))
    }

    /// Reloads every credential on each SIGHUP until `stop` fires.
    pub async fn run(self, stop: CancellationToken) {
        let credentials = self.credentials;
        let reload = move || {
            for credential in credentials.iter() {
                let mount = credential.label();
                match credential.reload() {
                    Ok(()) => tracing::info!(mount, "upstream credentials reloaded"),
                    Err(err) => tracing::error!(mount, error = %err,
                        "upstream credentials not reloaded; keeping the ones in use"),
                }
            }
        };
        self.hangup.run("upstream credentials", stop, reload).await;
    }
}
