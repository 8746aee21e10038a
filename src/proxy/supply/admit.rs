//! Downloads under the supply-chain policy: a file of a release the policy
//! holds back is refused with 403 saying why and until when — also when it is
//! already cached — and every refusal is logged (client, mount, project,
//! version, rule), counted by mount and rule, and kept for the status page.

use super::super::target::{ConnInfo, Target};
use super::super::{Error, Proxy};
use crate::config::{Mount, Profile};
use crate::mount::{self, filter, Class};
use crate::supply::{Hold, Refused, Release, Verdict};

impl Proxy {
    /// Refuses (403) a download the policy holds back; every refusal is
    /// logged, counted and kept for the status page. `req` names the client.
    pub(in crate::proxy) async fn admit(
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
                    self.judge_resolved(mount, &lists, &release, now).await,
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
                let verdict = self.judge_resolved(mount, &lists, &release, now).await;
                (gem, version, verdict)
            }
            Profile::Npm | Profile::Cargo | Profile::Go => {
                let Some(release) = self.release_of(req, target, mount).await else {
                    return Ok(());
                };
                let (project, version, published) = release;
                let release = Release {
                    project: &project,
                    version: &version,
                    published,
                };
                let verdict = self.judge_resolved(mount, &lists, &release, now).await;
                (project, version, verdict)
            }
            Profile::Gentoo | Profile::Generic => return Ok(()),
        };
        let (project, version, Verdict::Hold(hold)) = verdict else {
            return Ok(());
        };
        Err(self.refuse(req, mount, project, version, hold))
    }

    /// [`Proxy::admit`] for a request passed uncached: an index document
    /// (asked with credentials or a query) would reach the client unfiltered,
    /// so under a policy it is refused.
    pub(in crate::proxy) async fn admit_passed(
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

    /// The release (project, version, date) an npm tarball, a crate download
    /// or a Go version's file belongs to, by the path the client asked for;
    /// `None` for other paths.
    async fn release_of(
        &self,
        req: &http::request::Parts,
        target: &Target,
        mount: &Mount,
    ) -> Option<(String, String, Option<i64>)> {
        let Target::Mount { mount: arc, .. } = target else {
            return None;
        };
        let client_path = req.uri.path();
        let under = client_path
            .strip_prefix(&format!("/{}", mount.name))
            .unwrap_or(client_path);
        let dated = self.supply.age_rules(mount);
        match mount.profile {
            Profile::Npm => {
                let mount::npm::Route::Tarball { name, .. } = mount::npm::route(under) else {
                    return None;
                };
                let path = name.as_path();
                let unscoped = path.rsplit('/').next().unwrap_or(&path);
                let file = under.rsplit('/').next().unwrap_or("");
                let file = percent_encoding::percent_decode_str(file).decode_utf8_lossy();
                let version = file
                    .strip_prefix(unscoped)
                    .and_then(|f| f.strip_prefix('-'))
                    .and_then(|f| f.strip_suffix(".tgz"))?
                    .to_string();
                let published = match dated {
                    true => self
                        .npm_times(target, mount, &path)
                        .await
                        .get(&version)
                        .copied(),
                    false => None,
                };
                Some((path, version, published))
            }
            Profile::Cargo => {
                let mount::cargo::Route::Download { krate, version } = mount::cargo::route(under)
                else {
                    return None;
                };
                let published = match dated {
                    true => self.cargo_pubtime(target, mount, &krate, &version).await,
                    false => None,
                };
                Some((krate, version, published))
            }
            Profile::Go => {
                let mount::go::Route::Version {
                    module, version, ..
                } = mount::go::route(under)
                else {
                    return None;
                };
                let (name, plain) = (
                    mount::go::unescape(&module)?,
                    mount::go::unescape(&version)?,
                );
                let published = match dated {
                    true => {
                        let info = self.go_info(arc, &module, &plain).await;
                        info.and_then(|i| filter::go::info(&i).ok()?.1)
                    }
                    false => None,
                };
                Some((name, plain, published))
            }
            _ => None,
        }
    }

    /// [`Supply::judge`](crate::supply::Supply::judge), after learning the
    /// fleet's first-seen time of `release` when this node would date it itself.
    async fn judge_resolved(
        &self,
        mount: &Mount,
        lists: &crate::supply::Lists,
        release: &Release<'_>,
        now: i64,
    ) -> Verdict {
        if let Some(key) = self.supply.unresolved(mount, lists, release) {
            self.supply.resolve(vec![key]).await;
        }
        self.supply.judge(mount, lists, release, now)
    }

    pub(super) fn refuse(
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
}
