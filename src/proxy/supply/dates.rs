//! Publication dates the policy needs that the document or file at hand
//! lacks: a PyPI HTML page's from its JSON form, a gem file's from the gem's
//! `/info`, an npm tarball's or abbreviated packument's from the full
//! packument, a crate download's from its index file, a Go version's from its
//! `.info` — each read through the cache as a client's request would be.

use super::super::cached::Next;
use super::super::target::Target;
use super::super::{Proxy, MAX_LOOKUPS};
use super::Withheld;
use crate::config::Mount;
use crate::mount::{self, filter, pypi, rubygems, Class, MountUpstream};
use crate::store::{CacheKey, Lookup, Namespace};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use std::collections::HashMap;
use std::sync::Arc;

impl Proxy {
    /// Upload times by file name, from the JSON form of `project`'s page,
    /// fetched through the cache (an HTML page has no dates).
    pub(super) async fn pypi_dates(
        &self,
        target: &Target,
        mount: &Mount,
        project: &str,
    ) -> HashMap<String, i64> {
        let Target::Mount { mount: arc, .. } = target else {
            return HashMap::new();
        };
        let accept = Some(mount::Repr::Pypi(pypi::Repr::Json).accept_header());
        let Class::Document(spec) = mount::classify(mount, &format!("/simple/{project}/"), accept)
        else {
            return HashMap::new();
        };
        let json_target = Target::Mount {
            mount: arc.clone(),
            upstream: MountUpstream::Sources,
            path: spec.path.clone(),
            query: None,
        };
        match self.current_doc(&json_target, mount, &spec).await {
            Some(doc) => filter::pypi::upload_times(&doc.body).unwrap_or_default(),
            None => HashMap::new(),
        }
    }

    /// The gem, version (platform left off) and date of a `.gem` or
    /// `.gemspec.rz` file, from the gem's `/info` (fetched through the cache
    /// when not stored); `None` for other files.
    pub(super) async fn gem_release(
        &self,
        target: &Target,
        mount: &Mount,
        file: &str,
    ) -> Option<(String, String, Option<i64>)> {
        let Target::Mount { mount: arc, .. } = target else {
            return None;
        };
        let stem = file
            .strip_suffix(".gem")
            .or_else(|| file.strip_suffix(".gemspec.rz"))?;
        let gem_file = format!("{stem}.gem");
        // Names contain dashes: each split whose rest starts like a version.
        let candidates: Vec<&str> = rubygems::candidate_names(&gem_file)
            .into_iter()
            .filter(|name| stem[name.len() + 1..].starts_with(|c: char| c.is_ascii_digit()))
            .collect();
        let fallback = candidates.first().map(|name| {
            let rest = &stem[name.len() + 1..];
            (
                name.to_string(),
                rest.split('-').next().unwrap_or(rest).to_string(),
            )
        });
        for name in candidates.iter().rev() {
            let rest = &stem[name.len() + 1..];
            let Class::Document(spec) = mount::classify(mount, &format!("/info/{name}"), None)
            else {
                continue;
            };
            let info_target = Target::Mount {
                mount: arc.clone(),
                upstream: MountUpstream::Sources,
                path: spec.path.clone(),
                query: None,
            };
            let Some(doc) = self.current_doc(&info_target, mount, &spec).await else {
                continue;
            };
            let info = String::from_utf8_lossy(&doc.body);
            for line in info.lines() {
                let Some((field, reqs)) = line.split_once(' ') else {
                    continue;
                };
                if field != rest {
                    continue;
                }
                let published = reqs
                    .rsplit_once('|')
                    .map_or("", |(_, r)| r)
                    .split(',')
                    .find_map(|r| r.trim().strip_prefix("created_at:"))
                    .and_then(crate::config::supply::parse_instant);
                let version = rest.split('-').next().unwrap_or(rest).to_string();
                return Some((name.to_string(), version, published));
            }
        }
        fallback.map(|(name, version)| (name, version, None))
    }
}

/// The most a file read for its dates may be (a Go `.info` is a few dozen bytes).
const SMALL_FILE: usize = 64 * 1024;

