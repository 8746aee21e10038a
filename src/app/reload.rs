//! Reloading the TLS listener's certificate on SIGHUP. The other SIGHUP
//! reloaders (mirror credentials, go.sum files) belong to their modules;
//! this one lives here because the certificate is read by `start`, as root.

use crate::tls;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Reloads the TLS certificate on each SIGHUP until `stop` fires; a reload
/// that fails keeps the certificate in use.
pub(super) async fn reload_on_sighup(certificate: Arc<tls::Reloadable>, stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(hup) => hup,
        Err(err) => {
            tracing::warn!(error = %err, "no SIGHUP handler; the TLS certificate is never reloaded");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            got = hup.recv() => if got.is_none() { return },
        }
        let certificate = certificate.clone();
        match tokio::task::spawn_blocking(move || certificate.reload()).await {
            Ok(Ok(())) => tracing::info!("TLS certificate reloaded"),
            Ok(Err(err)) => {
                tracing::error!(error = %err, "TLS certificate not reloaded; keeping the one in use")
            }
            Err(err) => tracing::error!(error = %err, "TLS certificate reload failed"),
        }
    }
}
