//! A full disk degrades gracefully: on a tmpfs with a `size=` or `nr_inodes=`
//! limit, the fill that hits the limit is not stored but its clients still get
//! every byte (verified); hits keep working; nothing half-written is left; the
//! log says why. Needs root (mount).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::app::Binary;
use support::client::{bytes_of, get, sha256};
use support::origin::{Origin, Reply};

/// A tmpfs mounted for one test; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(options: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount -t tmpfs -o {options}");
        Tmpfs { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("cache")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Every body file under the cache root (outside the proxy's state) with its bytes.
fn stored_files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if path.file_name().unwrap() == ".package-cache" {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

#[tokio::test]
async fn out_of_space_streams_the_file_uncached_and_hits_keep_working() {
    if !support::needs_root("to mount a tmpfs") {
        return;
    }
    let fs = Tmpfs::mount("size=4m");
    let small = bytes_of(60_000, 1);
    let big = bytes_of(12 << 20, 2);
    let origin = Origin::builder()
        .file("/small.bin", small.clone())
        .route("/big.bin", Reply::file(big.clone()).throttle(24 << 20))
        .start()
        .await;
    let cache = fs.path();
    let app = Binary::start(&[
        "--source",
        &origin.url(),
        "--cache",
        cache.to_str().unwrap(),
    ])
    .await;
    let first = get(&app.url("/small.bin")).await;
    assert_eq!((first.status.as_u16(), first.cache()), (200, "MISS"));
    support::app::committed(&cache.join("small.bin")).await;

    // Two clients on the file that cannot fit: both get all of it.
    let url = app.url("/big.bin");
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    // Hits keep working while the disk is full.
    let hit = get(&app.url("/small.bin")).await;
    assert_eq!(
        (hit.status.as_u16(), hit.cache(), hit.body.clone()),
        (200, "HIT", small.to_vec())
    );
    for c in clients {
        let got = c.await.unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(got.error, None);
        assert_eq!(sha256(&got.body), sha256(&big), "every byte, in order");
    }
    assert_eq!(origin.hits("/big.bin"), 1, "one upstream fetch for both");
    assert!(!cache.join("big.bin").exists(), "not stored");
    assert!(
        support::app::tmp_files(&cache).is_empty(),
        "no temporary file left"
    );
    for (path, bytes) in stored_files(&cache) {
        assert_eq!(
            bytes,
            small.to_vec(),
            "only whole entries: {}",
            path.display()
        );
    }
    assert!(
        app.log_lines()
            .iter()
            .any(|l| l.contains("cannot take this file") && l.contains("No space left")),
        "the log says why"
    );
    // And afterwards.
    let again = get(&app.url("/small.bin")).await;
    assert_eq!(again.cache(), "HIT");
    app.kill9().await;
}

#[tokio::test]
async fn out_of_inodes_passes_files_through_uncached() {
    if !support::needs_root("to mount a tmpfs") {
        return;
    }
    let fs = Tmpfs::mount("size=64m,nr_inodes=24");
    let bodies: Vec<_> = (0..12)
        .map(|i| bytes_of(100_000 + i * 1000, 10 + i as u64))
        .collect();
    let mut builder = Origin::builder();
    for (i, body) in bodies.iter().enumerate() {
        builder = builder.file(&format!("/d{i}/f{i}.bin"), body.clone());
    }
    let origin = builder.start().await;
    let cache = fs.path();
    let app = Binary::start(&[
        "--source",
        &origin.url(),
        "--cache",
        cache.to_str().unwrap(),
    ])
    .await;
    for (i, body) in bodies.iter().enumerate() {
        let got = get(&app.url(&format!("/d{i}/f{i}.bin"))).await;
        assert_eq!(
            (got.status.as_u16(), got.error.clone()),
            (200, None),
            "file {i}"
        );
        assert_eq!(sha256(&got.body), sha256(body), "file {i}");
    }
    let stored = stored_files(&cache);
    assert!(
        stored.len() < bodies.len(),
        "the inode limit was reached: {}",
        stored.len()
    );
    assert!(!stored.is_empty());
    for (path, bytes) in &stored {
        assert!(
            bodies.iter().any(|b| b.to_vec() == *bytes),
            "whole entry: {}",
            path.display()
        );
        let rel = path.strip_prefix(&cache).unwrap();
        let hit = get(&app.url(&format!("/{}", rel.display()))).await;
        assert_eq!((hit.cache(), &hit.body), ("HIT", bytes));
    }
    assert!(support::app::tmp_files(&cache).is_empty());
    app.kill9().await;
}