impl Proxy {
    /// A small immutable file of `mount` at `path` (raw, after `/NAME`),
    /// read through the cache as a client's request would be: the stored
    /// entry, a fill in progress joined, else fetched and stored. Not
    /// judged by the policy: the policy reads it to judge. `None` when it
    /// cannot be had (the upstream has no such file, or is unreachable with
    /// nothing stored).
    pub(super) async fn read_through(&self, mount: &Arc<Mount>, path: &str) -> Option<Bytes> {
        let target = Target::Mount {
            mount: mount.clone(),
            upstream: MountUpstream::Sources,
            path: path.to_string(),
            query: None,
        };
        let key = CacheKey::try_from_path(Namespace::Mount(mount.name.clone()), path).ok()?;
        // The proxy's own request: no client, no conditions, no range.
        let (parts, ()) = http::Request::get(path)
            .body(())
            .unwrap_or_default()
            .into_parts();
        for _ in 0..MAX_LOOKUPS {
            let next = match self.store.lookup(&key).await {
                Ok(Lookup::Hit(entry)) => self.hit(&parts, &key, entry, None).await,
                Ok(Lookup::Filling(watch)) => self.join(&parts, &key, watch).await,
                Ok(Lookup::Miss(permit)) => self.fill(&parts, &target, permit, None).await,
                Ok(Lookup::Conflict) | Err(_) => Next::Pass,
            };
            let response = match next {
                Next::Answer(answer) => answer.ok()?,
                Next::Pass => self.pass(&parts, &target).await.ok()?,
                Next::Again | Next::Retry(_) => continue,
            };
            if response.status() != http::StatusCode::OK {
                return None;
            }
            let body = http_body_util::Limited::new(response.into_body(), SMALL_FILE);
            return body.collect().await.ok().map(|c| c.to_bytes());
        }
        None
    }

    /// Publication times by version of npm package `name` (`@scope/name`),
    /// from its full packument through the cache (the abbreviated one has none).
    pub(super) async fn npm_times(
        &self,
        target: &Target,
        mount: &Mount,
        name: &str,
    ) -> HashMap<String, i64> {
        let accept = Some(mount::Repr::Npm(mount::npm::Repr::Full).accept_header());
        let Some(doc) = self
            .doc_through(target, mount, &format!("/{name}"), accept)
            .await
        else {
            return HashMap::new();
        };
        filter::npm::publish_times(&doc).unwrap_or_default()
    }

    /// When `version` of crate `krate` was published, from its index file's
    /// `pubtime`, through the cache.
    pub(super) async fn cargo_pubtime(
        &self,
        target: &Target,
        mount: &Mount,
        krate: &str,
        version: &str,
    ) -> Option<i64> {
        let index = mount::cargo::index_path(&krate.to_ascii_lowercase())?;
        let doc = self
            .doc_through(target, mount, &format!("/{index}"), None)
            .await?;
        filter::cargo::pubtime(&doc, version)
    }

    /// The body of the document at `path` (raw, after `/NAME`) of `mount`,
    /// current as a client would get it, before the policy filters it.
    async fn doc_through(
        &self,
        target: &Target,
        mount: &Mount,
        path: &str,
        accept: Option<&str>,
    ) -> Option<Bytes> {
        let Target::Mount { mount: arc, .. } = target else {
            return None;
        };
        let Class::Document(spec) = mount::classify(mount, path, accept) else {
            return None;
        };
        let doc_target = Target::Mount {
            mount: arc.clone(),
            upstream: MountUpstream::Sources,
            path: spec.path.clone(),
            query: None,
        };
        let doc = self.current_doc(&doc_target, mount, &spec).await?;
        Some(doc.body.clone())
    }

    /// An npm version manifest (`/NAME/1.0.0`, `/NAME/latest`) as the
    /// policy shows it: as stored, or withheld when the version it names is
    /// held back (dated by the full packument).
    pub(super) async fn npm_manifest(
        &self,
        target: &Target,
        mount: &Mount,
        name: &str,
        body: &[u8],
        keep: &mut (dyn FnMut(&filter::Listed<'_>) -> bool + Send),
    ) -> Result<Option<Bytes>, Withheld> {
        let version = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|m| m.get("version")?.as_str().map(str::to_string));
        let Some(version) = version else {
            return Ok(None);
        };
        let published = match self.supply.age_rules(mount) {
            true => self
                .npm_times(target, mount, name)
                .await
                .get(&version)
                .copied(),
            false => None,
        };
        let listed = filter::Listed {
            project: name,
            version: &version,
            published,
        };
        match keep(&listed) {
            true => Ok(None),
            false => Err(Withheld::Release(name.to_string(), version)),
        }
    }
}
