//! Portage's distfile fetch, emulated with its exact default FETCHCOMMAND / RESUMECOMMAND
//! (real wget) and the logic of `lib/portage/package/ebuild/fetch.py` (mirror layout.conf,
//! `FILE.__download__`, resume above 350K, size + BLAKE2B + SHA512 from the Manifest),
//! against a local GLEP 75 mirror, directly and through package-cache.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;
use support::app::Binary;
use support::cmd::Cmd;
use support::fixtures;
use support::site::Site;
use tempfile::TempDir;

/// portage `cnf/make.globals`.
const FETCHCOMMAND: &str = r#"wget -t 3 -T 60 --passive-ftp -U "Portage (Gentoo, https://www.gentoo.org) distfile-fetch" -O "${DISTDIR}/${FILE}" "${URI}""#;
const RESUMECOMMAND: &str = r#"wget -c -t 3 -T 60 --passive-ftp -U "Portage (Gentoo, https://www.gentoo.org) distfile-fetch" -O "${DISTDIR}/${FILE}" "${URI}""#;
/// PORTAGE_FETCH_RESUME_MIN_SIZE="350K": smaller partial files are deleted, not resumed.
const RESUME_MIN: u64 = 350 * 1024;
const PORTAGE_UA: &str = "Portage (Gentoo, https://www.gentoo.org) distfile-fetch";
const BIG: &str = "bigpkg-2.0.tar.xz";
const SMALL: &str = "hello-1.0.tar.gz";

/// One `DIST` line of a Manifest.
struct Dist {
    size: u64,
    blake2b: String,
    sha512: String,
}

fn manifest_entry(manifest: &Path, file: &str) -> Dist {
    let text = std::fs::read_to_string(manifest).expect("Manifest");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(file))
        .unwrap_or_else(|| panic!("{file} in the Manifest"));
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!((f[0], f[3], f[5]), ("DIST", "BLAKE2B", "SHA512"), "{line}");
    Dist {
        size: f[2].parse().expect("size"),
        blake2b: f[4].to_string(),
        sha512: f[6].to_string(),
    }
}

/// A portage command template expanded for FILE and URI and split as shlex would.
fn command(template: &str, distdir: &Path, file: &str, uri: &str) -> Vec<String> {
    let expanded = template
        .replace("${DISTDIR}", distdir.to_str().expect("utf-8"))
        .replace("${FILE}", file)
        .replace("${URI}", uri);
    let (mut words, mut word, mut quoted) = (Vec::new(), String::new(), false);
    for c in expanded.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    words.push(word);
    words
}

async fn run_portage_command(template: &str, distdir: &Path, file: &str, uri: &str) -> i32 {
    let argv = command(template, distdir, file, uri);
    let out = Cmd::new(&argv[0])
        .args(&argv[1..])
        .limit(Duration::from_secs(120))
        .run()
        .await;
    if !out.ok() {
        eprintln!("{argv:?}: {}", out.text());
    }
    out.code
}

/// A digest by a coreutils tool (`b2sum` is BLAKE2B-512, `sha512sum`) of a file or of stdin text.
async fn digest(tool: &str, path: &Path) -> String {
    let out = Cmd::new(tool).args([path]).ok().await;
    out.stdout
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

async fn verified(path: &Path, dist: &Dist) -> bool {
    std::fs::metadata(path).map(|m| m.len()).ok() == Some(dist.size)
        && digest("b2sum", path).await == dist.blake2b
        && digest("sha512sum", path).await == dist.sha512
}

/// GLEP 75: the path of `file` under `distfiles/` by the first supported layout.conf entry.
async fn layout_path(layout: &str, file: &str) -> String {
    let structure = layout
        .split("[structure]")
        .nth(1)
        .map(|s| s.split("\n[").next().unwrap_or(""))
        .unwrap_or("");
    let mut entries: Vec<(u32, &str)> = structure
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.trim().parse().ok()?, v.trim()))
        })
        .collect();
    entries.sort();
    for (_, entry) in entries {
        let words: Vec<&str> = entry.split_whitespace().collect();
        match words.as_slice() {
            ["flat"] => return file.to_string(),
            ["filename-hash", "BLAKE2B", cutoffs] => {
                let script =
                    "import hashlib,sys; print(hashlib.blake2b(sys.argv[1].encode()).hexdigest())";
                let out = Cmd::new("python3").args(["-c", script, file]).ok().await;
                let mut hash = out.stdout.trim();
                let mut path = String::new();
                for bits in cutoffs.split(':') {
                    let n = bits.parse::<usize>().expect("cutoff") / 4;
                    path.push_str(&hash[..n]);
                    path.push('/');
                    hash = &hash[n..];
                }
                return path + file;
            }
            _ => continue,
        }
    }
    file.to_string()
}

