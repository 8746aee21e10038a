//! The maintenance subcommands (`stats`, `verify`, `gc`, `purge`) of the real
//! binary, run on a cache that the real server filled from a test origin and
//! keeps serving from meanwhile.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use support::app::{committed, tmp_files, Binary};
use support::client::{bytes_of, get, sha256};
use support::cmd::{Cmd, Output};
use support::origin::{Origin, Reply};

/// Bodies above the server's 64 KiB small-entry size, so that no hit is
/// served from its memory after the disk changed.
const LEN: usize = 70 * 1024;

struct Cache {
    origin: Origin,
    server: Binary,
    dir: tempfile::TempDir,
}

impl Cache {
    /// A server over a fresh cache with the origin as `--source` and as the
    /// generic mount `files`, and every path in `paths` fetched through it.
    async fn filled(paths: &[&str]) -> Cache {
        let mut builder = Origin::builder();
        for (i, path) in paths.iter().enumerate() {
            let upstream = path.strip_prefix("/files").unwrap_or(path);
            builder = builder.file(upstream, bytes_of(LEN + i, i as u64));
        }
        let origin = builder
            .route("/slow", Reply::file(bytes_of(LEN, 99)).stall_after(1000))
            .start()
            .await;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap().to_string();
        let url = origin.url();
        let server = Binary::start(&[
            "--source",
            &url,
            "--mirror",
            &format!("files={url}"),
            "--profile",
            "files=generic",
            "--cache",
            &root,
            // This file damages entries itself and lets `verify` find them.
            "--scrub-rate",
            "0",
        ])
        .await;
        let cache = Cache {
            origin,
            server,
            dir,
        };
        for path in paths {
            let got = get(&cache.server.url(path)).await;
            assert_eq!(got.status, 200, "{path}");
            committed(&cache.body(path)).await;
        }
        cache
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Where the body for a request path is stored.
    fn body(&self, path: &str) -> PathBuf {
        match path.strip_prefix("/files/") {
            Some(rest) => self.root().join(".package-cache-mounts/files").join(rest),
            None => self.root().join(&path[1..]),
        }
    }

    /// The bytes the origin serves for request path number `i` of `filled`.
    fn expected(i: usize) -> bytes::Bytes {
        bytes_of(LEN + i, i as u64)
    }

    /// Runs `package-cache ARGS --cache ROOT`.
    async fn run(&self, args: &[&str]) -> Output {
        maintain(args, self.root()).await
    }

    fn meta_files(&self) -> usize {
        count_files(&self.root().join(".package-cache/meta"))
    }
}

async fn maintain(args: &[&str], root: &Path) -> Output {
    Cmd::new(env!("CARGO_BIN_EXE_package-cache"))
        .args(args)
        .args([Path::new("--cache"), root])
        .env_remove_prefixed("PC_")
        .limit(Duration::from_secs(60))
        .run()
        .await
}

fn count_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// The metadata file of a mirrors entry.
fn meta_path(root: &Path, rel: &str) -> PathBuf {
    let digest = sha256(format!("mirrors\n{rel}").as_bytes());
    root.join(".package-cache/meta")
        .join(&digest[..2])
        .join(digest)
}

fn age(path: &Path) {
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::open(path)
        .unwrap()
        .set_modified(an_hour_ago)
        .unwrap();
}

fn plain_02_file(root: &Path) -> PathBuf {
    let path = root.join("old/plain-0.2.tgz");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"fetched by package-cache 0.2").unwrap();
    path
}

