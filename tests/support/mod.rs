#![allow(dead_code)]

pub mod api;
pub mod app;
pub mod build_world;
pub mod cargo_registry;
pub mod client;
pub mod cmd;
pub mod daemon;
pub mod fixtures;
pub mod goproxy;
pub mod haproxy;
pub mod npm;
pub mod origin;
pub mod pypi_world;
pub mod raw;
pub mod rgw;
pub mod site;
pub mod tls;

/// Whether the test runs as root; without root it is skipped (with `why`
/// printed), except under `CI`, which runs as root: there it fails.
pub fn needs_root(why: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI runs as root: this test must run there"
    );
    eprintln!("skipped: needs root {why}");
    false
}

/// The `verified` digests the cache at `cache` records beside the entry whose key ends with
/// `suffix`, once it is committed (a fill commits a moment after its last byte is sent);
/// panics naming `suffix` if it never is.
pub async fn verified_digests(cache: &std::path::Path, suffix: &str) -> Vec<String> {
    let mut meta = None;
    for _ in 0..100 {
        meta = entry_meta(cache, suffix);
        if meta.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let meta = meta.unwrap_or_else(|| panic!("{suffix} is cached"));
    meta["verified"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The metadata the cache at `cache` records beside the committed body whose key ends with
/// `suffix` (read from its metadata files, JSON each), or `None`.
pub fn entry_meta(cache: &std::path::Path, suffix: &str) -> Option<serde_json::Value> {
    fn walk(dir: &std::path::Path, suffix: &str) -> Option<serde_json::Value> {
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if let Some(found) = walk(&path, suffix) {
                    return Some(found);
                }
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let Ok(meta) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            if meta["key"].as_str().is_some_and(|k| k.ends_with(suffix)) {
                return Some(meta);
            }
        }
        None
    }
    walk(
        &cache.join(package_cache::store::STATE_DIR).join("meta"),
        suffix,
    )
}
