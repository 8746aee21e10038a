//! Package types against the real proxy (in-process, pypi and rubygems mounts over local
//! sites): remote gems and sdists fetched through the cache after their index (hash-checked;
//! a tampered file refused), build requirements fetched, then every upstream and the proxy
//! stopped and the builds run offline with Debian's /usr/bin/python3 and /usr/bin/ruby — a
//! pure gem, an extconf.rb gem, a Rakefile gem (rake fetched through the cache), a pure
//! setuptools sdist, a C-extension sdist and a flit_core sdist — each built twice in two job
//! directories: pure packages archive to identical bytes, native ones are compared.
//!
//! Steps run with a plain runner (environment cleared, the step's cwd and env), not the
//! sandbox: this file tests what the types ask for, not the isolation.

mod support;

use package_cache::builds::archive;
use package_cache::builds::fetch::{self, Fetcher, Timeouts};
use package_cache::builds::kind::{Error, JobDirs, Kind, StepView};
use package_cache::builds::runtime::{Family, Runtime};
use package_cache::builds::step::Step;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::app::TestApp;
use support::build_world::{fixtures, Upstreams};

const PYTHON: &str = "/usr/bin/python3";
const RUBY: &str = "/usr/bin/ruby";
/// Per step; a cold pip build here takes a few seconds.
const STEP_LIMIT: Duration = Duration::from_secs(300);

/// A files host (127.0.0.2) with the sdists and build-requirement wheels, a PEP 503/691
/// index (127.0.0.1) linking to it, a gem source, and the proxy mounting both.
struct World {
    upstreams: Upstreams,
    app: Option<TestApp>,
    fetcher: Fetcher,
}

impl World {
    /// `index_options` as for `mk_simple_index.py`; `tamper` replaces that gem file's bytes
    /// (with pcpure's) after indexing, so it no longer matches `/info`.
    async fn start(index_options: &[&str], tamper: Option<&str>) -> World {
        let upstreams = Upstreams::start(index_options, tamper).await;
        let app = TestApp::start(|c| upstreams.mount(c)).await;
        let timeouts = Timeouts {
            connect: Duration::from_secs(5),
            head: Duration::from_secs(60),
            idle: Duration::from_secs(30),
            total: Duration::from_secs(120),
        };
        let fetcher = Fetcher::with_timeouts(
            app.addr,
            Some("pypi".into()),
            Some("rubygems".into()),
            timeouts,
        );
        World {
            upstreams,
            app: Some(app),
            fetcher,
        }
    }

    /// A fresh job directory `work/<job>` with `source/`, `reqs/`, `install/`, `home/`, `tmp/`.
    fn job(&self, job: &str) -> PathBuf {
        let root = self.upstreams.tmp.path().join("work").join(job);
        for dir in ["source", "reqs", "unpacked", "install", "home", "tmp"] {
            std::fs::create_dir_all(root.join(dir)).expect("job dir");
        }
        root
    }

    /// Fetches the remote source into a new job and runs its fetching steps; returns the
    /// job's directories.
    async fn fetch(
        &self,
        kind: Kind,
        rt: &Runtime,
        (name, version, platform): (&str, &str, Option<&str>),
        job: &str,
    ) -> JobDirs {
        let root = self.job(job);
        let source = kind
            .fetch_remote(&self.fetcher, name, version, platform, &root.join("source"))
            .await
            .unwrap_or_else(|e| panic!("fetch {name} {version}: {e:#}"));
        let file_name = source.file_name().unwrap().to_str().unwrap();
        let dirs = JobDirs::new(&root, file_name);
        assert_eq!(dirs.source, source);
        let steps = kind
            .fetch_steps(rt, &self.fetcher, &dirs, &self.view(&dirs))
            .await
            .unwrap_or_else(|e| panic!("fetch steps of {name}: {e:#}"));
        for step in &steps {
            assert!(step.network, "fetching steps need the proxy");
            run(step, &root.join("fetch.log")).await;
        }
        dirs
    }

