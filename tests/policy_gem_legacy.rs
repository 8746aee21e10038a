//! RubyGems' legacy Marshal indexes under the supply-chain policy, read by
//! the real gem client (3.3): `gem list --remote` (and `gem search --remote`)
//! reads `latest_specs.4.8.gz`
//! and `--all` reads `specs.4.8.gz` (and `prerelease_specs.4.8.gz`), both
//! written by `gem generate_index` in the fixture. A release held back or
//! deny-listed is absent from them; `latest_specs` names the newest version
//! shown instead; `quick/Marshal.4.8/NAME-VERSION.gemspec.rz` of a held
//! release is refused with 403 as its `.gem` is. Without a policy the three
//! files are the upstream's bytes; a legacy index that is not Marshal is
//! answered 502 saying so.

mod support;

use std::path::Path;
use std::time::Duration;
use support::app::Binary;
use support::client::get_with;
use support::cmd::Cmd;
use support::fixtures;
use support::site::{ETags, Site};
use tempfile::TempDir;

const T0: &str = "2026-01-01T00:00:00Z";
/// Four days on: what was first seen at T0 is old enough for 3 days.
const T4: &str = "2026-01-05T00:00:00Z";
/// crtiny 0.3.0's created_at in the compact index: an hour before T4.
const PUBLISHED: &str = "2026-01-04T23:00:00Z";
/// Four days after T4, when the legacy index first saw crtiny 0.3.0.
const T8: &str = "2026-01-09T00:00:00Z";

const LEGACY: &[&str] = &[
    "specs.4.8.gz",
    "latest_specs.4.8.gz",
    "prerelease_specs.4.8.gz",
];

async fn repository(tmp: &TempDir) -> (std::path::PathBuf, std::path::PathBuf, Site) {
    let fixture = fixtures::rubygems().await;
    let repo = tmp.path().join("repo");
    fixtures::copy_tree(&fixture.join("repo"), &repo).await;
    let site = Site::start_with(&repo, "127.0.0.1", ETags::Md5).await;
    (repo, fixture.join("extra"), site)
}

/// `gem list --remote [--all] crtiny` against `source` from a fresh home
/// (no spec cache); the versions listed, as gem prints them.
async fn gem_list(tmp: &Path, source: &str, all: bool) -> String {
    gem_remote(tmp, source, "list", all).await
}

/// `gem COMMAND --remote [--all] crtiny`, as [`gem_list`].
async fn gem_remote(tmp: &Path, source: &str, command: &str, all: bool) -> String {
    let home = tempfile::tempdir_in(tmp).unwrap();
    let mut args = vec![command, "--remote", "--clear-sources", "--source", source];
    if all {
        args.push("--all");
    }
    args.push("crtiny");
    let out = Cmd::new("gem")
        .args(&args)
        .env_remove_prefixed("GEM_")
        .env_remove_prefixed("BUNDLE_")
        .env("HOME", home.path())
        .env("GEM_HOME", home.path().join("gems"))
        .env("GEM_SPEC_CACHE", home.path().join("specs"))
        .limit(Duration::from_secs(120))
        .run()
        .await;
    assert!(out.ok(), "{}", out.text());
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("crtiny "))
        .unwrap_or("")
        .to_string()
}

/// Waits until the policy in force (clock and lists, re-read on change)
/// shows (or not) crtiny `version` in `/info`, which judges as the legacy index does.
async fn wait_for(proxy: &Binary, version: &str, listed: bool) {
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
    panic!("/info/crtiny never changed for {version}");
}

