//! Real gem (RubyGems 3.3) and bundler (2.3) against a local gem source with a compact index
//! and MD5 ETags (as rubygems.org), directly and through package-cache: `gem install` and
//! `bundle install` cold and with the upstream stopped, `bundle update` picking up a new
//! release only after the index TTL, the legacy index, and a platform gem.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::app::Binary;
use support::cmd::{Cmd, Output};
use support::fixtures;
use support::site::{md5_hex, ETags, Logged, Site};
use tempfile::TempDir;

/// A private copy of the fixture source served with MD5 ETags, and a temp dir for homes.
struct Source {
    tmp: TempDir,
    repo: PathBuf,
    extra: PathBuf,
    site: Site,
}

impl Source {
    async fn start() -> Source {
        let fixture = fixtures::rubygems().await;
        let tmp = tempfile::tempdir().expect("temp dir");
        let repo = tmp.path().join("repo");
        fixtures::copy_tree(&fixture.join("repo"), &repo).await;
        let site = Site::start_with(&repo, "127.0.0.1", ETags::Md5).await;
        Source {
            extra: fixture.join("extra"),
            tmp,
            repo,
            site,
        }
    }

    fn url(&self) -> String {
        format!("{}/", self.site.url())
    }

    async fn proxy(&self, extra: &[&str]) -> Binary {
        let cache = self.tmp.path().join("cache");
        let mirror = format!("rubygems={}/", self.site.url());
        let mut args = vec![
            "--cache",
            cache.to_str().expect("utf-8"),
            "--mirror",
            &mirror,
        ];
        args.extend_from_slice(extra);
        Binary::start(&args).await
    }

    /// A fresh directory under the temp dir.
    fn dir(&self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("create dir");
        dir
    }

    async fn publish_crtiny_0_3_0(&self) {
        fixtures::gem_publish(&self.repo, &self.extra.join("crtiny-0.3.0.gem")).await;
    }
}

fn proxy_source(proxy: &Binary) -> String {
    proxy.url("/rubygems/")
}

/// `gem ARGS` with its own HOME and GEM_HOME, and no GEM_*/BUNDLE_* from the environment.
fn gem(home: &Path, args: &[&str]) -> Cmd {
    Cmd::new("gem")
        .args(args)
        .env_remove_prefixed("GEM_")
        .env_remove_prefixed("BUNDLE_")
        .env("HOME", home)
        .env("GEM_HOME", home.join("gems"))
        .limit(Duration::from_secs(180))
}

async fn gem_install(home: &Path, source: &str, name: &str) -> Output {
    let args = [
        "install",
        "--clear-sources",
        "--source",
        source,
        "--no-document",
        name,
    ];
    gem(home, &args).run().await
}

/// `NAME-VERSION` of the gems installed in a GEM_HOME or BUNDLE_PATH gem dir.
fn gems_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A bundler app dir with `Gemfile` using `source`, and its isolated home; `bundle ARGS`.
struct App {
    dir: PathBuf,
    home: PathBuf,
}

impl App {
    fn new(at: PathBuf, source: &str) -> App {
        let dir = at.join("app");
        let home = at.join("home");
        std::fs::create_dir_all(&dir).expect("app dir");
        // bundler uses a throw-away home (and never revalidates) unless HOME exists.
        std::fs::create_dir_all(&home).expect("home dir");
        let gemfile = format!("source \"{source}\"\ngem \"crdep\"\n");
        std::fs::write(dir.join("Gemfile"), gemfile).expect("Gemfile");
        App { dir, home }
    }

    async fn bundle(&self, args: &[&str]) -> Output {
        Cmd::new("bundle")
            .args(args)
            .current_dir(&self.dir)
            .env_remove_prefixed("GEM_")
            .env_remove_prefixed("BUNDLE_")
            .env("HOME", &self.home)
            .env("BUNDLE_USER_HOME", self.home.join(".bundle"))
            .env("BUNDLE_PATH", self.home.join("bundle"))
            .env("BUNDLE_GEMFILE", self.dir.join("Gemfile"))
            .env("BUNDLE_DISABLE_VERSION_CHECK", "true")
            .limit(Duration::from_secs(180))
            .run()
            .await
    }

    /// `bundle config set --local mirror.SOURCE URL`.
    async fn mirror(&self, source: &str, url: &str) {
        let key = format!("mirror.{}", source.trim_end_matches('/'));
        let out = self.bundle(&["config", "set", "--local", &key, url]).await;
        assert!(out.ok(), "{}", out.text());
    }