/// Fetches `file` from `mirror` (a GENTOO_MIRRORS entry) into `distdir` as Portage does;
/// returns whether the result was verified and renamed into place.
async fn portage_fetch(mirror: &str, distdir: &Path, manifest: &Path, file: &str) -> bool {
    let dist = manifest_entry(manifest, file);
    std::fs::create_dir_all(distdir).expect("DISTDIR");
    let final_path = distdir.join(file);
    if verified(&final_path, &dist).await {
        return true;
    }
    let mirror = mirror.trim_end_matches('/');
    let host = url::Url::parse(mirror)
        .expect("mirror URL")
        .host_str()
        .unwrap_or("")
        .to_string();
    let layout_file = format!(".layout.conf.{host}");
    let layout_uri = format!("{mirror}/distfiles/layout.conf");
    let layout = if run_portage_command(FETCHCOMMAND, distdir, &layout_file, &layout_uri).await == 0
    {
        std::fs::read_to_string(distdir.join(&layout_file)).unwrap_or_default()
    } else {
        String::new()
    };
    let uri = format!("{mirror}/distfiles/{}", layout_path(&layout, file).await);
    let download = format!("{file}.__download__");
    let partial = distdir.join(&download);
    let template = match std::fs::metadata(&partial).map(|m| m.len()) {
        Ok(len) if len >= RESUME_MIN && len < dist.size => RESUMECOMMAND,
        Ok(_) => {
            std::fs::remove_file(&partial).expect("remove partial");
            FETCHCOMMAND
        }
        Err(_) => FETCHCOMMAND,
    };
    run_portage_command(template, distdir, &download, &uri).await;
    if verified(&partial, &dist).await {
        std::fs::rename(&partial, &final_path).expect("rename verified distfile");
        return true;
    }
    false
}

/// The shared mirror (read-only) served on 127.0.0.1, and a temp dir for DISTDIRs and the cache.
struct Mirror {
    tmp: TempDir,
    root: PathBuf,
    site: Site,
}

impl Mirror {
    async fn start() -> Mirror {
        let root = fixtures::gentoo().await.join("mirror");
        let site = Site::start(&root, "127.0.0.1").await;
        let tmp = tempfile::tempdir().expect("temp dir");
        Mirror { tmp, root, site }
    }

    fn manifest(&self) -> PathBuf {
        self.root.join("Manifest")
    }

