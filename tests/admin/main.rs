//! The admin listener: `/healthz`, `/metrics` counting a known sequence of
//! requests, a fill in progress with its readers, upstream health by source,
//! the status page as headless Chromium renders it, and the separation from
//! the proxy port.

#[path = "../support/mod.rs"]
mod support;

mod adding_up;
mod by_mount;
mod chromium;
mod exposition;
mod formats;

use chromium::{chromium, dump_dom, element, human};
use exposition::{parse_exposition, Scrape};
use package_cache::config::{Config, ListenAddr};
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

/// Scrapes until `done` holds (at most `limit`), and returns that scrape.
async fn scrape_until(app: &TestApp, limit: Duration, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + limit;
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
        .map(|c| s.sum("package_cache_requests_total", &[("cache", c)]))
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
    // Each fill ends (is counted) a moment after its commit.
    scrape_until(app, SETTLE, |s| {
        requests(s) == 9.0
            && s.sum("package_cache_fills_ended_total", &[])
                == s.get("package_cache_fills_started_total")
    })
    .await
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

    let cache = |c: &str| s.sum("package_cache_requests_total", &[("cache", c)]);
    assert_eq!(
        (cache("HIT"), cache("MISS"), cache("PASS"), cache("other")),
        (5.0, 3.0, 0.0, 1.0)
    );
    let hit_bytes: usize = HITS.iter().map(|&i| SIZES[i].1).sum();
    let miss_bytes: usize = SIZES.iter().map(|(_, len)| len).sum();
    assert_eq!(
        s.sum("package_cache_served_bytes_total", &[("from", "cache")]),
        hit_bytes as f64
    );
    assert_eq!(
        s.sum("package_cache_served_bytes_total", &[("from", "upstream")]),
        miss_bytes as f64
    );
    // A 404 is no fill: nothing began writing.
    assert_eq!(s.get("package_cache_fills_started_total"), 3.0);
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
    // A join is counted with its request, once the answer is over.
    assert_eq!(s.get("package_cache_fill_joins_total"), 0.0);

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
    // The upstream needs about 4 s for the whole body, whoever reads it.
    let s = scrape_until(&app, Duration::from_secs(15), |s| {
        s.get("package_cache_fills_in_progress") == 0.0
    })
    .await;
    assert_eq!(
        s.sum("package_cache_requests_total", &[("cache", "MISS")]),
        2.0
    );
    assert_eq!(s.get("package_cache_fill_joins_total"), 1.0);
    assert_eq!(
        s.get("package_cache_requests_incomplete_total{reason=\"client_gone\"}"),
        2.0
    );
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
    let cache = cache.to_str().unwrap();
    // A source that is never asked: this test makes no request through it.
    let source = ["--source", "http://127.0.0.1:9/"];
    let bin = Binary::start(&[&source[..], &["--cache", cache]].concat()).await;
    let admin = bin.admin.expect("an admin listening line");
    assert_ne!(admin, bin.addr);
    let got = get(&format!("http://{admin}/healthz")).await;
    assert_eq!(got.status, 200);
    bin.kill9().await;

    let bin = Binary::start(&[&source[..], &["--cache", cache, "--admin", "off"]].concat()).await;
    assert_eq!(bin.admin, None);
    bin.kill9().await;

    let stderr = support::app::refused_start(
        &[&source[..], &["--cache", cache, "--admin", "4001"]].concat(),
    )
    .await;
    assert!(stderr.contains("--admin"), "{stderr}");
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

    let hit = m.sum("package_cache_requests_total", &[("cache", "HIT")]);
    let miss = m.sum("package_cache_requests_total", &[("cache", "MISS")]);
    let pass = m.sum("package_cache_requests_total", &[("cache", "PASS")]);
    let ratio = hit / (hit + miss + pass);
    let (value, text) = element(&dom, "hit-ratio");
    assert_eq!(value, format!("{ratio:.6}"));
    assert_eq!(text, format!("{:.1} %", ratio * 100.0));
    assert_eq!(text, "62.5 %", "5 hits of 8 downloads");

    for (id, from) in [
        ("bytes-from-cache", "cache"),
        ("bytes-from-upstream", "upstream"),
    ] {
        let (value, text) = element(&dom, id);
        let expected = m.sum("package_cache_served_bytes_total", &[("from", from)]);
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
        let expected = m.sum("package_cache_requests_total", &[("cache", c)]);
        assert_eq!(value.parse::<f64>().unwrap(), expected, "#{id}");
        assert_eq!(text, expected.to_string(), "#{id}");
    }
    let (value, _) = element(&dom, "fills-in-progress");
    assert_eq!(
        value.parse::<f64>().unwrap(),
        m.get("package_cache_fills_in_progress")
    );
    let (value, _) = element(&dom, "build-queue-depth");
    assert_eq!(
        value.parse::<f64>().unwrap(),
        m.get("package_cache_build_queue_depth")
    );
    app.stop().await;
}