    /// `NAME-VERSION` pinned in Gemfile.lock's specs.
    fn locked(&self) -> BTreeSet<String> {
        let lock = std::fs::read_to_string(self.dir.join("Gemfile.lock")).unwrap_or_default();
        lock.lines()
            .filter(|l| l.starts_with("    ") && !l.starts_with("     "))
            .filter_map(|l| {
                let (name, version) = l.trim().split_once(" (")?;
                Some(format!("{name}-{}", version.trim_end_matches(')')))
            })
            .collect()
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn paths(log: &[Logged]) -> Vec<String> {
    log.iter()
        .map(|l| format!("{} {} {}", l.method, l.path, l.status))
        .collect()
}

/// Requests that mean bundler left the compact index for a slower one.
fn fell_back(log: &[Logged]) -> bool {
    log.iter().any(|l| {
        l.path.starts_with("/api/v1/dependencies")
            || l.path.ends_with("specs.4.8.gz")
            || l.path.starts_with("/quick/")
    })
}

#[tokio::test]
async fn gem_and_bundler_work_directly_against_the_fixture_source() {
    let source = Source::start().await;
    // Our MD5 ETags are what bundler checks: the MD5 that /versions lists for /info/crtiny.
    let info = std::fs::read(source.repo.join("info/crtiny")).unwrap();
    let versions = std::fs::read_to_string(source.repo.join("versions")).unwrap();
    assert!(versions.contains(&md5_hex(&info)), "{versions}");

    // gem: HEAD / chooses the compact index.
    let home = source.dir("gem");
    let out = gem_install(&home, &source.url(), "crdep").await;
    assert!(out.ok(), "{}", out.text());
    assert_eq!(
        gems_in(&home.join("gems/gems")),
        set(&["crdep-0.1.0", "crtiny-0.2.0"])
    );
    let log = source.site.log();
    eprintln!("gem install: {:#?}", paths(&log));
    assert_eq!(
        (log[0].method.as_str(), log[0].path.as_str()),
        ("HEAD", "/")
    );
    assert!(log.iter().any(|l| l.path == "/info/crdep"));
    assert!(
        !log.iter().any(|l| l.path.ends_with("specs.4.8.gz")),
        "compact index used"
    );

    // gem list --remote reads the legacy index.
    source.site.clear_log();
    let out = gem(
        &home,
        &[
            "list",
            "--remote",
            "--all",
            "--clear-sources",
            "--source",
            &source.url(),
        ],
    )
    .ok()
    .await;
    assert!(
        out.stdout.contains("crtiny (1.0.0, 0.2.0, 0.1.0)"),
        "{}",
        out.text()
    );
    eprintln!("gem list --remote --all: {:#?}", paths(&source.site.log()));
    assert!(source.site.log().iter().any(|l| l.path == "/specs.4.8.gz"));

    // bundler: compact index with MD5 ETags, no fallback.
    source.site.clear_log();
    let app = App::new(source.dir("bundler"), &source.url());
    let out = app.bundle(&["install", "--verbose"]).await;
    assert!(out.ok(), "{}", out.text());
    assert_eq!(app.locked(), set(&["crdep-0.1.0", "crtiny-0.2.0"]));
    let log = source.site.log();
    eprintln!("bundle install: {:#?}", paths(&log));
    assert!(log.iter().any(|l| l.path == "/versions"));
    assert!(!fell_back(&log), "{:#?}", paths(&log));

    // A lock and installed gems make `bundle install` offline; `bundle update` revalidates
    // /versions with Range and If-None-Match -> 304.
    source.site.clear_log();
    let out = app.bundle(&["install", "--verbose"]).await;
    assert!(out.ok(), "{}", out.text());
    assert!(
        source.site.log().is_empty(),
        "{:#?}",
        paths(&source.site.log())
    );
    let out = app.bundle(&["update", "--verbose"]).await;
    assert!(out.ok(), "{}", out.text());
    let versions = source.site.requests_for("/versions");
    eprintln!("bundle install again: {versions:#?}");
    assert!(versions
        .iter()
        .any(|l| l.range.is_some() && l.if_none_match.is_some()));

    // A new release: bundle update fetches the appended bytes (206) and picks it.
    source.publish_crtiny_0_3_0().await;
    source.site.clear_log();
    let out = app.bundle(&["update", "--verbose"]).await;
    assert!(out.ok(), "{}", out.text());
    assert_eq!(app.locked(), set(&["crdep-0.1.0", "crtiny-0.3.0"]));
    let log = source.site.log();
    eprintln!("bundle update: {log:#?}");
    assert!(!fell_back(&log), "{:#?}", paths(&log));
    assert!(
        !out.stdout.contains("does not match the checksum"),
        "{}",
        out.text()
    );

    // `bundle config mirror.SOURCE URL` sends everything for SOURCE to URL.
    source.site.clear_log();
    let app = App::new(source.dir("mirrored"), DEAD_SOURCE);
    app.mirror(DEAD_SOURCE, &source.url()).await;
    let out = app.bundle(&["install", "--verbose"]).await;
    assert!(out.ok(), "{}", out.text());
    assert_eq!(app.locked(), set(&["crdep-0.1.0", "crtiny-0.3.0"]));
    assert!(!fell_back(&source.site.log()));
}

/// A source nobody listens on (port 9 on loopback: discard, closed here).
const DEAD_SOURCE: &str = "http://127.0.0.1:9/";

fn all_by_proxy(log: &[Logged]) {
    for l in log {
        assert!(
            l.ua().starts_with("package-cache/"),
            "{} by {:?}",
            l.path,
            l.ua()
        );
    }
}

#[tokio::test]
async fn gem_installs_through_the_cache_then_with_the_upstream_stopped() {
    let source = Source::start().await;
    let proxy = source.proxy(&[]).await;
    let via = proxy_source(&proxy);
    let expected = set(&["crdep-0.1.0", "crtiny-0.2.0"]);

    let home = source.dir("cold");
    let out = gem_install(&home, &via, "crdep").await;
    assert!(out.ok(), "{}", out.text());
    assert_eq!(gems_in(&home.join("gems/gems")), expected);
    // A platform gem: its file name has a dash more than NAME-VERSION.
    let out = gem_install(&home, &via, "crplat").await;
    assert!(out.ok(), "{}", out.text());
    assert!(gems_in(&home.join("gems/gems")).contains("crplat-0.1.0-x86_64-linux"));
    let log = source.site.log();
    all_by_proxy(&log);
    assert!(
        log.iter().any(|l| l.path == "/info/crdep"),
        "compact index: {:#?}",
        paths(&log)
    );
    assert!(
        !log.iter().any(|l| l.path.ends_with("specs.4.8.gz")),
        "{:#?}",
        paths(&log)
    );

    // The legacy index, as `gem list --remote` reads it.
    let list = [
        "list",
        "--remote",
        "--all",
        "--clear-sources",
        "--source",
        &via,
    ];
    let listed = gem(&home, &list).ok().await.stdout;
    assert!(listed.contains("crtiny (1.0.0, 0.2.0, 0.1.0)"), "{listed}");
    let latest = ["list", "--remote", "--clear-sources", "--source", &via];
    let latest = gem(&home, &latest).ok().await.stdout;
    assert!(latest.contains("crtiny (1.0.0)"), "{latest}");
    all_by_proxy(&source.site.log());

    source.site.stop().await;
    let head = support::client::head(&via).await;
    assert!(head.status.is_success(), "HEAD / offline: {}", head.status);
    let home = source.dir("offline");
    let out = gem_install(&home, &via, "crdep").await;
    assert!(out.ok(), "offline: {}", out.text());
    assert_eq!(gems_in(&home.join("gems/gems")), expected);
    let out = gem_install(&home, &via, "crplat").await;
    assert!(out.ok(), "offline: {}", out.text());
    assert_eq!(gem(&home, &list).ok().await.stdout, listed);
}

#[tokio::test]
async fn bundler_through_the_cache_offline_and_a_new_release_after_the_ttl() {
    const TTL: Duration = Duration::from_secs(6);
    let source = Source::start().await;
    let ttl = TTL.as_secs().to_string();
    let proxy = source.proxy(&["--index-ttl", &ttl]).await;
    let via = proxy_source(&proxy);
    let before = set(&["crdep-0.1.0", "crtiny-0.2.0"]);

    let cached_at = Instant::now();
    let app = App::new(source.dir("cold"), &via);
    let out = app.bundle(&["install", "--verbose"]).await;
    assert!(out.ok(), "{}", out.text());
    assert!(
        !out.stdout.contains("does not match the checksum"),
        "{}",
        out.text()
    );
    assert_eq!(app.locked(), before);
    let log = source.site.log();
    all_by_proxy(&log);
    for path in ["/versions", "/info/crdep", "/info/crtiny"] {
        assert!(
            log.iter().any(|l| l.path == path),
            "{path}: {:#?}",
            paths(&log)
        );
    }
    assert!(
        !fell_back(&log),
        "bundler stayed on the compact index: {:#?}",
        paths(&log)
    );

    // Upstream down: a fresh home, configured as a mirror of the (dead) upstream URL.
    source.site.stop().await;
    let offline = App::new(source.dir("offline"), &source.url());
    offline.mirror(&source.url(), &via).await;
    let out = offline.bundle(&["install", "--verbose"]).await;
    assert!(out.ok(), "offline: {}", out.text());
    assert_eq!(offline.locked(), before);
    source.site.restart().await;

    // A release appears upstream: not seen while the cached index is fresh, seen after.
    source.publish_crtiny_0_3_0().await;
    source.site.clear_log();
    let out = app.bundle(&["update", "--verbose"]).await;
    assert!(out.ok(), "{}", out.text());
    if cached_at.elapsed() < TTL {
        assert_eq!(
            app.locked(),
            before,
            "within the TTL the cached index is served"
        );
        assert!(source.site.requests_for("/versions").is_empty());
    } else {
        eprintln!("note: too slow to check the index stays cached within {TTL:?}");
    }
    let wait = (TTL + Duration::from_millis(500)).saturating_sub(cached_at.elapsed());
    tokio::time::sleep(wait).await;
    let out = app.bundle(&["update", "--verbose"]).await;
    assert!(out.ok(), "{}", out.text());
    assert!(
        !out.stdout.contains("does not match the checksum"),
        "{}",
        out.text()
    );
    assert_eq!(app.locked(), set(&["crdep-0.1.0", "crtiny-0.3.0"]));
    let log = source.site.log();
    all_by_proxy(&log);
    assert!(!fell_back(&log), "{:#?}", paths(&log));
    assert_eq!(source.site.requests_for("/gems/crtiny-0.3.0.gem").len(), 1);
}
