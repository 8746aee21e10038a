//! VCAP's blocking `PUT /load/LOCATION/TYPE/NAME/RUNTIME`: the request names
//! a remote release by its file name (resolved against the index) or a local
//! source by its inbox entry `SHA1.EXT`, and the answer waits for the build.

use super::job::{ErrorClass, JobState};
use super::spec::{self, LocalHandle, Source, Spec};
use super::{queue, Builds, Error, LoadOutcome, Outcome};

impl Builds {
    /// VCAP's `PUT /load/LOCATION/TYPE/NAME/RUNTIME`: `NAME` is the remote
    /// file name (`thin-1.2.11.gem`) or the inbox entry `SHA1.EXT`. Waits
    /// for the build.
    pub async fn load(
        &self,
        location: &str,
        kind: &str,
        name: &str,
        runtime: &str,
    ) -> Result<LoadOutcome, Error> {
        if !spec::valid_field(runtime) {
            return Err(spec::Error::BadField {
                field: "runtime",
                value: runtime.chars().take(200).collect(),
            }
            .into());
        }
        // Before the index is asked anything: a request that cannot be built
        // here costs the upstream nothing.
        self.check_enabled()?;
        let (parsed, _) = self.resolve(kind, runtime)?;
        let (source, handle) = match spec::Location::parse(location) {
            Some(spec::Location::Remote) => {
                let release = parsed
                    .resolve_file_name(&self.inner.worker.fetcher, name)
                    .await?;
                (
                    Source::Remote {
                        name: release.name,
                        version: release.version,
                        platform: release.platform,
                    },
                    None,
                )
            }
            Some(spec::Location::Local) => {
                let sha1 = name.split_once('.').map_or(name, |(stem, _)| stem);
                if !spec::valid_sha1(sha1) {
                    return Err(spec::Error::BadSha1(name.chars().take(64).collect()).into());
                }
                if !spec::valid_field(name) {
                    return Err(spec::Error::BadField {
                        field: "name",
                        value: name.chars().take(200).collect(),
                    }
                    .into());
                }
                (
                    Source::Local {
                        sha1: sha1.to_string(),
                    },
                    Some(LocalHandle::Inbox(name.to_string())),
                )
            }
            None => {
                return Err(spec::Error::BadLocation(location.chars().take(64).collect()).into())
            }
        };
        let spec = Spec {
            kind: parsed.as_str().to_string(),
            runtime: runtime.to_string(),
            source,
        };
        let submitted = match self.submit_spec(spec, handle).await? {
            Outcome::Exists(_) => return Ok(LoadOutcome::Existed),
            Outcome::Queued(submitted) => submitted,
        };
        let id = submitted.job.id.clone();
        let Some(mut state) = self.inner.queue.watch(&id) else {
            return Err(queue::Error::NotFound.into());
        };
        tokio::select! {
            _ = state.wait_for(|s| s.is_finished()) => {}
            // The workers stop with the app: answer rather than hold the shutdown.
            _ = self.inner.stop.cancelled() => return Err(queue::Error::Stopping.into()),
        }
        let job = self.inner.queue.get(&id).ok_or(queue::Error::NotFound)?;
        match (job.state, job.error) {
            (JobState::Complete, _) => Ok(LoadOutcome::Built),
            (_, Some(error)) => Err(Error::Failed {
                class: error.class,
                message: error.message,
            }),
            (state, None) => Err(Error::Failed {
                class: ErrorClass::Server,
                message: format!("the build ended {}", state.as_str()),
            }),
        }
    }
}