#[tokio::test]
async fn stats_count_what_was_fetched() {
    let paths = ["/distfiles/a.tgz", "/distfiles/b/c.tgz", "/files/pkg/z.whl"];
    let cache = Cache::filled(&paths).await;
    let plain = plain_02_file(cache.root());

    let out = cache.run(&["stats", "--json"]).await;
    assert!(out.ok(), "{}", out.text());
    let stats: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let plain_len = std::fs::metadata(&plain).unwrap().len();
    let mirrors = &stats["namespaces"][0];
    assert_eq!(mirrors["kind"], "mirrors");
    assert_eq!(mirrors["entries"]["files"], 3);
    assert_eq!(
        mirrors["entries"]["bytes"],
        (2 * LEN + 1) as u64 + plain_len
    );
    assert_eq!(mirrors["without_metadata"]["files"], 1);
    let mount = &stats["namespaces"][1];
    assert_eq!(
        (&mount["kind"], &mount["name"]),
        (&"mount".into(), &"files".into())
    );
    assert_eq!(mount["entries"]["files"], 1);
    assert_eq!(mount["entries"]["bytes"], (LEN + 2) as u64);
    assert_eq!(stats["entries"]["files"], 4);
    assert_eq!(stats["without_metadata"]["files"], 1);
    assert_eq!(stats["temporary"]["files"], 0);
    assert_eq!(stats["metadata_without_body"]["files"], 0);
    assert_eq!(stats["documents"]["files"], 0);

    // The table, and `--cache` before the subcommand.
    let out = Cmd::new(env!("CARGO_BIN_EXE_package-cache"))
        .args([Path::new("--cache"), cache.root(), Path::new("stats")])
        .env_remove_prefixed("PC_")
        .ok()
        .await;
    let last = out.stdout.lines().last().unwrap();
    assert!(
        last.starts_with("stats: 4 entries") && last.contains("1 without metadata"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.is_empty(),
        "no progress bar off a terminal: {}",
        out.stderr
    );
}

#[tokio::test]
async fn verify_quarantines_a_corrupted_entry_and_the_server_refetches_it() {
    let paths = [
        "/distfiles/good.tgz",
        "/distfiles/bad.tgz",
        "/files/pkg/z.whl",
    ];
    let cache = Cache::filled(&paths).await;

    let out = cache.run(&["verify"]).await;
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(
        out.stdout.contains("3 entries verified") && out.stdout.contains("0 unverifiable"),
        "{}",
        out.stdout
    );

    // Same size, one byte flipped, same inode: the metadata still binds it.
    let bad = cache.body("/distfiles/bad.tgz");
    let mut bytes = std::fs::read(&bad).unwrap();
    bytes[LEN / 2] ^= 0x55;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&bad)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
        .unwrap();

    let out = cache.run(&["verify"]).await;
    assert_eq!(out.code, 1, "{}", out.text());
    let mismatches: Vec<_> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("MISMATCH"))
        .collect();
    assert_eq!(mismatches.len(), 1, "{}", out.stdout);
    assert!(mismatches[0].starts_with("MISMATCH /distfiles/bad.tgz:"));
    assert!(
        out.stdout.contains("2 entries verified (") && out.stdout.contains("1 mismatched"),
        "{}",
        out.stdout
    );
    let quarantine = cache.root().join(".package-cache/quarantine");
    let mut names: Vec<_> = std::fs::read_dir(&quarantine)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["distfiles%2Fbad.tgz", "distfiles%2Fbad.tgz.meta"]);
    assert_eq!(std::fs::read(quarantine.join(&names[0])).unwrap(), bytes);
    assert!(!bad.exists());
    assert!(!meta_path(cache.root(), "distfiles/bad.tgz").exists());

    // The server misses, refetches the right bytes, and stores them again.
    let got = get(&cache.server.url("/distfiles/bad.tgz")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.cache(), "MISS");
    assert_eq!(got.body, Cache::expected(1));
    assert_eq!(cache.origin.hits("/distfiles/bad.tgz"), 2);
    let got = get(&cache.server.url("/distfiles/good.tgz")).await;
    assert_eq!(got.cache(), "HIT");
    assert_eq!(cache.origin.hits("/distfiles/good.tgz"), 1);
    committed(&bad).await;
    let out = cache.run(&["verify"]).await;
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(out.stdout.contains("3 entries verified"), "{}", out.stdout);
}

#[tokio::test]
async fn purge_removes_exactly_the_matching_entries() {
    let paths = [
        "/distfiles/foo-1.tgz",
        "/distfiles/foo-2.tgz",
        "/distfiles/bar-1.tgz",
        "/distfiles/sub/foo-3.tgz",
        "/files/pkg/z.whl",
    ];
    let cache = Cache::filled(&paths).await;
    assert_eq!(cache.meta_files(), 5);

    let out = cache.run(&["purge", "--dry-run", "/distfiles/foo-*"]).await;
    assert!(out.ok(), "{}", out.text());
    assert_eq!(
        out.stdout.matches("would remove /distfiles/foo-").count(),
        2
    );
    assert!(cache.body("/distfiles/foo-1.tgz").exists());
    assert_eq!(cache.meta_files(), 5);

    let out = cache.run(&["purge", "/distfiles/foo-*"]).await;
    assert!(out.ok(), "{}", out.text());
    let mut removed: Vec<_> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("removed "))
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    removed.sort();
    assert_eq!(removed, ["/distfiles/foo-1.tgz", "/distfiles/foo-2.tgz"]);
    assert!(out
        .stdout
        .lines()
        .last()
        .unwrap()
        .starts_with("purge: removed 2 entries"));
    for (path, kept) in [
        ("/distfiles/foo-1.tgz", false),
        ("/distfiles/foo-2.tgz", false),
        ("/distfiles/bar-1.tgz", true),
        ("/distfiles/sub/foo-3.tgz", true),
        ("/files/pkg/z.whl", true),
    ] {
        assert_eq!(cache.body(path).exists(), kept, "{path}");
    }
    assert_eq!(cache.meta_files(), 3);

    let out = cache.run(&["purge", "/files/**"]).await;
    assert!(out.ok(), "{}", out.text());
    assert!(!cache.body("/files/pkg/z.whl").exists());
    assert_eq!(cache.meta_files(), 2);

    // The server refetches what was purged and still hits the rest.
    let got = get(&cache.server.url("/distfiles/foo-1.tgz")).await;
    assert_eq!((got.status.as_u16(), got.cache()), (200, "MISS"));
    assert_eq!(got.body, Cache::expected(0));
    assert_eq!(cache.origin.hits("/distfiles/foo-1.tgz"), 2);
    let got = get(&cache.server.url("/files/pkg/z.whl")).await;
    assert_eq!(got.cache(), "MISS");
    assert_eq!(got.body, Cache::expected(4));
    let got = get(&cache.server.url("/distfiles/bar-1.tgz")).await;
    assert_eq!(got.cache(), "HIT");
    assert_eq!(cache.origin.hits("/distfiles/bar-1.tgz"), 1);

    let out = cache.run(&["purge", "/a/["]).await;
    assert_eq!(out.code, 2, "{}", out.text());
}

