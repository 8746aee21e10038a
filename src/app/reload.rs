//! Reloading the TLS listener's certificate on SIGHUP, through the one
//! hangup loop (`crate::hangup`). The other SIGHUP reloaders (mirror
//! credentials, go.sum files) belong to their modules; this one lives here
//! because the certificate is read by `start`, as root.

use crate::hangup::OnHangup;
use crate::tls;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Reloads the TLS certificate on each SIGHUP until `stop` fires; a reload
/// that fails keeps the certificate in use.
pub(super) fn reload_on_sighup(
    certificate: Arc<tls::Reloadable>,
    tasks: &TaskTracker,
    stop: CancellationToken,
) {
    let hangup = match OnHangup::install() {
        Ok(hangup) => hangup,
        Err(err) => {
            tracing::warn!(error = %err, "no SIGHUP handler; the TLS certificate is never reloaded");
            return;
        }
    };
    let reload = move || match certificate.reload() {
        Ok(()) => tracing::info!("TLS certificate reloaded"),
        Err(err) => {
            tracing::error!(error = %err, "TLS certificate not reloaded; keeping the one in use")
        }
    };
    tasks.spawn(hangup.run("TLS certificate", stop, reload));
}
