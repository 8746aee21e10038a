//! The supply-chain policy on a RubyGems mount, with real gem (3.3) and
//! bundler (2.3) against a compact-index source with MD5 ETags: releases
//! without a date count from when the cache first saw them; crtiny 0.3.0,
//! published with the compact index v2's `created_at` an hour before "now",
//! is hidden under `--min-age 3d` (both pick crtiny 0.2.0), refused with 403
//! as a direct download, then picked once the test clock passes — bundler
//! updating its compact-index cache with Range requests, its MD5 checks
//! passing on the filtered `/info` and `/versions` — and skipped again, its
//! cached `.gem` refused, once a deny list names it.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::app::Binary;
use support::client::{get_with, info_versions};
use support::cmd::{Cmd, Output};
use support::fixtures;
use support::site::{md5_hex, ETags, Logged, Site};
use tempfile::TempDir;

const T0: &str = "2026-01-01T00:00:00Z";
/// Four days on: what was first seen at T0 is old enough for 3 days.
const T4: &str = "2026-01-05T00:00:00Z";
/// crtiny 0.3.0's created_at: an hour before T4.
const PUBLISHED: &str = "2026-01-04T23:00:00Z";
/// Past 3 days after PUBLISHED.
const T8: &str = "2026-01-09T00:00:00Z";

struct World {
    tmp: TempDir,
    repo: PathBuf,
    extra: PathBuf,
    site: Site,
    clock: PathBuf,
    deny: PathBuf,
}

impl World {
    async fn start() -> World {
        let fixture = fixtures::rubygems().await;
        let tmp = tempfile::tempdir().expect("temp dir");
        let repo = tmp.path().join("repo");
        fixtures::copy_tree(&fixture.join("repo"), &repo).await;
        let site = Site::start_with(&repo, "127.0.0.1", ETags::Md5).await;
        let clock = tmp.path().join("clock");
        std::fs::write(&clock, T0).unwrap();
        let deny = tmp.path().join("deny.txt");
        std::fs::write(&deny, "").unwrap();
        World {
            extra: fixture.join("extra"),
            tmp,
            repo,
            site,
            clock,
            deny,
        }
    }

    async fn proxy(&self) -> Binary {
        let cache = self.tmp.path().join("cache");
        let mirror = format!("rubygems={}/", self.site.url());
        Binary::start(&[
            "--cache",
            cache.to_str().unwrap(),
            "--mirror",
            &mirror,
            // Every request revalidates: a publish shows at once.
            "--index-ttl",
            "0",
            "--min-age",
            "rubygems=3d",
            "--deny-list",
            self.deny.to_str().unwrap(),
            "--policy-clock-file",
            self.clock.to_str().unwrap(),
        ])
        .await
    }