    /// Steps run here, unconfined: they see the host's paths and the proxy
    /// where it listens.
    fn view(&self, dirs: &JobDirs) -> StepView {
        StepView {
            dirs: dirs.clone(),
            proxy: self.fetcher.proxy(),
        }
    }

    /// Stops the proxy and every upstream: what follows is offline.
    async fn stop(&mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
        self.upstreams.stop().await;
    }
}

/// Runs `step` as the sandbox would ask, without isolation: environment cleared, then
/// exactly the step's, in its cwd; output appended to `log`. Panics (with the log) unless
/// it exits 0 within [`STEP_LIMIT`].
async fn run(step: &Step, log: &Path) {
    assert!(step.program.is_absolute(), "{:?}", step.program);
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut command = tokio::process::Command::new(&step.program);
    command
        .args(&step.args)
        .env_clear()
        .envs(step.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&step.cwd)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log fd"))
        .stderr(out)
        .kill_on_drop(true);
    let started = Instant::now();
    let status = tokio::time::timeout(STEP_LIMIT, command.status())
        .await
        .unwrap_or_else(|_| panic!("step ran over {STEP_LIMIT:?}: {step:?}"))
        .expect("spawn step");
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(status.success(), "{status}: {step:?}\n--- log\n{text}");
    // A short label: the arguments up to the first inline script.
    let label: Vec<String> = step
        .args
        .iter()
        .take(4)
        .map(|a| a.to_string_lossy().lines().next().unwrap_or("").to_string())
        .collect();
    eprintln!(
        "step {} {label:?} took {:?}",
        step.program.display(),
        started.elapsed()
    );
}

/// Runs the build steps of `dirs`, checks the install and archives it; returns the archive.
async fn build(kind: Kind, rt: &Runtime, dirs: &JobDirs) -> PathBuf {
    let steps = kind.build_steps(rt, dirs);
    assert!(!steps.is_empty());
    for step in &steps {
        assert!(!step.network, "build steps are offline");
        run(step, &dirs.root.join("build.log")).await;
    }
    let verify = dirs.clone();
    tokio::task::spawn_blocking(move || kind.verify_install(&verify))
        .await
        .expect("verify task")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = dirs.root.join("install.tgz");
    let (install, tgz) = (dirs.install.clone(), out.clone());
    let sha = tokio::task::spawn_blocking(move || archive::write_tgz(&install, &tgz))
        .await
        .expect("archive task")
        .expect("archive");
    assert_eq!(
        sha,
        hex::encode(Sha256::digest(std::fs::read(&out).unwrap()))
    );
    out
}

/// Archive members: path → (mode, sha256 of the content or the link target).
fn members(tgz: &Path) -> BTreeMap<String, (u32, String)> {
    let file = File::open(tgz).expect("archive");
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = BTreeMap::new();
    for entry in tar.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").display().to_string();
        let mode = entry.header().mode().expect("mode");
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).expect("read member");
        if let Some(link) = entry.link_name().expect("link") {
            data = link.display().to_string().into_bytes();
        }
        out.insert(path, (mode, hex::encode(Sha256::digest(&data))));
    }
    out
}

/// The members whose content differs between two archives with the same member list.
fn differing(a: &Path, b: &Path) -> Vec<String> {
    let (a, b) = (members(a), members(b));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "same files"
    );
    a.iter()
        .filter(|(path, value)| b.get(*path) != Some(value))
        .map(|(path, _)| path.clone())
        .collect()
}

async fn python() -> Runtime {
    Runtime::probe("py311", Path::new(PYTHON))
        .await
        .expect("Debian's python3")
}

async fn ruby() -> Runtime {
    Runtime::probe("ruby31", Path::new(RUBY))
        .await
        .expect("Debian's ruby")
}

