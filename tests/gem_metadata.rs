//! RubyGems compact-index lines that carry newer fields (`created_at`, before
//! or after the checksum) keep working through the real binary with real gem:
//! the `/info` documents pass through byte for byte, and every `.gem` is still
//! checked against the line's checksum — a wrong one is refused and not kept.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;
use support::app::Binary;
use support::client::get_with;
use support::cmd::Cmd;
use support::fixtures;
use support::site::{md5_hex, ETags, Site};

const CREATED_AT: &str = "created_at:2024-01-02T03:04:05.678Z";

/// A copy of the fixture gem source whose `/info` lines carry `created_at`
/// (last on even lines, first on odd ones), with `/versions` updated to the
/// new MD5s; `tamper` (a version of crtiny) gets a wrong checksum.
async fn source_with_created_at(dir: &Path, tamper: Option<&str>) -> PathBuf {
    let repo = dir.join("repo");
    fixtures::copy_tree(&fixtures::rubygems().await.join("repo"), &repo).await;
    let mut versions = std::fs::read_to_string(repo.join("versions")).unwrap();
    for entry in std::fs::read_dir(repo.join("info")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let old = std::fs::read_to_string(&path).unwrap();
        let mut new = String::new();
        for (i, line) in old.lines().enumerate() {
            let Some((head, reqs)) = line.rsplit_once('|') else {
                new.push_str(line);
                new.push('\n');
                continue;
            };
            let mut reqs = if i % 2 == 0 {
                format!("{reqs},{CREATED_AT}")
            } else {
                format!("{CREATED_AT},{reqs}")
            };
            if name == "crtiny" && tamper.is_some_and(|v| head.starts_with(&format!("{v} "))) {
                let (before, after) = reqs.split_once("checksum:").unwrap();
                reqs = format!("{before}checksum:{}{}", "0".repeat(64), &after[64..]);
            }
            new.push_str(&format!("{head}|{reqs}\n"));
        }
        std::fs::write(&path, &new).unwrap();
        versions = versions.replace(&md5_hex(old.as_bytes()), &md5_hex(new.as_bytes()));
    }
    std::fs::write(repo.join("versions"), versions).unwrap();
    repo
}

async fn gem_install(home: &Path, source: &str, gem: &[&str]) -> support::cmd::Output {
    Cmd::new("gem")
        .args([
            "install",
            "--clear-sources",
            "--source",
            source,
            "--no-document",
        ])
        .args(gem)
        .env_remove_prefixed("GEM_")
        .env_remove_prefixed("BUNDLE_")
        .env("HOME", home)
        .env("GEM_HOME", home.join("gems"))
        .limit(Duration::from_secs(180))
        .run()
        .await
}

async fn proxy_for(dir: &Path, site: &Site) -> Binary {
    let cache = dir.join("cache");
    let mirror = format!("rubygems={}/", site.url());
    Binary::start(&["--cache", cache.to_str().unwrap(), "--mirror", &mirror]).await
}

#[tokio::test]
async fn created_at_in_info_lines_keeps_the_checksum_check_working() {
    let dir = tempfile::tempdir().unwrap();
    let repo = source_with_created_at(dir.path(), None).await;
    let site = Site::start_with(&repo, "127.0.0.1", ETags::Md5).await;
    let proxy = proxy_for(dir.path(), &site).await;
    let home = dir.path().join("home");
    let out = gem_install(&home, &proxy.url("/rubygems/"), &["crdep"]).await;
    assert!(out.ok(), "{}", out.text());
    assert!(home.join("gems/gems/crtiny-0.2.0").is_dir());
    // The info document is passed on as the upstream wrote it.
    let info = get_with(&proxy.url("/rubygems/info/crtiny"), &[]).await;
    assert_eq!(info.body, std::fs::read(repo.join("info/crtiny")).unwrap());
    assert!(String::from_utf8_lossy(&info.body).contains(CREATED_AT));
    // Both gems were checked against their lines and committed.
    for gem in ["crdep-0.1.0.gem", "crtiny-0.2.0.gem"] {
        support::app::committed(
            &dir.path()
                .join("cache/.package-cache-mounts/rubygems/gems")
                .join(gem),
        )
        .await;
    }
    assert!(
        !proxy.log_lines().iter().any(|l| l.contains("digest")),
        "{:?}",
        proxy.log_lines()
    );
}

/// One gem, not `crdep` with its dependency: RubyGems 3.3 (Debian 12's gem)
/// downloads on a pool of threads, and when one download fails while
/// another is still in flight, gem prints the error and then, about one run
/// in three on a loaded machine, never exits (a pool thread stays blocked at
/// shutdown). That happens against any server that answers one `.gem` with
/// a 5xx, not only this cache, so the test asks for the refused gem alone.
#[tokio::test]
async fn a_wrong_checksum_beside_created_at_is_still_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = source_with_created_at(dir.path(), Some("0.2.0")).await;
    let site = Site::start_with(&repo, "127.0.0.1", ETags::Md5).await;
    let proxy = proxy_for(dir.path(), &site).await;
    let home = dir.path().join("home");
    let out = gem_install(&home, &proxy.url("/rubygems/"), &["crtiny", "-v", "0.2.0"]).await;
    assert!(!out.ok(), "{}", out.text());
    assert!(out.stderr.contains("502"), "{}", out.text());
    assert!(!home.join("gems/gems/crtiny-0.2.0").exists());
    let stored = dir
        .path()
        .join("cache/.package-cache-mounts/rubygems/gems/crtiny-0.2.0.gem");
    assert!(!stored.exists(), "not kept");
    assert!(
        proxy
            .log_lines()
            .iter()
            .any(|l| l.contains("does not match the digest its index lists")),
        "{:?}",
        proxy.log_lines()
    );
}