    fn distdir(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    async fn proxy(&self, extra: &[&str]) -> Binary {
        let cache = self.tmp.path().join("cache");
        let mirror = format!("gentoo={}/", self.site.url());
        let mut args = vec![
            "--cache",
            cache.to_str().expect("utf-8"),
            "--mirror",
            &mirror,
        ];
        args.extend_from_slice(extra);
        Binary::start(&args).await
    }

    /// Leaves the first half of a verified copy of `file` as `DISTDIR/FILE.__download__`.
    fn half_download(&self, verified: &Path, distdir: &Path, file: &str) -> u64 {
        let bytes = std::fs::read(verified).expect("verified copy");
        let half = bytes.len() / 2;
        std::fs::create_dir_all(distdir).expect("DISTDIR");
        std::fs::write(distdir.join(format!("{file}.__download__")), &bytes[..half])
            .expect("partial");
        half as u64
    }
}

#[tokio::test]
async fn portage_fetches_and_resumes_directly_from_the_fixture_mirror() {
    let mirror = Mirror::start().await;
    let distdir = mirror.distdir("direct");
    for file in [SMALL, BIG] {
        assert!(
            portage_fetch(&mirror.site.url(), &distdir, &mirror.manifest(), file).await,
            "{file}"
        );
    }
    let log = mirror.site.log();
    assert!(
        log.iter().all(|l| l.ua() == PORTAGE_UA && l.status == 200),
        "{log:#?}"
    );
    assert!(log.iter().any(|l| l.path == "/distfiles/layout.conf"));
    let hashed = layout_path("[structure]\n0=filename-hash BLAKE2B 8\n", BIG).await;
    assert!(
        hashed.len() == BIG.len() + 3 && hashed.ends_with(BIG),
        "{hashed}"
    );
    assert_eq!(
        mirror
            .site
            .requests_for(&format!("/distfiles/{hashed}"))
            .len(),
        1
    );

    let resumed = mirror.distdir("resumed");
    let half = mirror.half_download(&distdir.join(BIG), &resumed, BIG);
    mirror.site.clear_log();
    assert!(portage_fetch(&mirror.site.url(), &resumed, &mirror.manifest(), BIG).await);
    let get = mirror.site.requests_for(&format!("/distfiles/{hashed}"));
    assert_eq!(
        get[0].range.as_deref(),
        Some(format!("bytes={half}-").as_str())
    );
    assert_eq!(get[0].status, 206);
}

#[tokio::test]
async fn portage_fetches_through_the_cache_resumes_and_refetches_offline() {
    let mirror = Mirror::start().await;
    let proxy = mirror.proxy(&["--index-ttl", "1"]).await;
    let via = proxy.url("/gentoo");
    let cold = mirror.distdir("cold");
    for file in [SMALL, BIG] {
        assert!(
            portage_fetch(&via, &cold, &mirror.manifest(), file).await,
            "{file}"
        );
    }
    let log = mirror.site.log();
    assert!(!log.is_empty());
    for l in &log {
        assert!(
            l.ua().starts_with("package-cache/"),
            "{} by {:?}",
            l.path,
            l.ua()
        );
    }

    // Resume a half download: Range served by the cache, the result verifies.
    let resumed = mirror.distdir("resumed");
    mirror.half_download(&cold.join(BIG), &resumed, BIG);
    assert!(
        portage_fetch(&via, &resumed, &mirror.manifest(), BIG).await,
        "resumed"
    );

    // Upstream down and layout.conf past its TTL: a fresh DISTDIR still fills and verifies.
    mirror.site.stop().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let offline = mirror.distdir("offline");
    for file in [SMALL, BIG] {
        assert!(
            portage_fetch(&via, &offline, &mirror.manifest(), file).await,
            "offline {file}"
        );
    }
    assert!(
        std::fs::metadata(offline.join(format!(".layout.conf.{}", proxy.addr.ip()))).is_ok(),
        "layout.conf came from the cache"
    );
}

#[tokio::test]
async fn a_resume_on_a_cold_cache_completes_and_verifies() {
    let mirror = Mirror::start().await;
    let proxy = mirror.proxy(&[]).await;
    let via = proxy.url("/gentoo");
    let src = fixtures::gentoo().await.join("src").join(BIG);
    let distdir = mirror.distdir("resume");
    mirror.half_download(&src, &distdir, BIG);
    assert!(portage_fetch(&via, &distdir, &mirror.manifest(), BIG).await);
    // wget -c on the complete file: "already fully retrieved" (416 or a full 200), exit 0.
    let uri = format!(
        "{via}/distfiles/{}",
        layout_path("[structure]\n0=filename-hash BLAKE2B 8\n", BIG).await
    );
    assert_eq!(
        run_portage_command(RESUMECOMMAND, &distdir, BIG, &uri).await,
        0
    );
    assert!(verified(&distdir.join(BIG), &manifest_entry(&mirror.manifest(), BIG)).await);
}