    fn dir(&self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

fn gem(home: &Path, args: &[&str]) -> Cmd {
    Cmd::new("gem")
        .args(args)
        .env_remove_prefixed("GEM_")
        .env_remove_prefixed("BUNDLE_")
        .env("HOME", home)
        .env("GEM_HOME", home.join("gems"))
        .limit(Duration::from_secs(180))
}

/// `gem install crdep` into a fresh home; the installed `NAME-VERSION`s.
async fn gem_installs(world: &World, name: &str, source: &str) -> (Output, BTreeSet<String>) {
    let home = world.dir(name);
    let out = gem(
        &home,
        &[
            "install",
            "--clear-sources",
            "--source",
            source,
            "--no-document",
            "crdep",
        ],
    )
    .run()
    .await;
    let installed = std::fs::read_dir(home.join("gems/gems"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    (out, installed)
}

struct App {
    dir: PathBuf,
    home: PathBuf,
}

impl App {
    fn new(at: PathBuf, source: &str) -> App {
        let dir = at.join("app");
        let home = at.join("home");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(
            dir.join("Gemfile"),
            format!("source \"{source}\"\ngem \"crdep\"\n"),
        )
        .unwrap();
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

/// Requests that mean bundler left the compact index.
fn fell_back(log: &[Logged]) -> bool {
    log.iter()
        .any(|l| l.path.starts_with("/api/v1/dependencies") || l.path.contains("specs.4.8"))
}

/// Waits until the proxy's `/info/crtiny` does (or does not) list `version`.
async fn wait_for_info(proxy: &Binary, version: &str, listed: bool) {
    for _ in 0..100 {
        let got = get_with(&proxy.url("/rubygems/info/crtiny"), &[]).await;
        let has = String::from_utf8_lossy(&got.body)
            .lines()
            .any(|l| l.starts_with(&format!("{version} ")));
        if has == listed {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "/info/crtiny never {} {version}",
        if listed { "listed" } else { "dropped" }
    );
}

/// The proxy's `/info/crtiny` is served with the MD5 ETag of its body, and
/// `/versions` lists that MD5 for crtiny on its last line: bundler's checks.
async fn assert_consistent(proxy: &Binary) {
    let info = get_with(&proxy.url("/rubygems/info/crtiny"), &[]).await;
    let md5 = md5_hex(&info.body);
    assert_eq!(info.header("etag"), Some(format!("\"{md5}\"").as_str()));
    let versions = get_with(&proxy.url("/rubygems/versions"), &[]).await;
    assert_eq!(
        versions.header("etag"),
        Some(format!("\"{}\"", md5_hex(&versions.body)).as_str())
    );
    let text = String::from_utf8(versions.body).unwrap();
    let last = text.lines().rfind(|l| l.starts_with("crtiny ")).unwrap();
    assert!(last.ends_with(&md5), "{last} vs {md5}\n{text}");
    // A range on the filtered body is a range of the filtered body.
    let ranged = get_with(&proxy.url("/rubygems/versions"), &[("range", "bytes=10-")]).await;
    assert_eq!(ranged.status, 206);
    assert_eq!(ranged.body, text.as_bytes()[10..]);
}

#[tokio::test]
async fn gem_and_bundler_see_only_what_the_policy_shows() {
    let world = World::start().await;
    let proxy = world.proxy().await;
    let source = proxy.url("/rubygems/");

    // At T0 the cache sees every release for the first time (the fixture's
    // lines have no created_at): none is old enough.
    let first = get_with(&proxy.url("/rubygems/info/crtiny"), &[]).await;
    assert_eq!(String::from_utf8_lossy(&first.body), "---\n");
    let (out, _) = gem_installs(&world, "gem-t0", &source).await;
    assert!(!out.ok(), "nothing is installable yet: {}", out.text());

    // Four days on, all of them are; crtiny 0.3.0 is published, an hour old.
    std::fs::write(&world.clock, T4).unwrap();
    wait_for_info(&proxy, "0.2.0", true).await;
    fixtures::gem_publish_dated(
        &world.repo,
        &world.extra.join("crtiny-0.3.0.gem"),
        PUBLISHED,
    )
    .await;
    let (out, installed) = gem_installs(&world, "gem-t4", &source).await;
    assert!(out.ok(), "{}", out.text());
    assert_eq!(installed, set(&["crdep-0.1.0", "crtiny-0.2.0"]));
    let app = App::new(world.dir("bundler"), &source);
    world.site.clear_log();
    let out = app.bundle(&["install", "--verbose"]).await;
    assert!(out.ok(), "{}", out.text());
    assert!(!out.text().contains("does not match"), "{}", out.text());
    assert_eq!(app.locked(), set(&["crdep-0.1.0", "crtiny-0.2.0"]));
    assert!(!fell_back(&world.site.log()), "{:#?}", world.site.log());
    assert_consistent(&proxy).await;

    // The young gem, asked for directly: 403 with the reason and the date.
    let direct = get_with(&proxy.url("/rubygems/gems/crtiny-0.3.0.gem"), &[]).await;
    let body = String::from_utf8_lossy(&direct.body).into_owned();
    assert_eq!(direct.status, 403, "{body}");
    assert!(body.contains("rubygems crtiny 0.3.0"), "{body}");
    assert!(
        body.contains("available from 2026-01-07T23:00:00Z"),
        "{body}"
    );

    // Past three days: bundler updates its compact-index cache (Range
    // requests on the views) and picks 0.3.0, its checksums passing.
    std::fs::write(&world.clock, T8).unwrap();
    wait_for_info(&proxy, "0.3.0", true).await;
    world.site.clear_log();
    let out = app.bundle(&["update", "--verbose"]).await;
    assert!(out.ok(), "{}", out.text());
    assert!(!out.text().contains("does not match"), "{}", out.text());
    assert_eq!(app.locked(), set(&["crdep-0.1.0", "crtiny-0.3.0"]));
    assert!(!fell_back(&world.site.log()), "{:#?}", world.site.log());
    assert_consistent(&proxy).await;
    let (out, installed) = gem_installs(&world, "gem-t8", &source).await;
    assert!(out.ok(), "{}", out.text());
    assert_eq!(installed, set(&["crdep-0.1.0", "crtiny-0.3.0"]));

    // Deny-listed: gone from /info and /versions, skipped by both, and the
    // cached .gem refused.
    assert_eq!(
        get_with(&proxy.url("/rubygems/gems/crtiny-0.3.0.gem"), &[])
            .await
            .cache(),
        "HIT"
    );
    std::fs::write(&world.deny, "rubygems crtiny 0.3.0\n").unwrap();
    wait_for_info(&proxy, "0.3.0", false).await;
    assert_consistent(&proxy).await;
    let versions = get_with(&proxy.url("/rubygems/versions"), &[]).await;
    assert!(!String::from_utf8_lossy(&versions.body).contains("0.3.0"));
    let (out, installed) = gem_installs(&world, "gem-denied", &source).await;
    assert!(out.ok(), "{}", out.text());
    assert_eq!(installed, set(&["crdep-0.1.0", "crtiny-0.2.0"]));
    let fresh = App::new(world.dir("bundler-denied"), &source);
    let out = fresh.bundle(&["install", "--verbose"]).await;
    assert!(out.ok(), "{}", out.text());
    assert_eq!(fresh.locked(), set(&["crdep-0.1.0", "crtiny-0.2.0"]));
    let cached = get_with(&proxy.url("/rubygems/gems/crtiny-0.3.0.gem"), &[]).await;
    assert_eq!(cached.status, 403);
    assert!(String::from_utf8_lossy(&cached.body).contains("deny list"));
    // The legacy index is served filtered (tests/policy_gem_legacy.rs);
    // the full Marshal index is not served under a policy.
    assert_eq!(
        get_with(&proxy.url("/rubygems/specs.4.8.gz"), &[])
            .await
            .status,
        200
    );
    assert_eq!(
        get_with(&proxy.url("/rubygems/Marshal.4.8.Z"), &[])
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn without_a_policy_compact_index_files_are_the_upstreams_bytes() {
    let world = World::start().await;
    let cache = world.tmp.path().join("plain");
    let mirror = format!("rubygems={}/", world.site.url());
    let proxy = Binary::start(&["--cache", cache.to_str().unwrap(), "--mirror", &mirror]).await;
    for file in ["versions", "info/crtiny", "info/crdep", "names"] {
        let got = get_with(&proxy.url(&format!("/rubygems/{file}")), &[]).await;
        let upstream = std::fs::read(world.repo.join(file)).unwrap();
        assert_eq!(got.body, upstream, "{file}");
        assert_eq!(
            got.header("etag"),
            Some(format!("\"{}\"", md5_hex(&upstream)).as_str())
        );
    }
}

/// crtiny's releases without a date in the fixture.
const UNDATED: &[&str] = &["0.1.0", "0.2.0", "1.0.0"];

/// A proxy on `world`'s repository with its own cache `name`, the test
/// clock, and `policy` flags.
async fn policed(world: &World, name: &str, policy: &[&str]) -> Binary {
    let cache = world.tmp.path().join(name);
    let mirror = format!("rubygems={}/", world.site.url());
    let mut args = vec![
        "--cache",
        cache.to_str().unwrap(),
        "--mirror",
        &mirror,
        "--index-ttl",
        "0",
        "--policy-clock-file",
        world.clock.to_str().unwrap(),
    ];
    args.extend_from_slice(policy);
    Binary::start(&args).await
}

#[tokio::test]
async fn first_seen_survives_a_restart_and_missing_dates_and_the_cutoff_follow_their_options() {
    let world = World::start().await;
    // crtiny 0.3.0 has a created_at; the others have no date.
    fixtures::gem_publish_dated(
        &world.repo,
        &world.extra.join("crtiny-0.3.0.gem"),
        PUBLISHED,
    )
    .await;

    // First seen at T0, under --min-age 3d: nothing shown (0.3.0 is "from the future").
    let first = policed(&world, "cache", &["--min-age", "3d"]).await;
    assert_eq!(
        info_versions(&first.url("/rubygems/info/crtiny")).await,
        set(&[])
    );
    first.signal(rustix::process::Signal::TERM);
    let mut first = first;
    let exited = tokio::time::timeout(Duration::from_secs(30), first.child.wait()).await;
    assert!(exited.is_ok(), "the proxy stops on SIGTERM");
    let record = std::fs::read_to_string(
        world
            .tmp
            .path()
            .join("cache/.package-cache/policy/first-seen"),
    )
    .expect("the first-seen record");
    assert!(record.contains("crtiny\t0.2.0"), "{record}");

    // Restarted at T4 on the same cache: first seen four days ago, so shown;
    // a cache that never saw them counts from now.
    std::fs::write(&world.clock, T4).unwrap();
    let restarted = policed(&world, "cache", &["--min-age", "3d"]).await;
    assert_eq!(
        info_versions(&restarted.url("/rubygems/info/crtiny")).await,
        set(UNDATED)
    );
    let fresh = policed(&world, "fresh", &["--min-age", "3d"]).await;
    assert_eq!(
        info_versions(&fresh.url("/rubygems/info/crtiny")).await,
        set(&[])
    );

    // A project exempted (no version): all of it shown, the young release too.
    let exempt = policed(
        &world,
        "exempt",
        &["--min-age", "3d", "--min-age-exempt", "rubygems=crtiny"],
    )
    .await;
    let mut all = set(UNDATED);
    all.insert("0.3.0".to_string());
    assert_eq!(
        info_versions(&exempt.url("/rubygems/info/crtiny")).await,
        all
    );

    // --min-age-missing allow: undated releases shown at once, the dated young one not.
    let allow = policed(
        &world,
        "allow",
        &["--min-age", "3d", "--min-age-missing", "allow"],
    )
    .await;
    assert_eq!(
        info_versions(&allow.url("/rubygems/info/crtiny")).await,
        set(UNDATED)
    );
    // --min-age-missing deny: undated releases never shown, their files refused.
    let deny = policed(
        &world,
        "deny",
        &["--min-age", "3d", "--min-age-missing", "deny"],
    )
    .await;
    assert_eq!(
        info_versions(&deny.url("/rubygems/info/crtiny")).await,
        set(&[])
    );
    let refused = get_with(&deny.url("/rubygems/gems/crtiny-0.2.0.gem"), &[]).await;
    let body = String::from_utf8_lossy(&refused.body).into_owned();
    assert_eq!(refused.status, 403, "{body}");
    assert!(body.contains("no publication date"), "{body}");

    // --min-age-before: nothing published after the cutoff, however old it gets.
    std::fs::write(&world.clock, T8).unwrap();
    let cutoff = policed(
        &world,
        "cutoff",
        &[
            "--min-age-before",
            "rubygems=2026-01-04T00:00:00Z",
            "--min-age-missing",
            "allow",
        ],
    )
    .await;
    assert_eq!(
        info_versions(&cutoff.url("/rubygems/info/crtiny")).await,
        set(UNDATED)
    );
    let source = cutoff.url("/rubygems/");
    let (out, installed) = gem_installs(&world, "gem-cutoff", &source).await;
    assert!(out.ok(), "{}", out.text());
    assert_eq!(installed, set(&["crdep-0.1.0", "crtiny-0.2.0"]));
    let after = get_with(&cutoff.url("/rubygems/gems/crtiny-0.3.0.gem"), &[]).await;
    let body = String::from_utf8_lossy(&after.body).into_owned();
    assert_eq!(after.status, 403, "{body}");
    assert!(
        body.contains("after the cutoff 2026-01-04T00:00:00Z"),
        "{body}"
    );
    let admin = cutoff.admin.expect("admin listener");
    let metrics = get_with(&format!("http://{admin}/metrics"), &[]).await;
    let metrics = String::from_utf8(metrics.body).unwrap();
    assert!(
        metrics.contains(
            "package_cache_policy_refusals_total{mount=\"rubygems\",rule=\"min-age-before\"} 1"
        ),
        "{metrics}"
    );
}
