//! A PyPI world for client tests of upstream quirks: the fixture packages on
//! a files host (127.0.0.2) and an index on 127.0.0.1 written by
//! `mk_simple_index.py` with the given options (optionally with content-coded
//! pages), a temp dir for venvs and caches, and pip (and uv) run with the
//! machine's configuration neutralised, so they talk to the index under test only.

use super::app::Binary;
use super::cmd::{Cmd, Output};
use super::fixtures;
use super::site::Site;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;

/// The two upstreams and a temp dir; see the module docs.
pub struct PypiWorld {
    /// Venvs, caches and the index tree live here.
    pub tmp: TempDir,
    /// The files host (the fixture packages at `/packages/FILE`).
    pub files: Site,
    /// The index host.
    pub index: Site,
}

impl PypiWorld {
    /// Builds the index with `options` and serves it; `coding` content-codes its pages.
    pub async fn start(options: &[&str], coding: Option<&'static str>) -> PypiWorld {
        let packages = fixtures::pypi().await;
        let files = Site::start(&packages, "127.0.0.2").await;
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().join("index");
        fixtures::pypi_index(&root, &format!("{}/packages", files.url()), options).await;
        let index = match coding {
            Some(coding) => Site::start_coded(&root, "127.0.0.1", coding).await,
            None => Site::start(&root, "127.0.0.1").await,
        };
        PypiWorld { tmp, files, index }
    }

    /// Starts the real binary with `--mirror pypi=MIRROR --files-host pypi=FILES` and `extra`.
    pub async fn proxy(&self, mirror: &str, extra: &[&str]) -> Binary {
        let cache = self.cache();
        let mirror = format!("pypi={mirror}");
        let files = format!("pypi={}", self.files.url());
        let mut args = vec![
            "--cache",
            cache.to_str().expect("utf-8 path"),
            "--mirror",
            &mirror,
            "--files-host",
            &files,
        ];
        args.extend_from_slice(extra);
        Binary::start(&args).await
    }

    /// The proxy's cache directory.
    pub fn cache(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }

    /// A fresh venv named `name`.
    pub async fn venv(&self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join(name);
        Cmd::new("python3")
            .args(["-m".as_ref(), "venv".as_ref(), dir.as_os_str()])
            .limit(Duration::from_secs(120))
            .ok()
            .await;
        dir
    }

    /// Stops both upstreams (peers then see connection refused).
    pub async fn stop_upstreams(&self) {
        self.files.stop().await;
        self.index.stop().await;
    }
}

/// `VENV/bin/python -m pip ARGS` with no PIP_* variables, no configuration
/// files, no cache and no version check.
pub fn pip(venv: &Path, args: &[&str]) -> Cmd {
    Cmd::new(venv.join("bin/python"))
        .args(["-m", "pip"])
        .args(args)
        .env_remove_prefixed("PIP_")
        .env_remove_prefixed("REQUESTS_CA_BUNDLE")
        .env_remove_prefixed("CURL_CA_BUNDLE")
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_NO_INPUT", "1")
        .limit(Duration::from_secs(300))
}

/// `pip install --no-cache-dir --index-url INDEX PACKAGES`.
pub async fn install(venv: &Path, index: &str, packages: &[&str]) -> Output {
    let mut args = vec!["install", "--no-cache-dir", "--index-url", index];
    args.extend_from_slice(packages);
    pip(venv, &args).run().await
}

/// What is installed in `venv` (`pip freeze`, normalised `name==version`).
pub async fn installed(venv: &Path) -> BTreeSet<String> {
    let out = pip(venv, &["freeze"]).ok().await;
    out.stdout
        .lines()
        .map(|l| l.trim().to_ascii_lowercase().replace('_', "-"))
        .collect()
}

/// `uv ARGS` with no UV_* variables and no configuration files, its cache in
/// `cache` (fresh per test, so every download goes to the index).
pub async fn uv(cache: &Path, args: &[&str]) -> Cmd {
    Cmd::new(fixtures::uv().await)
        .args(args)
        .env_remove_prefixed("UV_")
        .env("UV_NO_CONFIG", "1")
        .env("UV_CACHE_DIR", cache)
        .env("UV_PYTHON_DOWNLOADS", "never")
        .limit(Duration::from_secs(300))
}
