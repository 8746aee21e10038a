//! Fixtures shared by the client tests, built at test time from `tests/fixtures/` into
//! `CARGO_TARGET_TMPDIR/client-fixtures/NAME` and reused by later runs: real PyPI packages
//! (obtained through pip), locally built gems with their indexes, and a Gentoo distfiles
//! mirror. A file lock per fixture serialises builders across threads and test binaries; a
//! build goes to `NAME.partial` and is renamed into place when complete. Tests must treat the
//! shared directories as read-only (copy first to change anything).

use super::cmd::Cmd;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `tests/fixtures/NAME`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Builds fixture `name` with `build(dir)` unless a complete one exists; returns its directory.
pub async fn shared<F, Fut>(name: &str, build: F) -> PathBuf
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: Future<Output = ()>,
{
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("client-fixtures");
    std::fs::create_dir_all(&root).expect("fixture root");
    let done = root.join(name);
    let lock_path = root.join(format!("{name}.lock"));
    let lock = tokio::task::spawn_blocking(move || {
        let file = File::create(&lock_path).expect("fixture lock file");
        file.lock().expect("lock fixture");
        file
    });
    let lock = tokio::time::timeout(Duration::from_secs(600), lock)
        .await
        .expect("fixture lock within 10 minutes")
        .expect("lock task");
    if !done.join(".complete").exists() {
        let work = root.join(format!("{name}.partial"));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).expect("fixture work dir");
        build(work.clone()).await;
        std::fs::write(work.join(".complete"), b"").expect("mark complete");
        let _ = std::fs::remove_dir_all(&done);
        std::fs::rename(&work, &done).expect("publish fixture");
    }
    drop(lock);
    done
}

/// Real packages: `DIR/packages/*.whl|*.tar.gz` plus `FILE.metadata` for each wheel
/// (six 1.16.0 + 1.17.0 wheels and the 1.16.0 sdist, idna 3.6 + 3.7, iniconfig, attrs, packaging).
/// Serve `DIR` on the files host so the files are at `/packages/FILE`.
pub async fn pypi() -> PathBuf {
    shared("pypi", |dir| async move {
        Cmd::new(script("pypi_packages.sh"))
            .args([dir.join("packages")])
            .limit(Duration::from_secs(600))
            .ok()
            .await;
    })
    .await
}

/// Writes a simple index for `pypi()`'s packages into `out` with links to `files_base`
/// (e.g. `http://127.0.0.2:PORT/packages`); `options` as in `mk_simple_index.py`.
pub async fn pypi_index(out: &Path, files_base: &str, options: &[&str]) {
    let packages = pypi().await.join("packages");
    Cmd::new("python3")
        .args([
            script("mk_simple_index.py").as_os_str(),
            packages.as_os_str(),
            out.as_os_str(),
        ])
        .args([files_base])
        .args(options)
        .limit(Duration::from_secs(60))
        .ok()
        .await;
}

/// A gem source (`DIR/repo`: gems, legacy and compact index, index.html) with crtiny 0.1.0,
/// 0.2.0, 1.0.0, crdep 0.1.0 (crtiny >= 0.1, < 1) and crplat 0.1.0-x86_64-linux; and
/// `DIR/extra/crtiny-0.3.0.gem`, not yet published (see [`gem_publish`]).
pub async fn rubygems() -> PathBuf {
    shared("rubygems", |dir| async move {
        Cmd::new("ruby")
            .args([script("gem_repo.rb").as_os_str()])
            .args([
                "build".as_ref(),
                dir.join("repo").as_os_str(),
                dir.join("extra").as_os_str(),
            ])
            .limit(Duration::from_secs(300))
            .ok()
            .await;
    })
    .await
}

/// Publishes `gem` into the (copied) source `repo`: appends to `versions` and `info/NAME`
/// as rubygems.org does, and regenerates the legacy index.
pub async fn gem_publish(repo: &Path, gem: &Path) {
    Cmd::new("ruby")
        .args([script("gem_repo.rb").as_os_str(), "publish".as_ref()])
        .args([repo.as_os_str(), gem.as_os_str()])
        .limit(Duration::from_secs(120))
        .ok()
        .await;
}

/// As [`gem_publish`], with the compact index v2's `created_at` (ISO 8601) on the info line.
pub async fn gem_publish_dated(repo: &Path, gem: &Path, created_at: &str) {
    Cmd::new("ruby")
        .args([script("gem_repo.rb").as_os_str(), "publish".as_ref()])
        .args([repo.as_os_str(), gem.as_os_str(), created_at.as_ref()])
        .limit(Duration::from_secs(120))
        .ok()
        .await;
}

/// A GLEP 75 mirror root (`DIR/mirror/distfiles/layout.conf`, `distfiles/<2 hex>/FILE`) and
/// its `DIR/mirror/Manifest`, with deterministic `bigpkg-2.0.tar.xz` (3 MB, resumable by
/// Portage's rules: over 350K) and `hello-1.0.tar.gz` (300 KB).
pub async fn gentoo() -> PathBuf {
    shared("gentoo", |dir| async move {
        let src = dir.join("src");
        std::fs::create_dir_all(&src).expect("src dir");
        let files = [
            ("bigpkg-2.0.tar.xz", 3_000_000, 75),
            ("hello-1.0.tar.gz", 300_000, 76),
        ];
        let mut paths = Vec::new();
        for (name, len, seed) in files {
            let path = src.join(name);
            std::fs::write(&path, super::client::bytes_of(len, seed)).expect("write distfile");
            paths.push(path);
        }
        Cmd::new(script("distfiles_mirror.sh"))
            .args([dir.join("mirror")])
            .args(&paths)
            .limit(Duration::from_secs(120))
            .ok()
            .await;
    })
    .await
}

/// Copies the tree at `from` to `to` (which must not exist), e.g. to change a source.
pub async fn copy_tree(from: &Path, to: &Path) {
    Cmd::new("cp")
        .args(["-a".as_ref(), from.as_os_str(), to.as_os_str()])
        .limit(Duration::from_secs(60))
        .ok()
        .await;
}

/// A `uv` to run: the machine's, if `uv --version` works, else one installed
/// once by pip into a fixture venv (`DIR/venv/bin/uv`), as the PyPI fixtures
/// are downloaded.
pub async fn uv() -> PathBuf {
    let machine = tokio::process::Command::new("uv")
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    if machine.is_ok_and(|out| out.status.success()) {
        return PathBuf::from("uv");
    }
    let dir = shared("uv", |dir| async move {
        let venv = dir.join("venv");
        Cmd::new("python3")
            .args(["-m".as_ref(), "venv".as_ref(), venv.as_os_str()])
            .limit(Duration::from_secs(120))
            .ok()
            .await;
        Cmd::new(venv.join("bin/python"))
            .args(["-m", "pip", "install", "--quiet", "uv"])
            .env_remove_prefixed("PIP_")
            .env("PIP_CONFIG_FILE", "/dev/null")
            .limit(Duration::from_secs(600))
            .ok()
            .await;
    })
    .await;
    dir.join("venv/bin/uv")
}
