//! Damage at rest, against the real binary and curl: a body changed on disk
//! after its commit (a flipped byte, truncated, extended, replaced) is never
//! served as a good file. A read that meets a damaged block ends the
//! response uncleanly (curl reports a partial transfer); a body whose length
//! or inode no longer matches its metadata is found when opened and fetched
//! again at once. Either way the entry is quarantined, counted in /metrics,
//! and the next request gets the right bytes from the origin. Also: the
//! background scrub finds damage nobody asks for, `verify` names every
//! damaged entry and exits 1, and a package-cache 0.2 directory is adopted
//! (served, then a truncated file in it is damage).

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;
use support::app::{committed, Binary};
use support::client::{bytes_of, curl, get, sha256};
use support::cmd::Cmd;
use support::origin::Origin;

/// Four full 256 KiB blocks and a partial one.
const LEN: usize = 4 * 256 * 1024 + 3000;
const BLOCK: u64 = 256 * 1024;

fn body(i: usize) -> bytes::Bytes {
    bytes_of(LEN + i, 40 + i as u64)
}

struct Cache {
    origin: Origin,
    server: Binary,
    dir: tempfile::TempDir,
}

impl Cache {
    /// A server (with `extra` arguments) over a fresh cache, the origin
    /// serving `/distfiles/f{i}.tgz` for `i` in `0..files`, every one
    /// fetched once and committed.
    async fn filled(files: usize, extra: &[&str]) -> Cache {
        let mut builder = Origin::builder();
        for i in 0..files {
            builder = builder.file(&path(i), body(i));
        }
        let origin = builder.start().await;
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let url = origin.url();
        let mut args = vec!["--source", &url, "--cache", cache.to_str().unwrap()];
        args.extend_from_slice(extra);
        let server = Binary::start(&args).await;
        let cache = Cache {
            origin,
            server,
            dir,
        };
        for i in 0..files {
            let got = get(&cache.server.url(&path(i))).await;
            assert_eq!((got.status.as_u16(), got.cache()), (200, "MISS"));
            committed(&cache.file(i)).await;
        }
        cache
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn file(&self, i: usize) -> PathBuf {
        self.root().join(&path(i)[1..])
    }

    /// `curl -sS [-r RANGE] URL`: (exit code, body).
    async fn curl(&self, i: usize, range: Option<&str>) -> (i32, Vec<u8>) {
        let url = self.server.url(&path(i));
        let mut args = vec!["-sS", "--max-time", "20"];
        if let Some(range) = range {
            args.extend(["-r", range]);
        }
        args.push(&url);
        let (code, out, _) = curl(&args).await;
        (code, out)
    }

    /// The next GET misses, fetches the right bytes again, and stores them.
    async fn refetched(&self, i: usize, upstream_hits: usize) {
        let got = get(&self.server.url(&path(i))).await;
        assert_eq!((got.status.as_u16(), got.cache()), (200, "MISS"), "f{i}");
        assert_eq!(sha256(&got.body), sha256(&body(i)), "f{i}: the right bytes");
        assert_eq!(self.origin.hits(&path(i)), upstream_hits, "f{i}");
        committed(&self.file(i)).await;
        let got = get(&self.server.url(&path(i))).await;
        assert_eq!(got.cache(), "HIT");
        assert_eq!(sha256(&got.body), sha256(&body(i)));
    }

    fn quarantined(&self) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(self.root().join(".package-cache/quarantine"))
                .map(|rd| {
                    rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                        .filter(|n| !n.ends_with(".meta"))
                        .collect()
                })
                .unwrap_or_default();
        names.sort();
        names
    }

    async fn metric(&self, name: &str) -> u64 {
        let admin = self.server.admin.expect("admin on");
        let got = get(&format!("http://{admin}/metrics")).await;
        let text = String::from_utf8(got.body).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in {text}"))
            .trim()
            .parse()
            .unwrap()
    }
}

fn path(i: usize) -> String {
    format!("/distfiles/f{i}.tgz")
}

/// Writes `bytes` at `at` in place (same inode, same length).
fn overwrite(file: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

fn flip(file: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).open(file).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    overwrite(file, at, &[b[0] ^ 0x01]);
}