#[tokio::test]
async fn gem_list_reads_the_legacy_index_as_the_policy_shows_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, extra, site) = repository(&tmp).await;
    let clock = tmp.path().join("clock");
    std::fs::write(&clock, T0).unwrap();
    let deny = tmp.path().join("deny.txt");
    std::fs::write(&deny, "").unwrap();
    let cache = tmp.path().join("cache");
    let mirror = format!("rubygems={}/", site.url());
    let proxy = Binary::start(&[
        "--cache",
        cache.to_str().unwrap(),
        "--mirror",
        &mirror,
        "--index-ttl",
        "0",
        "--min-age",
        "rubygems=3d",
        "--deny-list",
        deny.to_str().unwrap(),
        "--policy-clock-file",
        clock.to_str().unwrap(),
    ])
    .await;
    let source = proxy.url("/rubygems/");

    // At T0 every release is seen for the first time (the legacy index has
    // no dates): none is listed, by either index.
    site.clear_log();
    assert_eq!(gem_list(tmp.path(), &source, true).await, "");
    assert_eq!(gem_list(tmp.path(), &source, false).await, "");
    let paths: Vec<String> = site.log().into_iter().map(|l| l.path).collect();
    assert!(
        paths.iter().any(|p| p == "/specs.4.8.gz")
            && paths.iter().any(|p| p == "/latest_specs.4.8.gz"),
        "gem read the legacy index: {paths:?}"
    );

    // Four days on they are; crtiny 0.3.0 is published (the legacy index
    // regenerated): seen now, so held back, and its gemspec refused.
    std::fs::write(&clock, T4).unwrap();
    wait_for(&proxy, "0.2.0", true).await;
    fixtures::gem_publish_dated(&repo, &extra.join("crtiny-0.3.0.gem"), PUBLISHED).await;
    assert_eq!(
        gem_list(tmp.path(), &source, true).await,
        "(1.0.0, 0.2.0, 0.1.0)"
    );
    assert_eq!(gem_list(tmp.path(), &source, false).await, "(1.0.0)");
    let spec = |v: &str| {
        proxy.url(&format!(
            "/rubygems/quick/Marshal.4.8/crtiny-{v}.gemspec.rz"
        ))
    };
    let young = get_with(&spec("0.3.0"), &[]).await;
    let body = String::from_utf8_lossy(&young.body).into_owned();
    assert_eq!(young.status, 403, "{body}");
    assert!(body.contains("rubygems crtiny 0.3.0"), "{body}");
    let old = get_with(&spec("0.2.0"), &[]).await;
    assert_eq!(old.status, 200);

    // 1.0.0 deny-listed: latest_specs names the newest version shown, 0.2.0
    // (0.3.0 still held), and 1.0.0's gemspec is refused.
    std::fs::write(&deny, "rubygems crtiny 1.0.0\n").unwrap();
    wait_for(&proxy, "1.0.0", false).await;
    assert_eq!(gem_list(tmp.path(), &source, false).await, "(0.2.0)");
    assert_eq!(gem_list(tmp.path(), &source, true).await, "(0.2.0, 0.1.0)");
    assert_eq!(
        gem_remote(tmp.path(), &source, "search", false).await,
        "(0.2.0)"
    );
    let denied = get_with(&spec("1.0.0"), &[]).await;
    assert_eq!(denied.status, 403);
    assert!(String::from_utf8_lossy(&denied.body).contains("deny list"));

    // Past three days since the legacy index first saw 0.3.0: listed, the
    // latest, and its gemspec served as the upstream's bytes.
    std::fs::write(&clock, T8).unwrap();
    wait_for(&proxy, "0.3.0", true).await;
    assert_eq!(gem_list(tmp.path(), &source, false).await, "(0.3.0)");
    assert_eq!(
        gem_list(tmp.path(), &source, true).await,
        "(0.3.0, 0.2.0, 0.1.0)"
    );
    let grown = get_with(&spec("0.3.0"), &[]).await;
    assert_eq!(grown.status, 200);
    assert_eq!(
        grown.body,
        std::fs::read(repo.join("quick/Marshal.4.8/crtiny-0.3.0.gemspec.rz")).unwrap()
    );

    // An upstream legacy index that is not Marshal: 502 saying so, not a guess.
    std::fs::write(repo.join("prerelease_specs.4.8.gz"), b"not gzip at all").unwrap();
    let bad = get_with(&proxy.url("/rubygems/prerelease_specs.4.8.gz"), &[]).await;
    let body = String::from_utf8_lossy(&bad.body).into_owned();
    assert_eq!(bad.status, 502, "{body}");
    assert!(body.contains("not valid gzip"), "{body}");
    // The full Marshal index stays unserved under a policy.
    let full = get_with(&proxy.url("/rubygems/Marshal.4.8.Z"), &[]).await;
    assert_eq!(full.status, 404);
}

#[tokio::test]
async fn without_a_policy_the_legacy_index_is_the_upstreams_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, _, site) = repository(&tmp).await;
    let cache = tmp.path().join("plain");
    let mirror = format!("rubygems={}/", site.url());
    let proxy = Binary::start(&["--cache", cache.to_str().unwrap(), "--mirror", &mirror]).await;
    for file in LEGACY {
        let got = get_with(&proxy.url(&format!("/rubygems/{file}")), &[]).await;
        assert_eq!(got.status, 200, "{file}");
        assert_eq!(got.body, std::fs::read(repo.join(file)).unwrap(), "{file}");
    }
    let source = proxy.url("/rubygems/");
    assert_eq!(
        gem_list(tmp.path(), &source, true).await,
        "(1.0.0, 0.2.0, 0.1.0)"
    );
}
