//! The build tests' upstreams: the shared fixture sources (gems, sdists and
//! the real build-requirement wheels, prepared once by `make_fixtures.sh`), a
//! files host on 127.0.0.2, a PEP 503/691 index linking to it, a gem source,
//! and the mounts that put them behind the proxy.

use super::cmd::Cmd;
use super::fixtures::{copy_tree, script, shared};
use super::site::Site;
use package_cache::config::{Config, Profile, SourceUrl};
use std::path::PathBuf;
use std::time::Duration;
use tempfile::TempDir;

/// The shared sources (`make_fixtures.sh`), built once into
/// `CARGO_TARGET_TMPDIR/client-fixtures/build-kinds` under a file lock, as the other client
/// fixtures are. Read-only: copy before changing anything.
pub async fn fixtures() -> PathBuf {
    shared("build-kinds", |dir| async move {
        Cmd::new(script("build/make_fixtures.sh"))
            .args([&dir])
            .limit(Duration::from_secs(600))
            .ok()
            .await;
    })
    .await
}

/// The three upstream sites.
pub struct Upstreams {
    /// Scratch space that lives as long as the sites.
    pub tmp: TempDir,
    /// The files host (sdists and wheels).
    pub files: Site,
    /// The simple index.
    pub index: Site,
    /// The gem source (compact and legacy index).
    pub gems: Site,
}

impl Upstreams {
    /// `index_options` as for `mk_simple_index.py`; `tamper` replaces that gem file's bytes
    /// (with pcpure's) after indexing, so it no longer matches `/info`.
    pub async fn start(index_options: &[&str], tamper: Option<&str>) -> Upstreams {
        let fx = fixtures().await;
        let tmp = tempfile::tempdir().expect("temp dir");
        let files = Site::start(&fx.join("pypi"), "127.0.0.2").await;
        let index_root = tmp.path().join("index");
        Cmd::new("python3")
            .args([
                script("mk_simple_index.py").as_os_str(),
                fx.join("pypi/packages").as_os_str(),
                index_root.as_os_str(),
            ])
            .args([format!("{}/packages", files.url())])
            .args(index_options)
            .limit(Duration::from_secs(60))
            .ok()
            .await;
        let index = Site::start(&index_root, "127.0.0.1").await;
        let repo = tmp.path().join("gems");
        copy_tree(&fx.join("gems/repo"), &repo).await;
        if let Some(gem) = tamper {
            let other = std::fs::read(repo.join("gems/pcpure-1.0.0.gem")).expect("pcpure");
            std::fs::write(repo.join("gems").join(gem), other).expect("tamper");
        }
        let gems = Site::start(&repo, "127.0.0.1").await;
        Upstreams {
            tmp,
            files,
            index,
            gems,
        }
    }

    /// `c` with the `pypi` mount (and its files host) and the `rubygems` mount.
    pub fn mount(&self, c: Config) -> Config {
        let mut c = c
            .with_mount("pypi", Profile::Pypi, &format!("{}/", self.index.url()))
            .and_then(|c| {
                c.with_mount(
                    "rubygems",
                    Profile::Rubygems,
                    &format!("{}/", self.gems.url()),
                )
            })
            .expect("valid mounts");
        let pypi = c
            .mounts
            .iter_mut()
            .find(|m| m.name == "pypi")
            .expect("pypi");
        pypi.files_hosts
            .push(SourceUrl::try_new(&self.files.url()).expect("files host"));
        c
    }

    /// Stops every site: what follows is offline.
    pub async fn stop(&mut self) {
        self.files.stop().await;
        self.index.stop().await;
        self.gems.stop().await;
    }
}
