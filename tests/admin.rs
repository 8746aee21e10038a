//! The admin listener: `/healthz`, `/metrics` counting a known sequence of
//! requests, a fill in progress with its readers, upstream health by source,
//! the status page as headless Chromium renders it, and the separation from
//! the proxy port.

mod support;

use package_cache::config::{Config, ListenAddr};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use support::app::{committed, source, Binary, TestApp};
use support::client::{self, bytes_of, get, request};
use support::origin::{Origin, Reply};

/// Longest wait for a counter to settle: a request is counted when hyper
/// drops its body, which may be just after the client read the last byte.
const SETTLE: Duration = Duration::from_secs(5);

fn with_admin(config: Config) -> Config {
    let mut config = config;
    config.server.admin = Some(ListenAddr::loopback_any_port());
    config
}

/// One `/metrics` scrape: sample (`name{labels}`, exactly as exposed) → value.
#[derive(Debug, PartialEq)]
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    fn get(&self, sample: &str) -> f64 {
        *self
            .0
            .get(sample)
            .unwrap_or_else(|| panic!("no sample {sample} in {:#?}", self.0))
    }

    fn opt(&self, sample: &str) -> Option<f64> {
        self.0.get(sample).copied()
    }
}

/// Parses the OpenMetrics text strictly enough that a malformed line fails:
/// every sample belongs to a family declared by `# TYPE`, names and labels
/// have the exposition's syntax, values are numbers, and `# EOF` ends it.
fn parse_exposition(text: &str) -> Scrape {
    let mut families = Vec::new();
    let mut samples = BTreeMap::new();
    let mut lines = text.lines().peekable();
    let name_ok = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    while let Some(line) = lines.next() {
        if line == "# EOF" {
            assert!(lines.peek().is_none(), "text after # EOF");
            return Scrape(samples);
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().expect("metadata name"));
            assert!(name_ok(name), "bad family name in {line:?}");
            match kind {
                "TYPE" => {
                    let t = parts.next().expect("a type");
                    assert!(
                        ["counter", "gauge", "histogram", "info", "unknown"].contains(&t),
                        "{line:?}"
                    );
                    families.push(name.to_string());
                }
                "HELP" | "UNIT" => {}
                _ => panic!("unknown metadata line {line:?}"),
            }
            continue;
        }
        let (sample, value) = line.rsplit_once(' ').expect("sample and value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = sample.split('{').next().unwrap();
        assert!(name_ok(name), "bad sample name in {line:?}");
        if let Some(labels) = sample.strip_prefix(name) {
            if !labels.is_empty() {
                let inner = labels
                    .strip_prefix('{')
                    .and_then(|l| l.strip_suffix('}'))
                    .unwrap_or_else(|| panic!("bad labels in {line:?}"));
                for pair in inner.split("\",") {
                    let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                    assert!(name_ok(k), "bad label name in {line:?}");
                    assert!(!v.trim_end_matches('"').contains('"'), "{line:?}");
                }
            }
        }
        assert!(
            families.iter().any(|f| name.starts_with(f.as_str())),
            "sample {name} has no # TYPE"
        );
        assert!(
            samples.insert(sample.to_string(), value).is_none(),
            "duplicate sample {sample}"
        );
    }
    panic!("exposition does not end with # EOF:\n{text}");
}

async fn scrape(app: &TestApp) -> Scrape {
    let got = get(&app.admin_url("/metrics")).await;
    assert_eq!(got.status, 200);
    assert!(
        got.header("content-type")
            .unwrap_or("")
            .starts_with("application/openmetrics-text"),
        "{:?}",
        got.header("content-type")
    );
    parse_exposition(std::str::from_utf8(&got.body).expect("utf-8"))
}

