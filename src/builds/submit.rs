//! `Builds::submit`: a build request from validation to a queued job or an
//! existing artifact. The order is the point: refusals that leave the client
//! able to retry come before a local source is taken in (which consumes it),
//! and a taken-in source that is refused, reused or joins a job is discarded.

use super::inbox;
use super::kind::Kind;
use super::queue;
use super::runtime::Runtime;
use super::spec::{BuildRequest, LocalHandle, Source, Spec};
use super::{discard, Builds, Error, Outcome};

impl Builds {
    /// The package type and runtime a request names, checked against each
    /// other; refused before anything is fetched.
    pub(super) fn resolve(&self, kind: &str, runtime: &str) -> Result<(Kind, &Runtime), Error> {
        let kind = Kind::parse(kind).ok_or_else(|| Error::UnknownKind(kind.to_string()))?;
        let runtime = self.inner.runtimes.get(runtime).ok_or_else(|| {
            let mut names: Vec<&str> = self.inner.runtimes.keys().map(String::as_str).collect();
            names.sort();
            Error::UnknownRuntime(runtime.to_string(), names.join(", "))
        })?;
        if kind.family() != runtime.family {
            return Err(Error::WrongFamily {
                kind: kind.as_str(),
                runtime: runtime.name.clone(),
                family: runtime.family.as_str(),
            });
        }
        Ok((kind, runtime))
    }

    /// Validates `request`, takes in a local source, and answers with the
    /// existing artifact or a queued (or joined) job.
    pub async fn submit(&self, request: BuildRequest) -> Result<Outcome, Error> {
        let (spec, handle) = request.validate()?;
        self.submit_spec(spec, handle).await
    }

    pub(super) async fn submit_spec(
        &self,
        spec: Spec,
        handle: Option<LocalHandle>,
    ) -> Result<Outcome, Error> {
        self.check_enabled()?;
        let (kind, runtime) = self.resolve(&spec.kind, &spec.runtime)?;
        let abi = runtime.abi().await?;
        // Before a local source is taken in (which consumes it): a refusal
        // for a full queue must leave the client able to retry.
        if !self.inner.queue.has_room_for(&spec.key()) {
            return Err(queue::Error::Full(self.inner.settings.queue_size).into());
        }
        let source = match (&spec.source, handle) {
            (Source::Local { sha1 }, Some(handle)) => Some(self.take_local(sha1, handle).await?),
            _ => None,
        };
        // A local source is here now: one whose build requirements point
        // anywhere but the cache's index is refused before it is queued.
        if let Some(taken) = &source {
            let path = taken.path.clone();
            let checked = tokio::task::spawn_blocking(move || kind.check_source(&path))
                .await
                .map_err(std::io::Error::other)?;
            if let Err(err) = checked {
                discard(source).await;
                return Err(err.into());
            }
        }
        let name = spec.artifact_name();
        let artifacts = self.inner.artifacts.clone();
        let existing = tokio::task::spawn_blocking(move || artifacts.lookup(&name))
            .await
            .map_err(std::io::Error::other)?;
        let sha256 = source.as_ref().map(|s| s.sha256.clone());
        if let Some(meta) = existing {
            // A local artifact is reused only for the same bytes (sha256 as
            // well as SHA1), and any artifact only for the same ABI.
            if meta.abi == abi.0 && meta.source_sha256 == sha256 {
                discard(source).await;
                return Ok(Outcome::Exists(meta));
            }
        }
        // Built on another node for this ABI: taken, committed here, and answered as
        // an existing artifact. No job is queued.
        if let Some(shared) = &self.inner.worker.shared {
            let name = spec.artifact_name();
            if let Some(meta) = shared.take(&name, &abi.0, sha256.as_deref()).await {
                discard(source).await;
                return Ok(Outcome::Exists(meta));
            }
        }
        let path = source.as_ref().map(|s| s.path.clone());
        match self.inner.queue.submit(spec, sha256, path).await {
            Ok(submitted) => {
                if submitted.joined {
                    discard(source).await;
                }
                Ok(Outcome::Queued(Box::new(submitted)))
            }
            Err(err) => {
                discard(source).await;
                Err(err.into())
            }
        }
    }

    async fn take_local(&self, sha1: &str, handle: LocalHandle) -> Result<inbox::Source, Error> {
        match handle {
            LocalHandle::Inbox(entry) => {
                let inbox = self.open_inbox()?;
                let sha1 = sha1.to_string();
                Ok(
                    tokio::task::spawn_blocking(move || inbox.take(&entry, &sha1))
                        .await
                        .map_err(std::io::Error::other)??,
                )
            }
            LocalHandle::Upload(id) => {
                let mut uploads = self
                    .inner
                    .uploads
                    .lock()
                    .expect("uploads lock is never poisoned");
                match uploads.remove(&id) {
                    // Claimed: its bytes no longer wait, and leave the quota.
                    Some(pending) if pending.source.sha1 == sha1 => Ok(pending.source),
                    Some(entry) => {
                        uploads.insert(id.clone(), entry);
                        Err(Error::NoUpload(id))
                    }
                    None => Err(Error::NoUpload(id)),
                }
            }
        }
    }
}
