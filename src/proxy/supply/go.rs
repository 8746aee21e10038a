//! Go module proxies under the policy. `@v/list` has no dates, so each
//! listed version's `.info` (immutable, small) is read through the cache for
//! its `Time`; `@latest` naming a held version gives the newest shown
//! version's `.info` instead (404 when none is shown, as for a module
//! without releases); a query's `.info` resolving to a held version is
//! refused like that version's files. Module paths stay escaped (`!x`) in
//! paths and are unescaped for judging, as deny lists and exemptions name them.

use super::super::target::Target;
use super::super::{Error, Proxy};
use super::Withheld;
use crate::config::Mount;
use crate::mount::filter::{self, Listed};
use crate::mount::{self, go, Class, MountUpstream};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;

/// How many `.info` files one list reads at once.
const INFO_READS: usize = 8;

impl Proxy {
    /// The Go document at `spec` as the policy shows it (`keep` judges).
    pub(super) async fn filter_go(
        &self,
        target: &Target,
        mount: &Mount,
        spec: &mount::DocSpec,
        body: &[u8],
        keep: &mut (dyn FnMut(&Listed<'_>) -> bool + Send),
    ) -> Result<Option<Bytes>, Withheld> {
        let Target::Mount { mount: arc, .. } = target else {
            return Ok(None);
        };
        let unfiltered = |err: filter::Error| {
            Withheld::Error(Error::Unfiltered {
                path: spec.path.clone(),
                reason: err.to_string(),
                never: false,
            })
        };
        let path = super::doc_path(spec);
        match go::route(path) {
            go::Route::List(module) => {
                let name = go::unescape(&module).unwrap_or_else(|| module.clone());
                let versions = list_versions(body);
                let times = self.go_times(arc, mount, &module, &versions).await;
                filter::go::filter_list(body, &name, &times, keep).map_err(unfiltered)
            }
            go::Route::Latest(module) => {
                let name = go::unescape(&module).unwrap_or_else(|| module.clone());
                let (version, published) = filter::go::info(body).map_err(unfiltered)?;
                let listed = Listed {
                    project: &name,
                    version: &version,
                    published,
                };
                if keep(&listed) {
                    return Ok(None);
                }
                // 404, as for a module without releases: go moves on.
                let gone = || {
                    Withheld::Error(Error::Unfiltered {
                        path: spec.path.clone(),
                        reason: "every version is held back".into(),
                        never: true,
                    })
                };
                let list = self.go_list(target, mount, &module).await;
                let versions = list.as_deref().map(list_versions).unwrap_or_default();
                let times = self.go_times(arc, mount, &module, &versions).await;
                let newest =
                    filter::go::newest_shown(&versions, &name, &times, keep).ok_or_else(gone)?;
                let info = self.go_info(arc, &module, &newest).await.ok_or_else(gone)?;
                Ok(Some(info))
            }
            go::Route::Query { module, .. } => {
                let name = go::unescape(&module).unwrap_or_else(|| module.clone());
                let (version, published) = filter::go::info(body).map_err(unfiltered)?;
                let listed = Listed {
                    project: &name,
                    version: &version,
                    published,
                };
                match keep(&listed) {
                    true => Ok(None),
                    false => Err(Withheld::Release(name, version)),
                }
            }
            _ => Ok(None),
        }
    }

    /// The `Time` of each of `versions` of `module` (escaped) that has one,
    /// when the age rules need dates on `mount`.
    pub(super) async fn go_times(
        &self,
        arc: &Arc<Mount>,
        mount: &Mount,
        module: &str,
        versions: &[String],
    ) -> HashMap<String, i64> {
        if !self.supply.age_rules(mount) {
            return HashMap::new();
        }
        let mut times = HashMap::new();
        for chunk in versions.chunks(INFO_READS) {
            let reads = chunk.iter().map(|v| self.go_info(arc, module, v));
            let infos = futures_util::future::join_all(reads).await;
            for (version, info) in chunk.iter().zip(infos) {
                if let Some(time) = info.and_then(|i| filter::go::info(&i).ok()?.1) {
                    times.insert(version.clone(), time);
                }
            }
        }
        times
    }

    /// The `.info` of `version` (as `@v/list` spells it) of `module`
    /// (escaped), read through the cache.
    pub(super) async fn go_info(
        &self,
        arc: &Arc<Mount>,
        module: &str,
        version: &str,
    ) -> Option<Bytes> {
        let version = go::escape(version)?;
        self.read_through(arc, &format!("/{module}/@v/{version}.info"))
            .await
    }

    /// `module`'s `@v/list` (escaped path), through the cache.
    async fn go_list(&self, target: &Target, mount: &Mount, module: &str) -> Option<Bytes> {
        let Target::Mount { mount: arc, .. } = target else {
            return None;
        };
        let Class::Document(spec) = mount::classify(mount, &format!("/{module}/@v/list"), None)
        else {
            return None;
        };
        let list_target = Target::Mount {
            mount: arc.clone(),
            upstream: MountUpstream::Sources,
            path: spec.path.clone(),
            query: None,
        };
        let doc = self.current_doc(&list_target, mount, &spec).await?;
        Some(doc.body.clone())
    }
}

/// The versions an `@v/list` names, one a line.
fn list_versions(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect()
}