/// Scrapes until `done` holds (at most `SETTLE`), and returns that scrape.
async fn scrape_until(app: &TestApp, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let s = scrape(app).await;
        if done(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics did not settle: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn requests(s: &Scrape) -> f64 {
    ["HIT", "MISS", "PASS", "other"]
        .iter()
        .map(|c| s.get(&format!("package_cache_requests_total{{cache=\"{c}\"}}")))
        .sum()
}

const SIZES: [(&str, usize); 3] = [("/a.bin", 40_000), ("/b.bin", 50_000), ("/c.bin", 60_000)];
/// The five hits of `known_traffic`.
const HITS: [usize; 5] = [0, 0, 1, 2, 2];

/// 3 misses, then 5 hits, then one path every source says is missing.
async fn known_traffic(app: &TestApp) -> Scrape {
    for (path, _) in SIZES {
        let got = get(&app.url(path)).await;
        assert_eq!((got.status.as_u16(), got.cache()), (200, "MISS"));
        committed(&app.cache.join(&path[1..])).await;
    }
    for i in HITS {
        let got = get(&app.url(SIZES[i].0)).await;
        assert_eq!((got.status.as_u16(), got.cache()), (200, "HIT"));
        assert_eq!(got.body.len(), SIZES[i].1);
    }
    assert_eq!(get(&app.url("/missing.bin")).await.status, 404);
    scrape_until(app, |s| requests(s) == 9.0).await
}

async fn origin_with_files() -> Origin {
    let mut builder = Origin::builder();
    for (i, (path, len)) in SIZES.iter().enumerate() {
        builder = builder.file(path, bytes_of(*len, i as u64));
    }
    builder.start().await
}

#[tokio::test]
async fn healthz_says_ok_until_the_cache_directory_is_unusable() {
    let app = TestApp::start(with_admin).await;
    let got = get(&app.admin_url("/healthz")).await;
    assert_eq!((got.status.as_u16(), &got.body[..]), (200, &b"ok\n"[..]));

    // Fills are written under tmp/: without it nothing can be cached.
    let tmp = app.cache.join(".package-cache/tmp");
    let moved = app.cache.join(".package-cache/tmp.moved");
    std::fs::rename(&tmp, &moved).unwrap();
    let got = get(&app.admin_url("/healthz")).await;
    assert_eq!(got.status, 503);
    assert!(
        String::from_utf8_lossy(&got.body).contains("cache directory unusable"),
        "{got:?}"
    );
    std::fs::rename(&moved, &tmp).unwrap();
    assert_eq!(get(&app.admin_url("/healthz")).await.status, 200);

    assert_eq!(get(&app.admin_url("/nope")).await.status, 404);
    assert_eq!(get(&app.admin_url("/metrics/x")).await.status, 404);
    let post = request("POST", &app.admin_url("/metrics"), &[]).await;
    assert_eq!(post.status, 405);
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_a_known_sequence_of_requests() {
    let origin = origin_with_files().await;
    let app = TestApp::start(|c| with_admin(source(c, &origin.url()))).await;
    let s = known_traffic(&app).await;

    let cache = |c: &str| s.get(&format!("package_cache_requests_total{{cache=\"{c}\"}}"));
    assert_eq!(
        (cache("HIT"), cache("MISS"), cache("PASS"), cache("other")),
        (5.0, 3.0, 0.0, 1.0)
    );
    let hit_bytes: usize = HITS.iter().map(|&i| SIZES[i].1).sum();
    let miss_bytes: usize = SIZES.iter().map(|(_, len)| len).sum();
    assert_eq!(
        s.get("package_cache_served_bytes_total{from=\"cache\"}"),
        hit_bytes as f64
    );
    assert_eq!(
        s.get("package_cache_served_bytes_total{from=\"upstream\"}"),
        miss_bytes as f64
    );
    // The 404 was a fill too: it started, and failed before any body.
    assert_eq!(s.get("package_cache_fills_started_total"), 4.0);
    assert_eq!(s.get("package_cache_fill_joins_total"), 0.0);
    assert_eq!(s.get("package_cache_fills_in_progress"), 0.0);
    let src = format!("source=\"http://{}\"", origin.addr());
    assert_eq!(
        s.get(&format!(
            "package_cache_upstream_head_seconds_count{{{src}}}"
        )),
        4.0,
        "one response head per upstream request, 404 included"
    );
    assert_eq!(
        s.get(&format!(
            "package_cache_upstream_errors_total{{{src},kind=\"not_found\"}}"
        )),
        1.0
    );
    assert_eq!(origin.total_hits(), 4);
    for gauge in [
        "package_cache_cache_size_bytes",
        "package_cache_cache_entries",
    ] {
        assert!(s.opt(gauge).is_some(), "{gauge} is exposed");
    }
    assert_eq!(s.get("package_cache_evictions_total"), 0.0);

    // The eviction index reports through the same counters.
    app.running().metrics().evicted(1234);
    let s = scrape(&app).await;
    assert_eq!(s.get("package_cache_evictions_total"), 1.0);
    assert_eq!(s.get("package_cache_evicted_bytes_total"), 1234.0);
    app.stop().await;
}

/// The `<tr class="fill" …>` row of the status page for `key`.
fn fill_row<'a>(page: &'a str, key: &str) -> Option<&'a str> {
    page.split("<tr class=\"fill\"")
        .skip(1)
        .map(|row| &row[..row.find("</tr>").unwrap_or(row.len())])
        .find(|row| row.contains(&format!("data-key=\"{key}\"")))
}

#[tokio::test]
async fn a_fill_in_progress_shows_its_readers_and_progress() {
    let body = bytes_of(400_000, 7);
    // About 4 s upstream: long enough to look at it mid-way.
    let origin = Origin::builder()
        .route("/big.bin", Reply::file(body.clone()).throttle(100_000))
        .start()
        .await;
    let app = TestApp::start(|c| with_admin(source(c, &origin.url()))).await;

    let (leader, leader_body, _) = client::open(&app.url("/big.bin"), &[]).await;
    let (follower, follower_body, _) = client::open(&app.url("/big.bin"), &[]).await;
    assert_eq!(leader.headers["x-cache"], "MISS");
    assert_eq!(follower.headers["x-cache"], "MISS");

    let s = scrape(&app).await;
    assert_eq!(s.get("package_cache_fills_in_progress"), 1.0);
    assert_eq!(s.get("package_cache_fills_started_total"), 1.0);
    assert_eq!(s.get("package_cache_fill_joins_total"), 1.0);

    let page = get(&app.admin_url("/")).await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let page = String::from_utf8(page.body).unwrap();
    let row = fill_row(&page, "/big.bin").unwrap_or_else(|| panic!("no fill row in {page}"));
    assert!(row.contains("data-readers=\"2\""), "{row}");
    assert!(
        row.contains("max=\"400000\""),
        "a progress bar of the body: {row}"
    );
    let written: u64 = row
        .split("data-written=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|w| w.parse().ok())
        .expect("data-written");
    assert!(written < 400_000, "still in progress: {written}");
    assert!(page.contains("id=\"fills-in-progress\" data-value=\"1\""));

    // The readers leave; the fill goes on alone, then disappears from the page.
    drop((leader_body, follower_body));
    let s = scrape_until(&app, |s| s.get("package_cache_fills_in_progress") == 0.0).await;
    assert_eq!(s.get("package_cache_requests_total{cache=\"MISS\"}"), 2.0);
    let page = String::from_utf8(get(&app.admin_url("/")).await.body).unwrap();
    assert!(page.contains("No downloads in progress."), "{page}");
    app.stop().await;
}

#[tokio::test]
async fn a_failing_source_shows_its_errors_by_origin() {
    // A port nobody listens on: connections are refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let origin = origin_with_files().await;
    let app = TestApp::start(|c| {
        with_admin(source(
            source(c, &format!("http://{dead_addr}")),
            &origin.url(),
        ))
    })
    .await;
    let got = get(&app.url("/a.bin")).await;
    assert_eq!((got.status.as_u16(), got.cache()), (200, "MISS"));

    let s = scrape(&app).await;
    let dead_src = format!("source=\"http://{dead_addr}\"");
    assert_eq!(
        s.get(&format!(
            "package_cache_upstream_errors_total{{{dead_src},kind=\"connect\"}}"
        )),
        1.0
    );
    let live_src = format!("source=\"http://{}\"", origin.addr());
    assert_eq!(
        s.get(&format!(
            "package_cache_upstream_head_seconds_count{{{live_src}}}"
        )),
        1.0
    );
    assert!(s
        .opt(&format!(
            "package_cache_upstream_head_seconds_count{{{dead_src}}}"
        ))
        .is_none());

    let page = String::from_utf8(get(&app.admin_url("/")).await.body).unwrap();
    let row = |src: &str| {
        let start = page
            .find(&format!("data-source=\"http://{src}\""))
            .unwrap_or_else(|| panic!("no row for {src} in {page}"));
        &page[start..start + page[start..].find("</tr>").unwrap()]
    };
    let dead_row = row(&dead_addr.to_string());
    assert!(dead_row.contains("failing"), "{dead_row}");
    assert!(
        dead_row.contains(&format!("http://{dead_addr}/a.bin")),
        "{dead_row}"
    );
    let live_row = row(&origin.addr().to_string());
    assert!(live_row.contains(">ok<"), "{live_row}");
    app.stop().await;
}

#[tokio::test]
async fn admin_paths_are_not_served_on_the_proxy_port() {
    let origin = Origin::builder()
        .file("/metrics", &b"upstream metrics"[..])
        .file("/healthz", &b"upstream healthz"[..])
        .start()
        .await;
    let app = TestApp::start(|c| with_admin(source(c, &origin.url()))).await;
    for (path, body) in [
        ("/metrics", &b"upstream metrics"[..]),
        ("/healthz", &b"upstream healthz"[..]),
    ] {
        let got = get(&app.url(path)).await;
        assert_eq!((got.status.as_u16(), &got.body[..]), (200, body), "{path}");
        assert_eq!(origin.hits(path), 1, "{path} went to the upstream");
    }
    // And the admin port serves only its own.
    let s = scrape(&app).await;
    assert!(s.opt("package_cache_fills_started_total").is_some());
    app.stop().await;
}

#[tokio::test]
async fn the_binary_logs_its_admin_address_and_honours_off() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("c");
    let bin = Binary::start(&["--cache", cache.to_str().unwrap()]).await;
    let admin = bin.admin.expect("an admin listening line");
    assert_ne!(admin, bin.addr);
    let got = get(&format!("http://{admin}/healthz")).await;
    assert_eq!(got.status, 200);
    bin.kill9().await;

    let bin = Binary::start(&["--cache", cache.to_str().unwrap(), "--admin", "off"]).await;
    assert_eq!(bin.admin, None);
    bin.kill9().await;

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_package-cache"))
        .args(["--cache", cache.to_str().unwrap(), "--admin", "4001"])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(10), out)
        .await
        .expect("exits at once")
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--admin"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- the status page in headless Chromium ----

/// Chromium from `PATH`; `None` (skip) when absent, except under `CI`.
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("chromium"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required under CI (apt-get install chromium)"
        );
        eprintln!("skipping: chromium is not installed");
    }
    found
}