/// `PROGRAM ARGS` with only `env`; its stdout, panicking unless it succeeds.
async fn check_output(program: &str, args: &[&str], env: &[(&str, &Path)]) -> String {
    let mut command = tokio::process::Command::new(program);
    command.args(args).env_clear().env("PATH", "/usr/bin:/bin");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("in time")
        .expect("runs");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn debian_interpreters_are_probed_for_family_and_abi() {
    let py = python().await;
    assert_eq!(py.family, Family::Python);
    let abi = py.abi().await.expect("abi").0;
    let version = check_output(
        PYTHON,
        &["-c", "import platform; print(platform.python_version())"],
        &[],
    )
    .await;
    let soabi = check_output(
        PYTHON,
        &[
            "-c",
            "import sysconfig; print(sysconfig.get_config_var('SOABI'))",
        ],
        &[],
    )
    .await;
    assert_eq!(abi, format!("{soabi} {version}"));
    assert!(abi.starts_with("cpython-3"), "{abi}");

    let rb = ruby().await;
    assert_eq!(rb.family, Family::Ruby);
    let abi = rb.abi().await.expect("abi").0;
    let expected = check_output(
        RUBY,
        &["-e", "print RUBY_VERSION, ' ', RbConfig::CONFIG['arch']"],
        &[],
    )
    .await;
    assert_eq!(abi, format!("ruby {expected}"));

    let err = Runtime::probe("true", Path::new("/bin/true"))
        .await
        .expect_err("true is no interpreter");
    assert!(err.to_string().contains("neither python nor ruby"), "{err}");
}

#[tokio::test]
async fn a_remote_gem_comes_through_the_cache_after_its_info_and_a_tampered_one_is_refused() {
    let world = World::start(&[], Some("pcrake-1.0.0.gem")).await;
    let dest = world.job("gems").join("source");
    let fetch = |name: &'static str, version: &'static str, platform: Option<&'static str>| {
        Kind::Gem.fetch_remote(&world.fetcher, name, version, platform, &dest)
    };

    let got = fetch("pcpure", "1.0.0", None).await.expect("pcpure");
    assert_eq!(got, dest.join("pcpure-1.0.0.gem"));
    let original = world.upstreams.gems.root().join("gems/pcpure-1.0.0.gem");
    assert_eq!(
        std::fs::read(&got).unwrap(),
        std::fs::read(&original).unwrap()
    );
    let log = world.upstreams.gems.log();
    let position = |path: &str| log.iter().position(|l| l.path == path);
    assert!(
        position("/info/pcpure") < position("/gems/pcpure-1.0.0.gem")
            && position("/info/pcpure").is_some(),
        "/info first, so the proxy checks the gem: {log:?}"
    );
    assert!(
        log.iter().all(|l| l.ua().starts_with("package-cache/")),
        "{log:?}"
    );
    // Again: from the cache.
    fetch("pcpure", "1.0.0", None).await.expect("pcpure again");
    assert_eq!(
        world
            .upstreams
            .gems
            .requests_for("/gems/pcpure-1.0.0.gem")
            .len(),
        1
    );

    // A platform gem: VERSION-PLATFORM is one field of /info, never split.
    let plat = fetch("pcplat", "1.0.0", Some("x86_64-linux"))
        .await
        .expect("pcplat");
    assert_eq!(plat, dest.join("pcplat-1.0.0-x86_64-linux.gem"));
    for (name, version, platform) in [
        ("pcplat", "1.0.0", None),
        ("pcplat", "1.0.0", Some("java")),
        ("pcpure", "9.9.9", None),
        ("pcpure", "1.0", None),
    ] {
        let err = fetch(name, version, platform).await.expect_err(name);
        assert!(matches!(err, Error::NoSuchVersion { .. }), "{err}");
        assert!(err.is_client(), "{err}");
    }
    let err = fetch("nosuchgem", "1.0.0", None)
        .await
        .expect_err("unknown gem");
    assert!(
        matches!(err, Error::NoSuchPackage { .. }) && err.is_client(),
        "{err}"
    );
    let err = fetch("../pcpure", "1.0.0", None)
        .await
        .expect_err("bad name");
    assert!(
        matches!(err, Error::BadRequest(_)) && err.is_client(),
        "{err}"
    );

    // The tampered gem does not match /info: refused by the proxy, nothing left here.
    let err = fetch("pcrake", "1.0.0", None)
        .await
        .expect_err("tampered gem");
    assert!(!err.is_client(), "an upstream fault: {err}");
    let mut left: Vec<_> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["pcplat-1.0.0-x86_64-linux.gem", "pcpure-1.0.0.gem"]);

    // The fetcher's own classes: too big is the request's fault, a dead proxy is not.
    let err = world
        .fetcher
        .get_bytes("/rubygems/info/pcpure", None, 10)
        .await
        .expect_err("over the limit");
    assert!(
        matches!(err, fetch::Error::TooBig { limit: 10, .. }) && err.is_client(),
        "{err}"
    );
    let err = world
        .fetcher
        .get_bytes("/rubygems/gems/nothing-1.0.gem", None, 1 << 20)
        .await
        .expect_err("no such file");
    assert!(err.is_not_found() && err.is_client(), "{err}");
    let dead = Fetcher::new(
        "127.0.0.1:9".parse().unwrap(),
        None,
        Some("rubygems".into()),
    );
    let err = dead
        .download("/rubygems/info/pcpure", &dest.join("x"), 1 << 20)
        .await
        .expect_err("nobody listens on the discard port");
    assert!(
        matches!(err, fetch::Error::Request { .. }) && !err.is_client(),
        "{err}"
    );
    assert!(!dest.join("x").exists() && !dest.join(".x.part").exists());

    // Without a rubygems mount, remote gems cannot be fetched: the request's fault.
    let none = Fetcher::new(world.fetcher.proxy(), None, None);
    let err = Kind::Gem
        .fetch_remote(&none, "pcpure", "1.0.0", None, &dest)
        .await
        .expect_err("no mount");
    assert!(err.is_client(), "{err}");
}

