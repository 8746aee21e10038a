//! The supply-chain policy at serve time. Documents are stored as the
//! upstream sent them (links rewritten) and filtered as they are served:
//! the policy changes with time and with reloaded lists, and a filtered copy
//! stored as the upstream's would outlive both. A view — the filtered body
//! and its headers — is kept per document and reused while the stored copy,
//! the lists' generation and (for `/versions`) the `/info` views are the
//! same and no held release has come of age; with no policy every document
//! is served byte for byte as stored. Downloads of refused releases get 403
//! (also when already cached), logged, counted and kept for the status page.

use super::target::{ConnInfo, Target};
use super::{Error, Proxy};
use crate::config::{Mount, Profile};
use crate::mount::filter::{self, rubygems::InfoView, Listed};
use crate::mount::{self, pypi, rubygems, Class, DocSpec, MountUpstream};
use crate::store::Doc;
use crate::supply::{HeldRow, Hold, Refused, Release, Verdict};
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

/// What the judge saw while a document was filtered.
#[derive(Default)]
struct Judged {
    held: Vec<HeldRow>,
    next_change: Option<i64>,
}

impl Proxy {
    /// `doc` as the supply-chain policy lets clients see it now.
    pub(super) async fn shown(
        &self,
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
            .filter(target, mount, spec, doc, now, &mut judged)
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

    /// The filtered body of `doc`, or `None` when the policy hides nothing in it.
    async fn filter(
        &self,
        target: &Target,
        mount: &Mount,
        spec: &DocSpec,
        doc: &Doc,
        now: i64,
        judged: &mut Judged,
    ) -> Result<Option<Bytes>, Error> {
        let lists = self.supply.lists();
        let supply = self.supply.clone();
        let mut keep = |listed: &Listed<'_>| {
            let release = Release {
                project: listed.project,
                version: listed.version,
                published: listed.published,
            };
            match supply.judge(mount, &lists, &release, now) {
                Verdict::Allow => true,
                Verdict::Hold(hold) => {
                    if let Some(until) = hold.until {
                        judged.next_change =
                            Some(judged.next_change.map_or(until, |n| n.min(until)));
                    }
                    judged.held.push(HeldRow {
                        mount: mount.name.clone(),
                        project: listed.project.to_string(),
                        version: listed.version.to_string(),
                        hold,
                    });
                    false
                }
            }
        };
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
                // The legacy Marshal indexes: clients that find them missing use the
                // compact index, which the policy filters.
                Err(Error::Unfiltered {
                    path: spec.path.clone(),
                    reason: "the legacy Marshal index is not filtered; use the compact index"
                        .into(),
                    never: true,
                })
            }
            // npm, Cargo and Go documents are filtered once their mounts serve
            // rewritten documents (mount::filter has their filters).
            Profile::Npm | Profile::Cargo | Profile::Go | Profile::Gentoo | Profile::Generic => {
                Ok(None)
            }
        }
    }

    /// Why document `spec` is never served under the policy, if it is not:
    /// RubyGems' legacy Marshal indexes, which it does not filter (clients
    /// that find them missing use the compact index, which it does).
    pub(super) fn unfilterable(&self, mount: &Mount, spec: &DocSpec) -> Option<Error> {
        let legacy = mount.profile == Profile::Rubygems && self.supply.applies(mount) && {
            let path = doc_path(spec);
            path != "/versions" && path != "/names" && !path.starts_with("/info/")
        };
        legacy.then(|| Error::Unfiltered {
            path: spec.path.clone(),
            reason: "the legacy Marshal index is not filtered; use the compact index".into(),
            never: true,
        })
    }

    /// Upload times by file name, from the JSON form of `project`'s page,
    /// fetched through the cache (an HTML page has no dates).
    async fn pypi_dates(
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

    /// Refuses (403) a download the policy holds back; every refusal is
    /// logged, counted and kept for the status page. `req` names the client.
    pub(super) async fn admit(
        &self,
        req: &http::request::Parts,
        target: &Target,
    ) -> Result<(), Error> {
        let Target::Mount { mount, path, .. } = target else {
            return Ok(());
        };
        if !self.supply.applies(mount) {
            return Ok(());
        }
        let file = percent_encoding::percent_decode_str(path.rsplit('/').next().unwrap_or(""))
            .decode_utf8_lossy()
            .into_owned();
        if file.is_empty() {
            return Ok(());
        }
        let now = self.supply.now();
        let lists = self.supply.lists();
        let verdict = match mount.profile {
            Profile::Pypi => {
                let Some((project, version)) = filter::pypi::split_file(&file) else {
                    return Ok(());
                };
                let published = match self.supply.age_rules(mount) {
                    true => {
                        let dates = self.pypi_dates(target, mount, &project).await;
                        dates
                            .get(file.strip_suffix(".metadata").unwrap_or(&file))
                            .copied()
                    }
                    false => None,
                };
                let release = Release {
                    project: &project,
                    version: &version,
                    published,
                };
                (
                    project.clone(),
                    version.clone(),
                    self.supply.judge(mount, &lists, &release, now),
                )
            }
            Profile::Rubygems => {
                let Some((gem, version, published)) = self.gem_release(target, mount, &file).await
                else {
                    return Ok(());
                };
                let release = Release {
                    project: &gem,
                    version: &version,
                    published,
                };
                let verdict = self.supply.judge(mount, &lists, &release, now);
                (gem, version, verdict)
            }
            Profile::Npm | Profile::Cargo | Profile::Go | Profile::Gentoo | Profile::Generic => {
                return Ok(())
            }
        };
        let (project, version, Verdict::Hold(hold)) = verdict else {
            return Ok(());
        };
        Err(self.refuse(req, mount, project, version, hold))
    }

    /// [`Proxy::admit`] for a request passed uncached: an index document
    /// (asked with credentials or a query) would reach the client unfiltered,
    /// so under a policy it is refused.
    pub(super) async fn admit_passed(
        &self,
        req: &http::request::Parts,
        target: &Target,
    ) -> Result<(), Error> {
        if let Target::Mount { mount, .. } = target {
            if self.supply.applies(mount) {
                let client_path = req.uri.path();
                let under = client_path
                    .strip_prefix(&format!("/{}", mount.name))
                    .unwrap_or(client_path);
                let accept = req
                    .headers
                    .get(http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok());
                if let Class::Document(spec) = mount::classify(mount, under, accept) {
                    return Err(Error::Unfiltered {
                        path: spec.path,
                        reason: "index documents asked with credentials or a query are not passed through".into(),
                        never: true,
                    });
                }
            }
        }
        self.admit(req, target).await
    }

    fn refuse(
        &self,
        req: &http::request::Parts,
        mount: &Mount,
        project: String,
        version: String,
        hold: Hold,
    ) -> Error {
        let client = req
            .extensions
            .get::<ConnInfo>()
            .map_or_else(|| "-".to_string(), |c| c.peer.to_string());
        let why = hold.describe();
        tracing::warn!(%client, mount = %mount.name, project = %project, version = %version,
            rule = hold.rule.as_str(), why = %why, "download refused by the supply-chain policy");
        self.metrics.policy_refused(&mount.name, hold.rule.as_str());
        let what = format!("{} {project} {version}", mount.name);
        self.supply.record.refused(Refused {
            at: self.supply.now(),
            client,
            mount: mount.name.clone(),
            project,
            version,
            hold,
        });
        Error::Held { what, why }
    }

    /// The gem, version (platform left off) and date of a `.gem` or
    /// `.gemspec.rz` file, from the gem's `/info` (fetched through the cache
    /// when not stored); `None` for other files.
    async fn gem_release(
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
