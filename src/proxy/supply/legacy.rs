//! RubyGems' legacy Marshal indexes under the policy: `specs.4.8[.gz]` and
//! `prerelease_specs.4.8[.gz]` filtered as the compact index is, and
//! `latest_specs.4.8[.gz]` naming each gem's newest version shown, found in
//! the full `specs` (read through the cache). Unpacking and packing run on
//! blocking threads: the full index of a large source is tens of megabytes.

use super::super::target::Target;
use super::super::{Error, Proxy};
use crate::config::Mount;
use crate::mount::filter::{self, gem_specs, marshal::Spec, Listed};
use crate::mount::{self, Class, DocSpec, MountUpstream};
use crate::store::Doc;
use crate::supply::{version, Ecosystem};
use bytes::Bytes;

/// Which legacy index a path names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Legacy {
    /// `specs.4.8`: every release.
    Specs,
    /// `prerelease_specs.4.8`.
    Prerelease,
    /// `latest_specs.4.8`: the newest release per gem and platform.
    Latest,
}

/// The legacy index at `path` and whether it is the `.gz` form; `None` for
/// other paths (`Marshal.4.8`, the full specifications, is not filtered).
fn legacy(path: &str) -> Option<(Legacy, bool)> {
    let (base, gzipped) = match path.strip_suffix(".gz") {
        Some(base) => (base, true),
        None => (path, false),
    };
    let kind = match base {
        "/specs.4.8" => Legacy::Specs,
        "/prerelease_specs.4.8" => Legacy::Prerelease,
        "/latest_specs.4.8" => Legacy::Latest,
        _ => return None,
    };
    Some((kind, gzipped))
}

/// Whether the policy filters the legacy index at `path`.
pub(super) fn is_filtered(path: &str) -> bool {
    legacy(path).is_some()
}

impl Proxy {
    /// Legacy index `doc` at `path` without the releases `keep` refuses;
    /// `None` when it refuses none.
    pub(super) async fn filter_gem_specs(
        &self,
        target: &Target,
        mount: &Mount,
        spec: &DocSpec,
        doc: &Doc,
        path: &str,
        keep: &(dyn Fn(&Listed<'_>) -> bool + Sync),
    ) -> Result<Option<Bytes>, Error> {
        let Some((kind, gzipped)) = legacy(path) else {
            return Err(Error::Unfiltered {
                path: spec.path.clone(),
                reason: "the full Marshal index is not filtered; use the compact index".into(),
                never: true,
            });
        };
        let unfiltered = |what: &str, err: String| {
            tracing::warn!(mount = %mount.name, key = %spec.path, error = %err,
                "{what} cannot be read; refused under the supply-chain policy");
            Error::Unfiltered {
                path: spec.path.clone(),
                reason: format!("{what}: {err}"),
                never: false,
            }
        };
        let specs = decoded(doc.body.clone(), gzipped)
            .await
            .map_err(|e| unfiltered("the legacy index", e))?;
        let mut keep = |listed: &Listed<'_>| keep(listed);
        let shown = match kind {
            Legacy::Specs | Legacy::Prerelease => gem_specs::filter_specs(&specs, &mut keep),
            Legacy::Latest => {
                let full = self
                    .full_specs(target, mount, gzipped)
                    .await
                    .map_err(|e| unfiltered("the full specs.4.8 behind latest_specs", e))?;
                let order = |a: &str, b: &str| version::compare(Ecosystem::Rubygems, a, b);
                gem_specs::filter_latest(&specs, &full, &order, &mut keep)
            }
        };
        let Some(shown) = shown else {
            return Ok(None);
        };
        tokio::task::spawn_blocking(move || gem_specs::encode(&shown, gzipped))
            .await
            .map(Some)
            .map_err(|e| unfiltered("packing the filtered index", e.to_string()))
    }

    /// The upstream's full `specs.4.8[.gz]`, read through the cache.
    async fn full_specs(
        &self,
        target: &Target,
        mount: &Mount,
        gzipped: bool,
    ) -> Result<Vec<Spec>, String> {
        let Target::Mount { mount: arc, .. } = target else {
            return Err("not a mount".into());
        };
        let path = match gzipped {
            true => "/specs.4.8.gz",
            false => "/specs.4.8",
        };
        let Class::Document(spec) = mount::classify(mount, path, None) else {
            return Err("not an index document".into());
        };
        let full_target = Target::Mount {
            mount: arc.clone(),
            upstream: MountUpstream::Sources,
            path: spec.path.clone(),
            query: None,
        };
        let doc = self
            .current_doc(&full_target, mount, &spec)
            .await
            .ok_or_else(|| "not available from the upstream".to_string())?;
        decoded(doc.body.clone(), gzipped).await
    }
}

/// The entries of a legacy index body, decoded on a blocking thread.
async fn decoded(body: Bytes, gzipped: bool) -> Result<Vec<Spec>, String> {
    match tokio::task::spawn_blocking(move || gem_specs::decode(&body, gzipped)).await {
        Ok(Ok(specs)) => Ok(specs),
        Ok(Err(err)) => Err(error_chain(&err)),
        Err(err) => Err(err.to_string()),
    }
}

fn error_chain(err: &filter::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
