//! The build service's housekeeping: once a minute, uploads no build
//! request claimed and stale inbox files are removed. Runs as one task per
//! app, started by `Builds::start`, until the app's stop token fires.

use super::upload::UPLOAD_TTL;
use super::{discard, inbox, Builds};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

impl Builds {
    /// Every minute: stale inbox files and unclaimed uploads go.
    pub(super) async fn sweep(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let expired: Vec<inbox::Source> = {
                let mut uploads = self
                    .inner
                    .uploads
                    .lock()
                    .expect("uploads lock is never poisoned");
                let old: Vec<String> = uploads
                    .iter()
                    .filter(|(_, pending)| pending.at.elapsed() > UPLOAD_TTL)
                    .map(|(id, _)| id.clone())
                    .collect();
                old.iter()
                    .filter_map(|id| uploads.remove(id))
                    .map(|pending| pending.source)
                    .collect()
            };
            for source in expired {
                discard(Some(source)).await;
            }
            let Some(inbox) = self.inner.inbox.clone() else {
                continue;
            };
            let keep = self.inner.queue.source_paths();
            let uploads: Vec<PathBuf> = self
                .inner
                .uploads
                .lock()
                .expect("uploads lock is never poisoned")
                .values()
                .map(|pending| pending.source.path.clone())
                .collect();
            match tokio::task::spawn_blocking(move || {
                let keep: Vec<PathBuf> = keep.into_iter().chain(uploads).collect();
                inbox.sweep(&keep)
            })
            .await
            {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(removed = n, "inbox: stale files removed"),
                Ok(Err(err)) => tracing::warn!(error = %err, "inbox sweep failed"),
                Err(err) => tracing::warn!(error = %err, "inbox sweep failed"),
            }
        }
    }
}