#[tokio::test]
async fn a_flipped_byte_ends_the_response_uncleanly_and_the_next_request_refetches() {
    let cache = Cache::filled(3, &["--scrub-rate", "0"]).await;
    // f0: whole GET; f1: a range over the damaged block; f2: a range elsewhere.
    for i in 0..3 {
        flip(&cache.file(i), 2 * BLOCK + 77);
    }
    let (code, out) = cache.curl(0, None).await;
    assert_ne!(code, 0, "curl sees an incomplete body");
    assert!(out.len() < LEN, "{} bytes", out.len());
    assert_eq!(out[..], body(0)[..out.len()], "nothing wrong was sent");
    assert_eq!(cache.quarantined(), ["distfiles%2Ff0.tgz"]);
    cache.refetched(0, 2).await;

    let range = format!("{}-{}", 2 * BLOCK + 10, 2 * BLOCK + 100);
    let (code, out) = cache.curl(1, Some(&range)).await;
    assert_ne!(code, 0, "a range inside the damaged block fails");
    assert!(out.is_empty(), "{} bytes", out.len());
    cache.refetched(1, 2).await;

    // A range that does not touch the damaged block is proved and served.
    let (code, out) = cache.curl(2, Some("0-99999")).await;
    assert_eq!(code, 0);
    assert_eq!(out[..], body(2)[..100_000]);
    let (code, out) = cache.curl(2, Some(&format!("{}-", 3 * BLOCK))).await;
    assert_eq!(code, 0);
    assert_eq!(out[..], body(2)[3 * BLOCK as usize..]);
    assert_eq!(cache.origin.hits(&path(2)), 1, "still the cached copy");
    let (code, _) = cache.curl(2, None).await;
    assert_ne!(code, 0);
    cache.refetched(2, 2).await;

    assert_eq!(cache.metric("package_cache_damaged_entries_total").await, 3);
    let log = cache.server.log_lines().join("\n");
    assert!(log.contains("damaged entry quarantined"), "{log}");
}

#[tokio::test]
async fn truncated_extended_and_replaced_bodies_are_never_served() {
    let cache = Cache::filled(4, &["--scrub-rate", "0"]).await;
    // Truncated to a block boundary (every block left would check out).
    std::fs::OpenOptions::new()
        .write(true)
        .open(cache.file(0))
        .and_then(|f| f.set_len(2 * BLOCK))
        .unwrap();
    // Extended.
    std::fs::OpenOptions::new()
        .append(true)
        .open(cache.file(1))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"trailing junk"))
        .unwrap();
    // Replaced through a rename (another inode), same length.
    let other = cache.file(2).with_extension("new");
    std::fs::write(&other, bytes_of(LEN + 2, 999)).unwrap();
    std::fs::rename(&other, cache.file(2)).unwrap();
    // Overwritten in place: the same inode and length, other bytes.
    overwrite(&cache.file(3), 0, &bytes_of(LEN + 3, 998));

    for i in 0..4 {
        let (code, out) = cache.curl(i, None).await;
        if code == 0 {
            // Found when opened: fetched again at once, never a wrong body.
            assert_eq!(sha256(&out), sha256(&body(i)), "f{i}");
            assert_eq!(cache.origin.hits(&path(i)), 2, "f{i}");
        } else {
            // Found while reading: the response ended uncleanly.
            assert!(
                out.len() < LEN + i && out[..] == body(i)[..out.len()],
                "f{i}"
            );
            cache.refetched(i, 2).await;
        }
    }
    assert_eq!(
        cache.quarantined(),
        (0..4)
            .map(|i| format!("distfiles%2Ff{i}.tgz"))
            .collect::<Vec<_>>()
    );
    assert_eq!(cache.metric("package_cache_damaged_entries_total").await, 4);
    for i in 0..4 {
        committed(&cache.file(i)).await;
        let got = get(&cache.server.url(&path(i))).await;
        assert_eq!((got.cache(), sha256(&got.body)), ("HIT", sha256(&body(i))));
    }
}

#[tokio::test]
async fn the_scrub_finds_damage_nobody_asked_for() {
    let cache = Cache::filled(3, &["--scrub-rate", "1G"]).await;
    flip(&cache.file(1), LEN as u64 - 5);
    for _ in 0..300 {
        if !cache.quarantined().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cache.quarantined(), ["distfiles%2Ff1.tgz"], "within 30 s");
    assert!(!cache.file(1).exists());
    assert_eq!(
        cache.metric("package_cache_scrub_damage_found_total").await,
        1
    );
    assert_eq!(cache.metric("package_cache_damaged_entries_total").await, 1);
    assert!(cache.metric("package_cache_scrubbed_bytes_total").await >= LEN as u64);
    assert_eq!(cache.origin.hits(&path(1)), 1, "nobody asked yet");
    cache.refetched(1, 2).await;
    assert!(cache.file(0).exists() && cache.file(2).exists());
}