#[tokio::test]
async fn gc_removes_orphans_and_empty_directories_but_not_live_fills_or_plain_files() {
    let paths = ["/distfiles/kept.tgz", "/distfiles/gone.tgz"];
    let cache = Cache::filled(&paths).await;
    let root = cache.root().to_path_buf();
    let plain = plain_02_file(&root);

    // A fill in progress: the origin stalls after 1000 bytes.
    let slow_url = cache.server.url("/slow");
    let slow = tokio::spawn(async move { get(&slow_url).await });
    for _ in 0..500 {
        if !tmp_files(&root).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(tmp_files(&root).len(), 1, "the fill has its temporary file");

    // An operator removed a body: its metadata is orphaned (and old enough).
    std::fs::remove_file(cache.body("/distfiles/gone.tgz")).unwrap();
    let orphan = meta_path(&root, "distfiles/gone.tgz");
    age(&orphan);
    let damaged = root.join(".package-cache/meta/00/damaged");
    std::fs::create_dir_all(damaged.parent().unwrap()).unwrap();
    std::fs::write(&damaged, b"{\"key\": ").unwrap();
    let truncated_doc = root.join(".package-cache/docs/ab/truncated");
    std::fs::create_dir_all(truncated_doc.parent().unwrap()).unwrap();
    std::fs::write(&truncated_doc, [0, 0]).unwrap();
    let empty = root.join("distfiles/empty/deeper");
    std::fs::create_dir_all(&empty).unwrap();
    age(&empty);
    age(empty.parent().unwrap());
    let fresh = root.join("distfiles/fresh");
    std::fs::create_dir_all(&fresh).unwrap();

    let out = cache.run(&["gc", "--dry-run"]).await;
    assert!(out.ok(), "{}", out.text());
    assert!(
        out.stdout.contains("would remove metadata without body"),
        "{}",
        out.stdout
    );
    assert!(orphan.exists() && damaged.exists() && empty.exists());

    let out = cache.run(&["gc"]).await;
    assert!(out.ok(), "{}", out.text());
    let summary = out.stdout.lines().last().unwrap();
    assert!(
        summary.starts_with(
            "gc: removed 2 metadata files, 1 documents, 2 empty directories, 0 temporary files"
        ) && summary.contains("a server is running")
            && summary.contains(&format!(
                "package-cache process {}",
                cache.server.child.id().unwrap()
            )),
        "{}",
        out.stdout
    );
    assert!(!orphan.exists() && !damaged.exists() && !truncated_doc.exists());
    assert!(!root.join("distfiles/empty").exists());
    assert!(
        fresh.exists(),
        "a directory this recent may be a commit in progress"
    );
    assert!(plain.exists());
    assert_eq!(
        tmp_files(&root).len(),
        1,
        "a live server's fill is left alone"
    );
    assert!(meta_path(&root, "distfiles/kept.tgz").exists());
    let got = get(&cache.server.url("/distfiles/kept.tgz")).await;
    assert_eq!(got.cache(), "HIT");
    assert!(got.header("content-type").is_some());

    // Once the server is gone (killed: it cleans nothing up), its leftovers go too.
    let Cache {
        server,
        origin,
        dir,
    } = cache;
    server.kill9().await;
    slow.abort();
    let out = maintain(&["gc"], dir.path()).await;
    assert!(out.ok(), "{}", out.text());
    assert!(
        out.stdout
            .contains("removed temporary file .package-cache/tmp/"),
        "{}",
        out.stdout
    );
    assert!(tmp_files(dir.path()).is_empty());
    assert!(plain.exists());
    let out = maintain(&["stats", "--json"], dir.path()).await;
    let stats: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(stats["entries"]["files"], 2);
    assert_eq!(stats["without_metadata"]["files"], 1);
    drop(origin);
}
