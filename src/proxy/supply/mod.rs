//! The supply-chain policy at serve time. Documents are stored as the
//! upstream sent them (links rewritten) and filtered as they are served:
//! the policy changes with time and with reloaded lists, and a filtered copy
//! stored as the upstream's would outlive both. A view — the filtered body
//! and its headers — is kept per document and reused while the stored copy,
//! the lists' generation and (for `/versions`) the `/info` views are the
//! same and no held release has come of age; with no policy every document
//! is served byte for byte as stored. Downloads of refused releases get 403
//! (also when already cached), logged, counted and kept for the status page.

mod admit;
mod dates;
mod go;
mod legacy;

use super::target::Target;
use super::{Error, Proxy};
use crate::config::{Mount, Profile};
use crate::mount::filter::{self, rubygems::InfoView, Listed};
use crate::mount::{self, DocSpec};
use crate::store::Doc;
use crate::supply::{HeldRow, Release, Verdict};
use base64::Engine as _;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Memory for filtered views, over every document.
const VIEWS_BUDGET: usize = 128 << 20;

/// What a client sees of a document.
pub(super) struct Shown {
    /// The body.
    pub body: Bytes,
    /// Its headers (lower-case names).
    pub headers: Vec<(String, String)>,
}

/// The views made so far, and what RubyGems' `/versions` needs from the
/// `/info` views. Shared by clones of the proxy.
#[derive(Default)]
pub(super) struct Views {
    views: Mutex<ViewMap>,
    /// By (mount, gem): what filtering its `/info` did.
    infos: Mutex<HashMap<(String, String), InfoView>>,
    /// Changes whenever `infos` does: `/versions` views made before are stale.
    infos_generation: AtomicU64,
}

#[derive(Default)]
struct ViewMap {
    by_doc: HashMap<String, Arc<View>>,
    bytes: usize,
}

/// One document's view, and what it was made from.
struct View {
    /// The stored copy's identity (`validated_at`, length, ETag).
    stamp: (u64, usize, Option<String>),
    generation: u64,
    infos_generation: u64,
    /// Made at this policy time; valid until the first hold runs out.
    made_at: i64,
    valid_until: Option<i64>,
    /// The filtered body and headers; `None`: the stored copy as it is.
    filtered: Option<(Bytes, Vec<(String, String)>)>,
}

fn stamp(doc: &Doc) -> (u64, usize, Option<String>) {
    let etag = doc
        .meta
        .headers
        .iter()
        .find(|(n, _)| n == "etag")
        .map(|(_, v)| v.clone());
    (doc.meta.validated_at, doc.body.len(), etag)
}

/// Why a document is not shown at all.
pub(super) enum Withheld {
    /// It stands for this held release (project, version): refused as its files are.
    Release(String, String),
    /// It cannot be shown (not filterable, or nothing in it is shown).
    Error(Error),
}

/// What the judge saw while a document was filtered.
#[derive(Default)]
struct Judged {
    held: Vec<HeldRow>,
    next_change: Option<i64>,
    /// First-seen keys to look up in the fleet before judging again.
    unknown: Vec<String>,
}

impl Proxy {
    /// `doc` as the supply-chain policy lets clients see it now.
    pub(super) async fn shown(
        &self,
        req: &http::request::Parts,
        target: &Target,
        mount: &Mount,
        spec: &DocSpec,
        doc: &Doc,
    ) -> Result<Shown, Error> {
        let as_stored = || Shown {
            body: doc.body.clone(),
            headers: doc.meta.headers.clone(),
        };
        if !self.supply.applies(mount) {
            return Ok(as_stored());
        }
        let now = self.supply.now();
        let generation = self.supply.generation();
        let infos_generation = self.views.infos_generation.load(Ordering::Acquire);
        let stamp = stamp(doc);
        let cached = self.views.lock().by_doc.get(&spec.key).cloned();
        if let Some(view) = cached.filter(|v| {
            v.stamp == stamp
                && v.generation == generation
                && v.infos_generation == infos_generation
                && v.made_at <= now
                && v.valid_until.is_none_or(|until| now < until)
        }) {
            return Ok(match &view.filtered {
                Some((body, headers)) => Shown {
                    body: body.clone(),
                    headers: headers.clone(),
                },
                None => as_stored(),
            });
        }
        let mut judged = Judged::default();
        let filtered = self
            .filter(req, target, mount, spec, doc, now, &mut judged)
            .await?;
        let filtered = filtered.map(|body| {
            let headers = filtered_headers(&doc.meta.headers, &body, mount.profile);
            (body, headers)
        });
        if !judged.held.is_empty() {
            tracing::debug!(mount = %mount.name, doc = %spec.path, held = judged.held.len(), "index document filtered by the supply-chain policy");
        }
        self.supply.record.holding(&spec.key, judged.held);
        let view = Arc::new(View {
            stamp,
            generation,
            infos_generation,
            made_at: now,
            valid_until: judged.next_change,
            filtered,
        });
        let shown = match &view.filtered {
            Some((body, headers)) => Shown {
                body: body.clone(),
                headers: headers.clone(),
            },
            None => as_stored(),
        };
        self.views.put(&spec.key, view);
        Ok(shown)
    }

