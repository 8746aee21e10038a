//! Built artifacts in the shared store (`--shared-store`), keyed by artifact name and
//! the runtime's ABI: a node publishes what it built, in the background, and a node
//! asked for an artifact it lacks takes the published one instead of building it.
//! The store being down never fails a build nor a request: it only means building.
//! Owns neither the local artifacts (`artifacts`) nor the store (`store::shared`).

use super::artifacts::{ArtifactMeta, Artifacts};
use crate::store::shared::{ArtifactInfo, SharedStore, UploadHint};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Chunk size when reading an archive up to the store.
const CHUNK: usize = 64 * 1024;

/// The shared store as the build queue uses it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SharedArtifacts {
    store: SharedStore,
    artifacts: Artifacts,
    /// The cache's `tmp/`, where a fetched archive is written before its commit.
    tmp: PathBuf,
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl SharedArtifacts {
    /// Publications run on `tracker` and stop with `stop`.
    pub fn new(
        store: SharedStore,
        artifacts: Artifacts,
        tmp: PathBuf,
        tracker: TaskTracker,
        stop: CancellationToken,
    ) -> SharedArtifacts {
        SharedArtifacts {
            store,
            artifacts,
            tmp,
            tracker,
            stop,
        }
    }

    /// Publishes the committed artifact `meta` in the background (an owned task on the
    /// app's tracker, cancelled at shutdown). A failure is logged, never returned: the
    /// build succeeded whatever the store says.
    pub fn spawn_publish(&self, meta: ArtifactMeta) {
        let this = self.clone();
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                result = this.publish(&meta) => match result {
                    Ok(won) => tracing::info!(key = %meta.name, bytes = meta.size, won, "artifact published to the shared store"),
                    Err(err) => tracing::warn!(key = %meta.name, error = %err, "artifact not published to the shared store"),
                },
                _ = stop.cancelled() => {}
            }
        });
    }

    async fn publish(&self, meta: &ArtifactMeta) -> Result<bool, String> {
        let mut file = tokio::fs::File::open(self.artifacts.path(&meta.name))
            .await
            .map_err(|e| e.to_string())?;
        let mut upload = self
            .store
            .upload(UploadHint {
                size: Some(meta.size),
                sha256: Some(meta.sha256.clone()),
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0; CHUNK];
        loop {
            let n = file.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            upload
                .write(bytes::Bytes::copy_from_slice(&buf[..n]))
                .await
                .map_err(|e| e.to_string())?;
        }
        let body = upload.finish().await.map_err(|e| e.to_string())?;
        let info = ArtifactInfo {
            abi: meta.abi.clone(),
            source_sha256: meta.source_sha256.clone(),
            built: meta.built,
            job: meta.job.clone(),
        };
        let published = self
            .store
            .publish_artifact(&meta.name, body, info)
            .await
            .map_err(|e| e.to_string())?;
        Ok(published.won())
    }

    /// Takes artifact `name` built for `abi` (from a source of `source_sha256`, for a
    /// local source) from the shared store and commits it locally, as if built here.
    /// `None` when it is not published, or on any failure (logged): then it is built.
    pub async fn take(
        &self,
        name: &str,
        abi: &str,
        source_sha256: Option<&str>,
    ) -> Option<ArtifactMeta> {
        match self.try_take(name, abi, source_sha256).await {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(key = %name, error = %err, "shared artifact not taken; building");
                None
            }
        }
    }

    async fn try_take(
        &self,
        name: &str,
        abi: &str,
        source_sha256: Option<&str>,
    ) -> Result<Option<ArtifactMeta>, String> {
        let Some(found) = self
            .store
            .lookup_artifact(abi, name)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let info = &found.reference.meta;
        // The same rule as for a local artifact: a local source's build is reused
        // only for the same bytes.
        if info.source_sha256.as_deref() != source_sha256 {
            return Ok(None);
        }
        let mut body = self.store.body(&found).await.map_err(|e| e.to_string())?;
        // A random name (`create_new` below refuses a clash); the cache's `tmp/` is
        // emptied at start-up, so a crash leaves nothing behind for long.
        let mut random = [0u8; 16];
        let _ = getrandom::fill(&mut random);
        let tmp = self
            .tmp
            .join(format!("shared-artifact-{}.part", hex::encode(random)));
        let written = async {
            let mut file = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .await
                .map_err(|e| e.to_string())?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            // `SharedBody` ends cleanly only when length and sha256 matched; the
            // digest is computed again here for the record, and compared.
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| e.to_string())?;
                hasher.update(&chunk);
                size += chunk.len() as u64;
                file.write_all(&chunk).await.map_err(|e| e.to_string())?;
            }
            file.flush().await.map_err(|e| e.to_string())?;
            file.sync_data().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((hex::encode(hasher.finalize()), size))
        }
        .await;
        let (sha256, size) = match written {
            Ok(got) if got.0 == found.reference.sha256 && got.1 == found.reference.size => got,
            Ok(_) => {
                remove(&tmp).await;
                return Err("the body does not match its reference".into());
            }
            Err(err) => {
                remove(&tmp).await;
                return Err(err);
            }
        };
        let meta = ArtifactMeta {
            name: name.to_string(),
            sha256,
            size,
            abi: abi.to_string(),
            source_sha256: source_sha256.map(str::to_string),
            built: info.built,
            job: info.job.clone(),
        };
        let artifacts = self.artifacts.clone();
        let committed = meta.clone();
        let staged = tmp.clone();
        let result = tokio::task::spawn_blocking(move || artifacts.commit(&staged, &committed))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        if let Err(err) = result {
            remove(&tmp).await;
            return Err(format!("committing: {err}"));
        }
        tracing::info!(key = %name, bytes = size, "artifact taken from the shared store");
        Ok(Some(meta))
    }
}

async fn remove(path: &Path) {
    let _ = tokio::fs::remove_file(path).await;
}