#[tokio::test]
async fn a_remote_sdist_is_chosen_from_the_json_page_and_hash_checked() {
    let world = World::start(&["--wrong-sha256", "pc_flit-1.0.tar.gz"], None).await;
    let dest = world.job("sdists").join("source");
    let fetch = |name: &'static str, version: &'static str, platform: Option<&'static str>| {
        Kind::Pip.fetch_remote(&world.fetcher, name, version, platform, &dest)
    };

    // The project's name in any spelling; the file named as the index names it.
    let got = fetch("pc.pure", "1.0", None).await.expect("pc.pure");
    assert_eq!(got, dest.join("pc_pure-1.0.tar.gz"));
    let original = world
        .upstreams
        .files
        .root()
        .join("packages/pc_pure-1.0.tar.gz");
    assert_eq!(
        std::fs::read(&got).unwrap(),
        std::fs::read(&original).unwrap()
    );
    let page = world.upstreams.index.requests_for("/simple/pc-pure/");
    assert_eq!(page.len(), 1);
    assert_eq!(
        page[0].content_type.as_deref(),
        Some("application/vnd.pypi.simple.v1+json")
    );
    let file = world
        .upstreams
        .files
        .requests_for("/packages/pc_pure-1.0.tar.gz");
    assert_eq!(file.len(), 1, "through the proxy's files-host route");
    assert!(file[0].ua().starts_with("package-cache/"));
    let got = fetch("PC_Native", "1.0", None).await.expect("pc_native");
    assert_eq!(got, dest.join("pc_native-1.0.tar.gz"));

    for (name, version) in [("pc.pure", "2.0"), ("pc.pure", "1"), ("flit_core", "3.9.0")] {
        let err = fetch(name, version, None).await.expect_err(name);
        assert!(
            matches!(err, Error::NoSuchVersion { what: "sdist", .. }) && err.is_client(),
            "{name} {version}: {err}"
        );
    }
    let err = fetch("no-such-project", "1.0", None)
        .await
        .expect_err("unknown");
    assert!(
        matches!(err, Error::NoSuchPackage { .. }) && err.is_client(),
        "{err}"
    );
    let err = fetch("pc.pure", "1.0", Some("linux"))
        .await
        .expect_err("platform");
    assert!(matches!(err, Error::BadRequest(_)), "{err}");

    // The index lists another sha256 for pc_flit: the proxy refuses the bytes.
    let err = fetch("pc-flit", "1.0", None).await.expect_err("tampered");
    assert!(!err.is_client(), "an upstream fault: {err}");
    assert!(!dest.join("pc_flit-1.0.tar.gz").exists());
    assert_eq!(
        std::fs::read_dir(&dest).unwrap().count(),
        2,
        "no partial file left"
    );
}

