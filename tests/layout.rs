//! The cache directory: 0711 directories and 0644 files, metadata that
//! survives restarts, package-cache 0.2 directories served as they are, and
//! files past 4 GiB.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use support::app::{committed, source, TestApp};
use support::client::{get, get_with, head};
use support::origin::Origin;

#[tokio::test]
async fn modes_let_local_clients_open_but_not_list_and_entries_survive_restart() {
    let origin = Origin::builder()
        .file("/distfiles/ab/foo-1.0.tar.gz", "foo")
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let app = TestApp::start_in(&cache, |c| source(c, &origin.url())).await;
    let first = get(&app.url("/distfiles/ab/foo-1.0.tar.gz")).await;
    let entry = cache.join("distfiles/ab/foo-1.0.tar.gz");
    committed(&entry).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&cache), 0o711);
    assert_eq!(mode(&cache.join("distfiles")), 0o711);
    assert_eq!(mode(&cache.join("distfiles/ab")), 0o711);
    assert_eq!(mode(&entry), 0o644);
    // Traversable for built artifacts (by exact name); its own parts are private.
    assert_eq!(mode(&cache.join(".package-cache")), 0o711);
    assert_eq!(
        mode(&cache.join(".package-cache/tmp")),
        0o700,
        "private state"
    );
    assert_eq!(
        mode(&cache.join(".package-cache/meta")),
        0o700,
        "private state"
    );
    app.stop().await;

    origin.stop().await;
    let app = TestApp::start_in(&cache, |c| source(c, &origin.url())).await;
    let hit = get(&app.url("/distfiles/ab/foo-1.0.tar.gz")).await;
    assert_eq!(
        (hit.status.as_u16(), hit.cache(), hit.body.as_slice()),
        (200, "HIT", &b"foo"[..])
    );
    assert_eq!(
        hit.header("etag"),
        first.header("etag"),
        "metadata survived the restart"
    );
    assert_eq!(hit.header("content-type"), first.header("content-type"));
    app.stop().await;
}

#[tokio::test]
async fn a_package_cache_0_2_directory_is_served_unmodified() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("old");
    std::fs::create_dir_all(cache.join("distfiles")).unwrap();
    let file = cache.join("distfiles/old-2.0.tar.gz");
    std::fs::write(&file, b"legacy bytes").unwrap();
    let before = std::fs::metadata(&file).unwrap();
    // No source at all: 0.2 with no --source was a static server.
    let app = TestApp::start_in(&cache, |c| c).await;
    let hit = get(&app.url("/distfiles/old-2.0.tar.gz")).await;
    assert_eq!(
        (hit.status.as_u16(), hit.cache(), hit.body.as_slice()),
        (200, "HIT", &b"legacy bytes"[..])
    );
    assert!(hit.header("last-modified").is_some());
    assert_eq!(hit.header("etag"), None, "no invented ETag");
    assert_eq!(get(&app.url("/distfiles/absent.tar.gz")).await.status, 404);
    app.stop().await;
    let after = std::fs::metadata(&file).unwrap();
    assert_eq!(
        (before.mtime(), before.ino(), before.len()),
        (after.mtime(), after.ino(), after.len())
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"legacy bytes");
}

#[tokio::test]
async fn ranges_past_4_gib_work() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let big = cache.join("big.iso");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(5 << 30).unwrap();
        f.write_all_at(b"MARK", (4 << 30) + 10).unwrap();
    }
    let app = TestApp::start_in(&cache, |c| c).await;
    let h = head(&app.url("/big.iso")).await;
    assert_eq!(h.header("content-length"), Some("5368709120"));
    let r = get_with(
        &app.url("/big.iso"),
        &[("range", "bytes=4294967306-4294967309")],
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some("bytes 4294967306-4294967309/5368709120")
    );
    assert_eq!(r.body, b"MARK");
    let r = get_with(&app.url("/big.iso"), &[("range", "bytes=-3")]).await;
    assert_eq!((r.status.as_u16(), r.body.len()), (206, 3));
    let r = get_with(&app.url("/big.iso"), &[("range", "bytes=5368709120-")]).await;
    assert_eq!(r.status, 416);
    app.stop().await;
}