    /// The filtered body of `doc`, or `None` when the policy hides nothing in
    /// it: the one place every ecosystem's document meets its filter. A Go
    /// query that resolves to a held version is refused as its download is.
    /// With a shared store, releases this node would date itself are looked
    /// up in the fleet first (bounded), and the document judged again.
    #[allow(clippy::too_many_arguments)]
    async fn filter(
        &self,
        req: &http::request::Parts,
        target: &Target,
        mount: &Mount,
        spec: &DocSpec,
        doc: &Doc,
        now: i64,
        judged: &mut Judged,
    ) -> Result<Option<Bytes>, Error> {
        let gather = self.supply.shares_first_seen();
        let (filtered, seen) = self
            .filter_pass(req, target, mount, spec, doc, now, gather)
            .await;
        if seen.unknown.is_empty() {
            *judged = seen;
            return filtered;
        }
        self.supply.resolve(seen.unknown).await;
        let (filtered, seen) = self
            .filter_pass(req, target, mount, spec, doc, now, false)
            .await;
        *judged = seen;
        filtered
    }

    /// One judgement of `doc`. With `gather`, a release that needs a
    /// first-seen time this node lacks is shown and listed in `unknown`
    /// instead of dated here (the pass is then done again).
    #[allow(clippy::too_many_arguments)]
    async fn filter_pass(
        &self,
        req: &http::request::Parts,
        target: &Target,
        mount: &Mount,
        spec: &DocSpec,
        doc: &Doc,
        now: i64,
        gather: bool,
    ) -> (Result<Option<Bytes>, Error>, Judged) {
        let lists = self.supply.lists();
        let supply = self.supply.clone();
        // Behind a lock so that `keep` is `Fn + Sync`: the filters that read
        // dates hold it across awaits, and the request's future must stay `Send`.
        let seen = std::sync::Mutex::new(Judged::default());
        let keep = |listed: &Listed<'_>| {
            let release = Release {
                project: listed.project,
                version: listed.version,
                published: listed.published,
            };
            if gather {
                if let Some(key) = supply.unresolved(mount, &lists, &release) {
                    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                    seen.unknown.push(key);
                    return true;
                }
            }
            let Verdict::Hold(hold) = supply.judge(mount, &lists, &release, now) else {
                return true;
            };
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(until) = hold.until {
                seen.next_change = Some(seen.next_change.map_or(until, |n| n.min(until)));
            }
            seen.held.push(HeldRow {
                mount: mount.name.clone(),
                project: listed.project.to_string(),
                version: listed.version.to_string(),
                hold,
            });
            false
        };
        let filtered = self
            .filter_by(req, target, mount, spec, doc, &keep, &seen)
            .await;
        (
            filtered,
            seen.into_inner().unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// [`Proxy::filter`] by the mount's profile; `seen` is what `keep` has held back so far.
    #[allow(clippy::too_many_arguments)]
    async fn filter_by(
        &self,
        req: &http::request::Parts,
        target: &Target,
        mount: &Mount,
        spec: &DocSpec,
        doc: &Doc,
        keep: &(dyn Fn(&Listed<'_>) -> bool + Sync),
        seen: &std::sync::Mutex<Judged>,
    ) -> Result<Option<Bytes>, Error> {
        let shared_keep = keep;
        let mut keep = |listed: &Listed<'_>| keep(listed);
        let unfiltered = |err: filter::Error| Error::Unfiltered {
            path: spec.path.clone(),
            reason: err.to_string(),
            never: false,
        };
        let path = doc_path(spec);
        match mount.profile {
            Profile::Pypi => {
                let Some(project) = path
                    .strip_prefix("/simple/")
                    .and_then(|p| p.strip_suffix('/'))
                    .filter(|p| !p.is_empty() && spec.repr.is_some())
                else {
                    return Ok(None); // the project list, the legacy JSON API
                };
                let is_json = doc
                    .meta
                    .headers
                    .iter()
                    .any(|(n, v)| n == "content-type" && v.contains("json"));
                if is_json {
                    return filter::pypi::filter_json(&doc.body, project, &mut keep)
                        .map_err(unfiltered);
                }
                let dates = match self.supply.age_rules(mount) {
                    true => self.pypi_dates(target, mount, project).await,
                    false => HashMap::new(),
                };
                filter::pypi::filter_html(&doc.body, project, &dates, &mut keep).map_err(unfiltered)
            }
            Profile::Rubygems => {
                if let Some(gem) = path.strip_prefix("/info/") {
                    let result = filter::rubygems::filter_info(&doc.body, gem, &mut keep)
                        .map_err(unfiltered)?;
                    let key = (mount.name.clone(), gem.to_string());
                    let (body, view) = match result {
                        Some((body, view)) => (Some(body), Some(view)),
                        None => (None, None),
                    };
                    self.views.set_info(key, view);
                    return Ok(body);
                }
                if path == "/versions" {
                    let infos = self.views.infos_of(&mount.name);
                    return filter::rubygems::filter_versions(&doc.body, &infos)
                        .map_err(unfiltered);
                }
                if path == "/names" {
                    return Ok(None);
                }
                self.filter_gem_specs(target, mount, spec, doc, path, shared_keep)
                    .await
            }
            Profile::Npm => match mount::npm::route(path) {
                mount::npm::Route::Packument(name) => {
                    // The abbreviated form has no `time`: the full one's dates.
                    let abbreviated =
                        spec.repr == Some(mount::Repr::Npm(mount::npm::Repr::Abbreviated));
                    let times = match abbreviated && self.supply.age_rules(mount) {
                        true => self.npm_times(target, mount, &name.as_path()).await,
                        false => HashMap::new(),
                    };
                    filter::npm::filter_packument(&doc.body, &times, &mut keep).map_err(unfiltered)
                }
                mount::npm::Route::Version(name, _) => {
                    let shown = self
                        .npm_manifest(target, mount, &name.as_path(), &doc.body, &mut keep)
                        .await;
                    self.withheld(req, mount, spec, seen, shown)
                }
                _ => Ok(None),
            },
            Profile::Cargo => match mount::cargo::route(path) {
                mount::cargo::Route::Index(_) => {
                    filter::cargo::filter_index(&doc.body, &mut keep).map_err(unfiltered)
                }
                _ => Ok(None),
            },
            Profile::Go => {
                let filtered = self
                    .filter_go(target, mount, spec, &doc.body, &mut keep)
                    .await;
                self.withheld(req, mount, spec, seen, filtered)
            }
            Profile::Gentoo | Profile::Generic => Ok(None),
        }
    }

    /// A filter's outcome as the client's answer: a document that stands
    /// for one held release (a Go query's `.info`, an npm version manifest)
    /// is refused as that release's files are, with the hold `keep` recorded.
    fn withheld(
        &self,
        req: &http::request::Parts,
        mount: &Mount,
        spec: &DocSpec,
        seen: &std::sync::Mutex<Judged>,
        filtered: Result<Option<Bytes>, Withheld>,
    ) -> Result<Option<Bytes>, Error> {
        match filtered {
            Ok(body) => Ok(body),
            Err(Withheld::Error(err)) => Err(err),
            Err(Withheld::Release(project, version)) => {
                let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                if !seen.unknown.is_empty() {
                    // Judged again once the fleet's times are in: refused (or not) then.
                    return Err(Error::Missing {
                        key: spec.path.clone(),
                    });
                }
                match seen.held.last() {
                    Some(row) => Err(self.refuse(req, mount, project, version, row.hold.clone())),
                    None => Err(Error::Missing {
                        key: spec.path.clone(),
                    }),
                }
            }
        }
    }

    /// Why document `spec` is never served under the policy, if it is not:
    /// RubyGems' full Marshal index (`Marshal.4.8`), which it does not filter
    /// (clients use the compact index or the `specs.4.8` family, which it does).
    pub(super) fn unfilterable(&self, mount: &Mount, spec: &DocSpec) -> Option<Error> {
        let full = mount.profile == Profile::Rubygems && self.supply.applies(mount) && {
            let path = doc_path(spec);
            path != "/versions"
                && path != "/names"
                && !path.starts_with("/info/")
                && !legacy::is_filtered(path)
        };
        full.then(|| Error::Unfiltered {
            path: spec.path.clone(),
            reason: "the full Marshal index is not filtered; use the compact index".into(),
            never: true,
        })
    }
}

impl Views {
    fn lock(&self) -> std::sync::MutexGuard<'_, ViewMap> {
        self.views.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&self, doc: &str, view: Arc<View>) {
        let size = view.filtered.as_ref().map_or(0, |(b, _)| b.len()) + 256;
        let mut map = self.lock();
        if map.bytes + size > VIEWS_BUDGET {
            map.by_doc.clear();
            map.bytes = 0;
        }
        if let Some(old) = map.by_doc.insert(doc.to_string(), view) {
            map.bytes -= old.filtered.as_ref().map_or(0, |(b, _)| b.len()) + 256;
        }
        map.bytes += size;
    }

    fn set_info(&self, key: (String, String), view: Option<InfoView>) {
        let mut infos = self.infos.lock().unwrap_or_else(|p| p.into_inner());
        let changed = match view {
            Some(view) => infos.insert(key, view.clone()).as_ref() != Some(&view),
            None => infos.remove(&key).is_some(),
        };
        if changed {
            self.infos_generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn infos_of(&self, mount: &str) -> HashMap<String, InfoView> {
        let infos = self.infos.lock().unwrap_or_else(|p| p.into_inner());
        infos
            .iter()
            .filter(|((m, _), _)| m == mount)
            .map(|((_, gem), view)| (gem.clone(), view.clone()))
            .collect()
    }
}

/// The decoded path of a document, from its key (`MOUNT\nPATH\nREPR`).
fn doc_path(spec: &DocSpec) -> &str {
    spec.key.split('\n').nth(1).unwrap_or("")
}

/// The headers of a filtered body: validators and digests that named the
/// stored body are replaced by ones of `body` — an MD5 ETag on RubyGems,
/// which bundler checks against the body — and `Last-Modified` dropped (a
/// release coming of age changes the body, not the upstream's date).
fn filtered_headers(
    stored: &[(String, String)],
    body: &[u8],
    profile: Profile,
) -> Vec<(String, String)> {
    let sha = Sha256::digest(body);
    let mut headers: Vec<(String, String)> = Vec::with_capacity(stored.len() + 1);
    for (name, value) in stored {
        match name.as_str() {
            "etag" | "content-length" | "last-modified" | "content-md5" => {}
            "repr-digest" => headers.push((
                name.clone(),
                format!(
                    "sha-256=:{}:",
                    base64::engine::general_purpose::STANDARD.encode(sha)
                ),
            )),
            "digest" => headers.push((
                name.clone(),
                format!(
                    "sha-256={}",
                    base64::engine::general_purpose::STANDARD.encode(sha)
                ),
            )),
            _ => headers.push((name.clone(), value.clone())),
        }
    }
    let etag = match profile {
        Profile::Rubygems => filter::rubygems::md5_hex(body),
        _ => hex::encode(sha)[..32].to_string(),
    };
    headers.push(("etag".into(), format!("\"{etag}\"")));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filtered_bodies_get_their_own_validators_and_digests() {
        let stored = vec![
            ("content-type".to_string(), "text/plain".to_string()),
            ("etag".to_string(), "\"upstream\"".to_string()),
            (
                "last-modified".to_string(),
                "Mon, 01 Jan 2024 00:00:00 GMT".to_string(),
            ),
            ("repr-digest".to_string(), "sha-256=:old:".to_string()),
        ];
        let got = filtered_headers(&stored, b"---\n", Profile::Rubygems);
        let get = |n: &str| got.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(
            get("etag"),
            Some(format!("\"{}\"", filter::rubygems::md5_hex(b"---\n")).as_str())
        );
        assert_eq!(get("last-modified"), None);
        assert_eq!(get("content-type"), Some("text/plain"));
        let digest = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(b"---\n"));
        assert_eq!(
            get("repr-digest"),
            Some(format!("sha-256=:{digest}:").as_str())
        );
    }
}