/// Fetches `package` into jobs `a` and `b`, stops everything, builds both; returns the two
/// archives and the job directories.
async fn build_twice(
    kind: Kind,
    rt: &Runtime,
    package: (&str, &str, Option<&str>),
) -> (World, [(JobDirs, PathBuf); 2]) {
    let mut world = World::start(&[], None).await;
    let a = world.fetch(kind, rt, package, "a").await;
    let b = world.fetch(kind, rt, package, "b").await;
    world.stop().await;
    let tgz_a = build(kind, rt, &a).await;
    let tgz_b = build(kind, rt, &b).await;
    (world, [(a, tgz_a), (b, tgz_b)])
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn a_pure_gem_builds_offline_into_identical_archives() {
    let rt = ruby().await;
    let (_world, [(a, tgz_a), (_, tgz_b)]) =
        build_twice(Kind::Gem, &rt, ("pcpure", "1.0.0", None)).await;
    assert!(
        files_in(&a.reqs).is_empty(),
        "nothing to fetch for a pure gem"
    );
    assert_eq!(
        std::fs::read(&tgz_a).unwrap(),
        std::fs::read(&tgz_b).unwrap(),
        "a pure gem built twice gives the same bytes"
    );
    let listed = members(&tgz_a);
    for path in [
        "gems/pcpure-1.0.0/lib/pcpure.rb",
        "specifications/pcpure-1.0.0.gemspec",
        "bin/pcpure",
    ] {
        assert!(listed.contains_key(path), "{path}: {listed:#?}");
    }
    assert_eq!(listed["bin/pcpure"].0, 0o755);
    let value = check_output(
        RUBY,
        &["-e", "gem 'pcpure'; require 'pcpure'; print Pcpure::VALUE"],
        &[("GEM_PATH", &a.install), ("HOME", &a.home)],
    )
    .await;
    assert_eq!(value, "42");
}

#[tokio::test]
async fn an_extconf_gem_builds_its_native_extension_offline() {
    let rt = ruby().await;
    let (_world, [(a, tgz_a), (_, tgz_b)]) =
        build_twice(Kind::Gem, &rt, ("pcnative", "1.0.0", None)).await;
    let answer = check_output(
        RUBY,
        &[
            "-e",
            "gem 'pcnative'; require 'pcnative'; print Pcnative.answer",
        ],
        &[("GEM_PATH", &a.install), ("HOME", &a.home)],
    )
    .await;
    assert_eq!(answer, "42");
    let differ = differing(&tgz_a, &tgz_b);
    eprintln!("native gem, members that differ between two builds: {differ:#?}");
    assert!(
        differ.iter().all(|p| p.ends_with(".so")
            || p.ends_with(".o")
            || p.ends_with("Makefile")
            || p.ends_with("gem_make.out")
            || p.ends_with("mkmf.log")),
        "only build products and logs that name the job directory differ: {differ:#?}"
    );
}

#[tokio::test]
async fn a_rakefile_gem_builds_with_rake_fetched_through_the_cache() {
    let rt = ruby().await;
    let mut world = World::start(&[], None).await;
    let dirs = world
        .fetch(Kind::Gem, &rt, ("pcrake", "1.0.0", None), "a")
        .await;
    assert_eq!(files_in(&dirs.reqs), ["rake-13.0.6.gem"]);
    let log = world.upstreams.gems.log();
    let position = |path: &str| log.iter().position(|l| l.path == path);
    assert!(
        position("/info/rake").is_some()
            && position("/info/rake") < position("/gems/rake-13.0.6.gem")
    );
    world.stop().await;
    build(Kind::Gem, &rt, &dirs).await;
    let rake = check_output(
        RUBY,
        &[
            "-e",
            "gem 'pcrake'; require 'pcrake'; print Pcrake::RAKE_PATH",
        ],
        &[("GEM_PATH", &dirs.install), ("HOME", &dirs.home)],
    )
    .await;
    assert!(
        Path::new(&rake).starts_with(&dirs.reqs),
        "built by the fetched rake, not the runtime's: {rake}"
    );
}

#[tokio::test]
async fn a_pure_setuptools_sdist_builds_offline_into_identical_archives() {
    let rt = python().await;
    let (_world, [(a, tgz_a), (_, tgz_b)]) =
        build_twice(Kind::Pip, &rt, ("pc.pure", "1.0", None)).await;
    // build-system.requires = setuptools>=61, plus wheel for older setuptools' hook.
    assert_eq!(
        files_in(&a.reqs),
        [
            "setuptools-68.2.2-py3-none-any.whl",
            "wheel-0.42.0-py3-none-any.whl"
        ]
    );
    assert_eq!(
        std::fs::read(&tgz_a).unwrap(),
        std::fs::read(&tgz_b).unwrap(),
        "a pure sdist built twice (in two job dirs) gives the same bytes"
    );
    let listed = members(&tgz_a);
    assert!(listed.contains_key("pc_pure/__init__.py"), "{listed:#?}");
    assert!(
        !listed.keys().any(|p| p.ends_with("direct_url.json")),
        "{listed:#?}"
    );
    let record = listed.keys().find(|p| p.ends_with(".dist-info/RECORD"));
    assert!(record.is_some(), "{listed:#?}");
    let value = check_output(
        PYTHON,
        &["-c", "import pc_pure; print(pc_pure.VALUE)"],
        &[("PYTHONPATH", &a.install)],
    )
    .await;
    assert_eq!(value, "42");
}

#[tokio::test]
async fn a_c_extension_sdist_builds_offline() {
    let rt = python().await;
    let (_world, [(a, tgz_a), (_, tgz_b)]) =
        build_twice(Kind::Pip, &rt, ("pc_native", "1.0", None)).await;
    // No pyproject.toml: PEP 517's default requirements.
    assert_eq!(
        files_in(&a.reqs),
        [
            "setuptools-68.2.2-py3-none-any.whl",
            "wheel-0.42.0-py3-none-any.whl"
        ]
    );
    let answer = check_output(
        PYTHON,
        &["-c", "import pc_native; print(pc_native.answer())"],
        &[("PYTHONPATH", &a.install)],
    )
    .await;
    assert_eq!(answer, "42");
    let differ = differing(&tgz_a, &tgz_b);
    eprintln!("C-extension sdist, members that differ between two builds: {differ:#?}");
    assert!(
        differ
            .iter()
            .all(|p| p.ends_with(".so") || p.ends_with(".dist-info/RECORD")),
        "only the extension (and the RECORD holding its hash) differ: {differ:#?}"
    );
}

#[tokio::test]
async fn a_flit_core_sdist_builds_offline_into_identical_archives() {
    let rt = python().await;
    let (_world, [(a, tgz_a), (_, tgz_b)]) =
        build_twice(Kind::Pip, &rt, ("pc-flit", "1.0", None)).await;
    assert_eq!(files_in(&a.reqs), ["flit_core-3.9.0-py3-none-any.whl"]);
    assert_eq!(
        std::fs::read(&tgz_a).unwrap(),
        std::fs::read(&tgz_b).unwrap()
    );
    let version = check_output(
        PYTHON,
        &["-c", "import pc_flit; print(pc_flit.__version__)"],
        &[("PYTHONPATH", &a.install)],
    )
    .await;
    assert_eq!(version, "1.0");
}

#[tokio::test]
async fn an_install_dir_without_a_package_is_a_build_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = JobDirs::new(tmp.path(), "x");
    std::fs::create_dir_all(dirs.install.join("specifications")).unwrap();
    std::fs::create_dir_all(dirs.install.join("gems")).unwrap();
    std::fs::write(dirs.install.join("specifications/x-1.gemspec"), "").unwrap();
    // The gem's directory is a symlink: not an installed gem.
    std::os::unix::fs::symlink("/usr", dirs.install.join("gems/x-1")).unwrap();
    std::fs::create_dir_all(dirs.install.join("x-1.dist-info")).unwrap();
    for kind in [Kind::Gem, Kind::Pip] {
        let err = kind.verify_install(&dirs).expect_err(kind.as_str());
        assert!(
            matches!(err, Error::NotInstalled(_)) && err.is_client(),
            "{err}"
        );
    }
}