/// The DOM Chromium builds for `url` (`--dump-dom`). Chromium runs in its
/// own process group with a private profile, and the whole group is killed
/// if it takes longer than a minute.
async fn dump_dom(chromium: &PathBuf, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            // Root (CI) cannot use the sandbox; the page is our own.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-proxy-server",
            "--disable-extensions",
            "--disable-background-networking",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("chromium starts");
    let pgid = rustix::process::Pid::from_raw(child.id().expect("a pid") as i32).expect("pid > 0");
    let kill_group = || {
        // Its renderer and zygote processes too; ESRCH once they are gone.
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    };
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let read = async {
        use tokio::io::AsyncReadExt;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (mut stdout, mut stderr) = (stdout, stderr);
        let _ = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        let status = child.wait().await;
        (status, out, err)
    };
    let result = tokio::time::timeout(Duration::from_secs(60), read).await;
    kill_group();
    let (status, out, err) = result.expect("chromium finished within 60 s (killed)");
    let dom = String::from_utf8_lossy(&out).into_owned();
    assert!(
        status.as_ref().is_ok_and(|s| s.success()) && dom.contains("</html>"),
        "chromium failed: {status:?}\n{}",
        String::from_utf8_lossy(&err)
    );
    dom
}

/// `data-value` and text of the element with `id`, as serialised by Chromium.
fn element(dom: &str, id: &str) -> (String, String) {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the DOM:\n{dom}"));
    let open = dom[..at].rfind('<').unwrap();
    let close = at + dom[at..].find('>').unwrap();
    let attrs = &dom[open..close];
    let value = attrs
        .split("data-value=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .unwrap_or_else(|| panic!("#{id} has no data-value: {attrs}"))
        .to_string();
    let text = dom[close + 1..][..dom[close + 1..].find('<').unwrap()].to_string();
    (value, text)
}

/// The page's unit rules, restated: binary units, one decimal.
fn human(n: f64) -> String {
    if n < 1024.0 {
        return format!("{n} B");
    }
    let mut v = n / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < 3 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", ["KiB", "MiB", "GiB", "TiB"][unit])
}

#[tokio::test]
async fn chromium_renders_the_numbers_metrics_reports() {
    let Some(chromium) = chromium() else { return };
    let origin = origin_with_files().await;
    let app = TestApp::start(|c| with_admin(source(c, &origin.url()))).await;
    known_traffic(&app).await;

    // No proxy request between the scrapes and the rendering: all three
    // readings are of one state.
    let before = scrape(&app).await;
    let dom = dump_dom(&chromium, &app.admin_url("/")).await;
    let after = scrape(&app).await;
    assert_eq!(before, after, "no traffic in between");
    let m = before;

    let hit = m.get("package_cache_requests_total{cache=\"HIT\"}");
    let miss = m.get("package_cache_requests_total{cache=\"MISS\"}");
    let pass = m.get("package_cache_requests_total{cache=\"PASS\"}");
    let ratio = hit / (hit + miss + pass);
    let (value, text) = element(&dom, "hit-ratio");
    assert_eq!(value, format!("{ratio:.6}"));
    assert_eq!(text, format!("{:.1} %", ratio * 100.0));
    assert_eq!(text, "62.5 %", "5 hits of 8 downloads");

    for (id, sample) in [
        (
            "bytes-from-cache",
            "package_cache_served_bytes_total{from=\"cache\"}",
        ),
        (
            "bytes-from-upstream",
            "package_cache_served_bytes_total{from=\"upstream\"}",
        ),
    ] {
        let (value, text) = element(&dom, id);
        let expected = m.get(sample);
        assert_eq!(value.parse::<f64>().unwrap(), expected, "#{id}");
        assert_eq!(text, human(expected), "#{id}");
    }
    for (id, c) in [
        ("requests-hit", "HIT"),
        ("requests-miss", "MISS"),
        ("requests-pass", "PASS"),
        ("requests-other", "other"),
    ] {
        let (value, text) = element(&dom, id);
        let expected = m.get(&format!("package_cache_requests_total{{cache=\"{c}\"}}"));
        assert_eq!(value.parse::<f64>().unwrap(), expected, "#{id}");
        assert_eq!(text, expected.to_string(), "#{id}");
    }
    let (value, _) = element(&dom, "fills-in-progress");
    assert_eq!(
        value.parse::<f64>().unwrap(),
        m.get("package_cache_fills_in_progress")
    );
    assert!(dom.contains("No build queue"), "the build queue section");
    app.stop().await;
}
