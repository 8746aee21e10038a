//! Traffic by mount and the last hour, as `/metrics` exposes them and as
//! headless Chromium renders the status page: a row per mount (the `--source`
//! mirrors, a named host and refused requests as rows of their own) with the
//! same numbers as `/metrics`, a sparkline per row, the hour's chart with one
//! group per minute and one ratio point per minute with downloads, and a page
//! that loads nothing.

use super::exposition::{parse_exposition, Scrape};
use crate::chromium::{chromium, dump_dom_logged};
use crate::support::app::Binary;
use crate::support::client::{bytes_of, curl, get};
use crate::support::origin::{Origin, Reply};
use std::time::Duration;

async fn scrape_at(admin: &str) -> Scrape {
    let got = get(&format!("{admin}/metrics")).await;
    parse_exposition(std::str::from_utf8(&got.body).expect("utf-8"))
}

/// The value of attribute `name` in the start tag that begins `tag`.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let head = &tag[..tag.find('>').unwrap_or(tag.len())];
    let at = head.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(&head[at..at + head[at..].find('"')?])
}

/// The `data-value` of the cell with class `num CLASS` in a table row.
fn cell<'a>(row: &'a str, class: &str) -> &'a str {
    let at = row
        .find(&format!("class=\"num {class}\""))
        .unwrap_or_else(|| panic!("no {class} cell in {row}"));
    attr(&row[at..], "data-value").unwrap_or_else(|| panic!("{class} has no value: {row}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_each_mount_and_the_last_hour() {
    let Some(chromium) = chromium() else { return };
    let origin = Origin::builder()
        .file("/a.bin", bytes_of(40_000, 1))
        .file("/b.bin", bytes_of(30_000, 2))
        .route(
            "/gems/versions",
            Reply::file("created_at: x\n---\na 1.0 abc\n"),
        )
        .start()
        .await;
    let host = Origin::builder()
        .file("/h.bin", bytes_of(20_000, 3))
        .start()
        .await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let bin = Binary::start(&[
        "--cache",
        cache.to_str().unwrap(),
        "--source",
        &origin.url(),
        "--mirror",
        &format!("rubygems={}/gems", origin.url()),
        "--mirror",
        &format!("dead=http://{dead_addr}"),
        "--transparent-host",
        &host.addr().to_string(),
        // The scrub reads entries in the background and counts its bytes:
        // off, so that two scrapes around the render differ only by traffic.
        "--scrub-rate",
        "0",
    ])
    .await;
    let admin = format!("http://{}", bin.admin.expect("admin"));
    let proxy = bin.url("");

    let mut expected_total = 0;
    for (path, cache) in [
        ("/a.bin", "MISS"),
        ("/b.bin", "MISS"),
        ("/a.bin", "HIT"),
        ("/b.bin", "HIT"),
        ("/missing.bin", "-"),
        ("/rubygems/versions", "MISS"),
        ("/rubygems/versions", "HIT"),
        ("/dead/x.bin", "-"),
    ] {
        let mut got = get(&bin.url(path)).await;
        // A hit right behind its miss may find the commit not yet done.
        while cache == "HIT" && got.cache() == "MISS" {
            expected_total += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            got = get(&bin.url(path)).await;
        }
        assert_eq!(got.cache(), cache, "{path}");
        expected_total += 1;
    }
    // Forward-proxy requests (curl -x): an allowed host, and one that is not.
    let named = format!("http://{}/h.bin", host.addr());
    for _ in 0..2 {
        let (code, body, err) = curl(&["-sS", "-x", &proxy, &named]).await;
        assert_eq!((code, body.len()), (0, 20_000), "{err}");
        expected_total += 1;
    }
    let (code, _, err) = curl(&["-sS", "-f", "-x", &proxy, "http://127.0.0.1:1/x"]).await;
    assert_ne!(code, 0, "refused: {err}");
    expected_total += 1;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let before = loop {
        let s = scrape_at(&admin).await;
        // Fills end (commit) a moment after their last byte was sent.
        let settled = s.sum("package_cache_requests_total", &[]) == expected_total as f64
            && s.get("package_cache_fills_in_progress") == 0.0
            && s.sum("package_cache_fills_ended_total", &[])
                == s.get("package_cache_fills_started_total");
        if settled {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let page_url = format!("{admin}/");
    let (dom, loaded) = dump_dom_logged(&chromium, &page_url).await;
    let m = scrape_at(&admin).await;
    assert_eq!(before, m, "no traffic while Chromium rendered the page");

    // One row per mount with traffic (and every configured mount).
    let rows: Vec<&str> = dom
        .split("<tr class=\"mount\"")
        .skip(1)
        .map(|r| &r[..r.find("</tr>").unwrap()])
        .collect();
    let mut labels: Vec<&str> = rows
        .iter()
        .map(|r| attr(r, "data-mount").unwrap())
        .collect();
    labels.sort();
    let host_label = format!("host:{}", host.addr());
    let mut want = vec!["(mirrors)", "(none)", "dead", &host_label, "rubygems"];
    want.sort();
    assert_eq!(labels, want, "the source's own host had no traffic: no row");
    let mut rows_total = 0.0;
    for row in &rows {
        let label = attr(row, "data-mount").unwrap();
        let mount = ("mount", label);
        let requests = m.sum("package_cache_requests_total", &[mount]);
        assert_eq!(
            cell(row, "requests").parse::<f64>().unwrap(),
            requests,
            "{label}"
        );
        rows_total += requests;
        for (class, cache) in [
            ("hit", "HIT"),
            ("miss", "MISS"),
            ("pass", "PASS"),
            ("other", "other"),
        ] {
            assert_eq!(
                cell(row, class).parse::<f64>().unwrap(),
                m.sum("package_cache_requests_total", &[mount, ("cache", cache)]),
                "{label} {cache}"
            );
        }
        for (class, from) in [("from-cache", "cache"), ("from-upstream", "upstream")] {
            assert_eq!(
                cell(row, class).parse::<f64>().unwrap(),
                m.sum("package_cache_served_bytes_total", &[mount, ("from", from)]),
                "{label} {from}"
            );
        }
        let ratio = m.opt(&format!("package_cache_hit_ratio{{mount=\"{label}\"}}"));
        assert_eq!(
            cell(row, "hit-ratio"),
            ratio.map_or(String::new(), |r| format!("{r:.6}")),
            "{label}"
        );
        let spark = &row[row.find("class=\"spark\"").expect("a sparkline")..];
        let points = attr(&spark[spark.find("<polyline").unwrap()..], "points").unwrap();
        assert_eq!(points.split(' ').count(), 60, "{label}: a point per minute");
    }
    assert_eq!(rows_total, expected_total as f64);
    assert_eq!(
        m.opt("package_cache_hit_ratio{mount=\"(mirrors)\"}"),
        Some(0.5),
        "two hits of four downloads"
    );
    assert_eq!(
        m.opt("package_cache_hit_ratio{mount=\"dead\"}"),
        None,
        "no downloads"
    );

    // The chart: sixty minutes, every request in one of them.
    assert!(dom.contains("<svg id=\"chart\""), "{dom}");
    let minutes: Vec<&str> = dom.split("<g class=\"minute\"").skip(1).collect();
    assert_eq!(minutes.len(), 60);
    let value = |m: &str, name: &str| attr(m, name).unwrap().parse::<u64>().unwrap();
    let mut with_downloads = 0;
    let mut sum = 0;
    for minute in &minutes {
        let parts: u64 = ["data-hit", "data-miss", "data-pass", "data-other"]
            .iter()
            .map(|n| value(minute, n))
            .sum();
        assert_eq!(value(minute, "data-requests"), parts);
        sum += parts;
        if value(minute, "data-hit") + value(minute, "data-miss") + value(minute, "data-pass") > 0 {
            with_downloads += 1;
        }
    }
    assert_eq!(sum, expected_total);
    let points = dom.matches("<circle class=\"ratio-point\"").count();
    assert_eq!(
        points, with_downloads,
        "one ratio point per minute with downloads"
    );
    assert!(
        (1..=2).contains(&points),
        "a workload of seconds spans one or two minutes"
    );

    // It loads nothing: no request came from the page, and it says so.
    let admin_origin = admin.trim_end_matches('/');
    let from_page: Vec<_> = loaded
        .iter()
        .filter(|l| l.initiator == admin_origin)
        .collect();
    assert!(from_page.is_empty(), "the page loaded {from_page:?}");
    assert!(loaded.iter().any(|l| l.url == page_url), "{loaded:?}");
    let csp = get(&page_url).await;
    assert!(csp
        .header("content-security-policy")
        .unwrap()
        .starts_with("default-src 'none'"));
    assert!(!dom.contains("<script"));
    bin.kill9().await;
}