#[tokio::test]
async fn local_sources_are_named_for_their_tools_and_build() {
    const SHA1: &str = "0123456789abcdef0123456789abcdef01234567";
    let rt = ruby().await;
    let py = python().await;
    let mut world = World::start(&[], None).await;
    let fx = fixtures().await;
    let local = |kind: Kind, from: PathBuf, job: &str| {
        let root = world.job(job);
        let name = kind.local_source_name(SHA1, &from).expect("a source");
        let dirs = JobDirs::new(&root, &name);
        std::fs::copy(&from, &dirs.source).expect("copy source");
        dirs
    };
    let gem = local(Kind::Gem, fx.join("gems/repo/gems/pcpure-1.0.0.gem"), "gem");
    assert_eq!(gem.source.file_name().unwrap(), &*format!("{SHA1}.gem"));
    let sdist = local(
        Kind::Pip,
        fx.join("pypi/packages/pc_flit-1.0.tar.gz"),
        "sdist",
    );
    assert_eq!(
        sdist.source.file_name().unwrap(),
        &*format!("{SHA1}.tar.gz")
    );
    for step in Kind::Pip
        .fetch_steps(&py, &world.fetcher, &sdist, &world.view(&sdist))
        .await
        .expect("steps")
    {
        run(&step, &sdist.root.join("fetch.log")).await;
    }
    assert!(Kind::Gem
        .fetch_steps(&rt, &world.fetcher, &gem, &world.view(&gem))
        .await
        .expect("steps")
        .is_empty());
    world.stop().await;
    build(Kind::Gem, &rt, &gem).await;
    build(Kind::Pip, &py, &sdist).await;

    // The wrong kind of file, and the wrong runtime for the type.
    let err = Kind::Gem
        .local_source_name(SHA1, &sdist.source)
        .expect_err("an sdist is no gem");
    assert!(
        matches!(err, Error::BadSource { .. }) && err.is_client(),
        "{err}"
    );
    let err = Kind::Pip
        .local_source_name(SHA1, &gem.source)
        .expect_err("a gem is no sdist");
    assert!(err.is_client(), "{err}");
    let err = Kind::Pip
        .fetch_steps(&rt, &world.fetcher, &sdist, &world.view(&sdist))
        .await
        .expect_err("ruby cannot build pip packages");
    assert!(matches!(err, Error::BadRequest(_)), "{err}");
}