async fn verify(root: &Path) -> support::cmd::Output {
    Cmd::new(env!("CARGO_BIN_EXE_package-cache"))
        .args(["verify", "--cache", root.to_str().unwrap()])
        .env_remove_prefixed("PC_")
        .limit(Duration::from_secs(60))
        .run()
        .await
}

#[tokio::test]
async fn verify_names_every_damaged_entry_quarantines_it_and_exits_1() {
    let cache = Cache::filled(6, &["--scrub-rate", "0"]).await;
    let out = verify(&cache.root()).await;
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(out.stdout.contains("6 entries verified"), "{}", out.stdout);

    flip(&cache.file(0), 12345);
    std::fs::OpenOptions::new()
        .write(true)
        .open(cache.file(1))
        .and_then(|f| f.set_len(1000))
        .unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(cache.file(2))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"+"))
        .unwrap();
    let other = cache.file(3).with_extension("new");
    std::fs::write(&other, b"someone else's file").unwrap();
    std::fs::rename(&other, cache.file(3)).unwrap();
    overwrite(&cache.file(4), BLOCK, &bytes_of(100, 5));

    let out = verify(&cache.root()).await;
    assert_eq!(out.code, 1, "{}", out.text());
    for i in 0..5 {
        let named = out
            .stdout
            .lines()
            .any(|l| l.contains(&format!("{}: ", path(i))) && l.contains("quarantined as"));
        assert!(named, "f{i} named: {}", out.stdout);
    }
    assert!(!out.stdout.contains(&path(5)), "{}", out.stdout);
    assert_eq!(cache.quarantined().len(), 5);
    let out = verify(&cache.root()).await;
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(out.stdout.contains("1 entries verified"), "{}", out.stdout);
    for i in 0..5 {
        cache.refetched(i, 2).await;
    }
}

#[tokio::test]
async fn a_0_2_directory_is_adopted_served_and_then_knows_damage() {
    let origin = Origin::builder()
        .file("/distfiles/old.tgz", body(0))
        .file("/distfiles/kept.tgz", body(1))
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    std::fs::create_dir_all(root.join("distfiles")).unwrap();
    // What package-cache 0.2 left: plain files, no state directory.
    std::fs::write(root.join("distfiles/old.tgz"), body(0)).unwrap();
    std::fs::write(root.join("distfiles/kept.tgz"), body(1)).unwrap();
    let out = verify(&root).await;
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(out.stdout.contains("2 unverifiable"), "{}", out.stdout);

    let url = origin.url();
    let args = [
        "--source",
        &url,
        "--cache",
        root.to_str().unwrap(),
        "--scrub-rate",
        "0",
    ];
    let server = Binary::start(&args).await;
    let marker = root.join(".package-cache/adopted");
    for _ in 0..200 {
        if marker.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(marker.exists(), "adopted within 10 s");
    for (name, i) in [("old", 0), ("kept", 1)] {
        let got = get(&server.url(&format!("/distfiles/{name}.tgz"))).await;
        assert_eq!(got.cache(), "HIT", "{name}");
        assert_eq!(sha256(&got.body), sha256(&body(i)));
        assert!(got.header("last-modified").is_some());
        assert_eq!(got.header("etag"), None, "no invented ETag");
    }
    assert_eq!(origin.total_hits(), 0);

    // Truncated after adoption: damage, not a plain file.
    std::fs::OpenOptions::new()
        .write(true)
        .open(root.join("distfiles/old.tgz"))
        .and_then(|f| f.set_len(100))
        .unwrap();
    let (code, out, _) = curl(&["-sS", &server.url("/distfiles/old.tgz")]).await;
    assert_eq!(code, 0);
    assert_eq!(sha256(&out), sha256(&body(0)), "fetched again");
    assert_eq!(origin.hits("/distfiles/old.tgz"), 1);
    // The refetch commits a moment after its last byte went out; verify
    // below counts committed entries.
    assert!(
        server.logged_within(&["entry committed", "old.tgz"]).await,
        "{:?}",
        server.log_lines()
    );
    // A file dropped in after adoption has no metadata: damage too.
    std::fs::write(root.join("distfiles/late.tgz"), b"not fetched").unwrap();
    let got = get(&server.url("/distfiles/late.tgz")).await;
    assert_eq!(got.status, 404, "quarantined, then not found upstream");
    assert!(!root.join("distfiles/late.tgz").exists());
    let out = verify(&root).await;
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(out.stdout.contains("2 entries verified"), "{}", out.stdout);
}
