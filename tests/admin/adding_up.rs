//! Metrics that add up: the real binary serves a mixed workload with every
//! edge the counters have tripped on (a request landing as its fill commits,
//! joins, a fill cut short before its first byte that its followers fetch
//! again, 404s, an unreachable upstream, a name that does not resolve, passes, documents fresh and
//! revalidated, clients leaving before and during an answer, a Range, a body
//! broken off upstream), tallies what each response said, and then adds up
//! `/metrics` against that tally. Each request must be counted exactly once.

use super::exposition::{parse_exposition, Scrape};
use crate::chromium::element;
use crate::support::app::Binary;
use crate::support::client::{bytes_of, get, get_with, head};
use crate::support::origin::{Origin, Reply};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the test saw: requests by X-Cache (`other` when none), and the body
/// bytes of complete answers by where the metrics count them from.
#[derive(Default, Debug)]
struct Tally {
    requests: BTreeMap<&'static str, u64>,
    /// Complete HIT bodies.
    cache_bytes: u64,
    /// Complete MISS and PASS bodies.
    upstream_bytes: u64,
    /// Requests whose client left before the end.
    client_gone: u64,
    /// Answers that broke off on the proxy's side.
    aborted: u64,
}

impl Tally {
    fn total(&self) -> u64 {
        self.requests.values().sum()
    }

    /// Records a complete (or broken, `aborted`) answer.
    fn saw(&mut self, cache: &str, body: usize, aborted: bool) {
        let label = match cache {
            "HIT" => "HIT",
            "MISS" => "MISS",
            "PASS" => "PASS",
            _ => "other",
        };
        *self.requests.entry(label).or_default() += 1;
        if aborted {
            self.aborted += 1;
            return;
        }
        match label {
            "HIT" => self.cache_bytes += body as u64,
            "MISS" | "PASS" => self.upstream_bytes += body as u64,
            _ => {}
        }
    }
}

async fn scrape_at(admin: &str) -> Scrape {
    let got = get(&format!("{admin}/metrics")).await;
    assert_eq!(got.status, 200);
    parse_exposition(std::str::from_utf8(&got.body).expect("utf-8"))
}

fn sum(s: &Scrape, family: &str, label: &str, values: &[&str]) -> f64 {
    values.iter().map(|v| s.sum(family, &[(label, v)])).sum()
}

const CACHE: [&str; 4] = ["HIT", "MISS", "PASS", "other"];
const ENDS: [&str; 4] = ["committed", "not_stored", "failed", "abandoned"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_workload_adds_up_in_metrics_and_on_the_page() {
    let files: Vec<(String, bytes::Bytes)> = (0..3)
        .map(|i| {
            (
                format!("/f{i}.bin"),
                bytes_of(50_000 + i * 10_000, i as u64),
            )
        })
        .collect();
    let pairs: Vec<(String, bytes::Bytes)> = (0..5)
        .map(|i| (format!("/p{i}.bin"), bytes_of(200_000, 100 + i as u64)))
        .collect();
    let slow = bytes_of(300_000, 20);
    let big = bytes_of(2_000_000, 21);
    let flaky = bytes_of(150_000, 22);
    let broken = bytes_of(300_000, 23);
    let versions = "created_at: x\n---\na 1.0 abc\n";
    let mut builder = Origin::builder();
    for (path, body) in files.iter().chain(&pairs) {
        builder = builder.file(path, body.clone());
    }
    let origin = builder
        .route("/slow.bin", Reply::file(slow.clone()).throttle(300_000))
        .route("/big.bin", Reply::file(big.clone()).throttle(1_000_000))
        .route_first(
            "/flaky.bin",
            1,
            Reply::file(flaky.clone())
                .first_byte_delay(Duration::from_millis(400))
                .reset_after(0),
        )
        .route(
            "/flaky.bin",
            Reply::file(flaky.clone()).first_byte_delay(Duration::from_millis(200)),
        )
        .route(
            "/broken.bin",
            Reply::file(broken.clone()).reset_after(100_000),
        )
        .route("/private.bin", Reply::status(403))
        .route("/stalled.bin", Reply::stall_headers())
        .route_first("/gems/versions", 1, Reply::file(versions))
        .route("/gems/versions", Reply::status(304))
        .start()
        .await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    // A 64-octet label is longer than DNS allows: the system resolver fails
    // it at once, without a query leaving the machine.
    let unresolvable = format!("http://{}.invalid", "a".repeat(64));
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (source, gems, dead_url, nodns_url) = (
        origin.url(),
        format!("rubygems={}/gems", origin.url()),
        format!("dead=http://{dead_addr}"),
        format!("nodns={unresolvable}"),
    );
    let bin = Binary::start(&[
        "--cache",
        cache.to_str().unwrap(),
        "--source",
        &source,
        "--mirror",
        &gems,
        "--mirror",
        &dead_url,
        "--mirror",
        &nodns_url,
        "--index-ttl",
        "1",
        "--upstream-timeout",
        "3",
    ])
    .await;
    let admin = format!("http://{}", bin.admin.expect("admin"));
    let url = |path: &str| bin.url(path);
    let mut t = Tally::default();

    // Misses, then hits, and a Range answered from the cache.
    for (path, body) in &files {
        let got = get(&url(path)).await;
        assert_eq!((got.status.as_u16(), got.cache()), (200, "MISS"), "{path}");
        assert_eq!(got.body.len(), body.len());
        t.saw(got.cache(), got.body.len(), false);
    }
    for (path, _) in files.iter().chain(&files[..1]) {
        let mut got = get(&url(path)).await;
        for _ in 0..100 {
            if got.cache() == "HIT" {
                break;
            }
            // Committed a moment after its last byte: counted all the same.
            t.saw(got.cache(), got.body.len(), false);
            tokio::time::sleep(Duration::from_millis(20)).await;
            got = get(&url(path)).await;
        }
        assert_eq!((got.status.as_u16(), got.cache()), (200, "HIT"), "{path}");
        t.saw(got.cache(), got.body.len(), false);
    }
    let ranged = get_with(&url(&files[1].0), &[("range", "bytes=0-99")]).await;
    assert_eq!((ranged.status.as_u16(), ranged.cache()), (206, "HIT"));
    assert_eq!(ranged.body.len(), 100);
    t.saw(ranged.cache(), ranged.body.len(), false);

    // A request right behind its leader lands as the fill commits: a HIT,
    // never a HIT and a join.
    for (path, body) in &pairs {
        let first = get(&url(path)).await;
        let second = get(&url(path)).await;
        assert_eq!(first.cache(), "MISS", "{path}");
        assert_eq!(second.cache(), "HIT", "{path}");
        assert_eq!(
            (first.body.len(), second.body.len()),
            (body.len(), body.len())
        );
        t.saw(first.cache(), first.body.len(), false);
        t.saw(second.cache(), second.body.len(), false);
    }

    // Three clients on one slow download: one leader, two joins.
    let clients: Vec<_> = (0..3)
        .map(|i| {
            let u = url("/slow.bin");
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(150 * i)).await;
                get(&u).await
            })
        })
        .collect();
    for c in clients {
        let got = c.await.unwrap();
        assert_eq!((got.status.as_u16(), got.cache()), (200, "MISS"));
        assert_eq!(got.body.len(), slow.len());
        t.saw(got.cache(), got.body.len(), false);
    }

    // A fill cut short before its first byte: its leader gets 502, its two
    // followers compete again, one leads the next fill and one joins it.
    let spawn_get = |path: &str| {
        let u = url(path);
        tokio::spawn(async move { get(&u).await })
    };
    let leader = spawn_get("/flaky.bin");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let followers: Vec<_> = (0..2).map(|_| spawn_get("/flaky.bin")).collect();
    let led = leader.await.unwrap();
    assert_eq!(led.status, 502);
    t.saw(led.cache(), led.body.len(), false);
    for f in followers {
        let got = f.await.unwrap();
        assert_eq!((got.status.as_u16(), got.cache()), (200, "MISS"));
        assert_eq!(got.body.len(), flaky.len());
        t.saw(got.cache(), got.body.len(), false);
    }

    // A body the upstream breaks off: a MISS whose answer aborts.
    let cut = get(&url("/broken.bin")).await;
    assert_eq!(cut.cache(), "MISS");
    assert!(cut.error.is_some(), "the answer breaks off");
    t.saw(cut.cache(), cut.body.len(), true);
    let broken_received = cut.body.len() as u64;

    // 404 (then remembered), an unreachable upstream, a name that does not
    // resolve, a refusal passed on, a query passed through, a local answer.
    for path in [
        "/missing.bin",
        "/missing.bin",
        "/dead/x.bin",
        "/nodns/x.bin",
    ] {
        let got = get(&url(path)).await;
        assert!(got.status.is_client_error() || got.status.is_server_error());
        assert_eq!(got.cache(), "-", "{path}");
        t.saw(got.cache(), got.body.len(), false);
    }
    let private = get(&url("/private.bin")).await;
    assert_eq!((private.status.as_u16(), private.cache()), (403, "PASS"));
    t.saw(private.cache(), private.body.len(), false);
    let queried = get(&url("/f0.bin?token=x")).await;
    assert_eq!((queried.status.as_u16(), queried.cache()), (200, "PASS"));
    t.saw(queried.cache(), queried.body.len(), false);
    let root = head(&url("/rubygems/")).await;
    assert_eq!((root.status.as_u16(), root.cache()), (200, "-"));
    t.saw(root.cache(), root.body.len(), false);

    // An index document: fetched, fresh, then revalidated (304).
    let doc = get(&url("/rubygems/versions")).await;
    assert_eq!((doc.status.as_u16(), doc.cache()), (200, "MISS"));
    t.saw(doc.cache(), doc.body.len(), false);
    let fresh = get(&url("/rubygems/versions")).await;
    assert_eq!(fresh.cache(), "HIT");
    t.saw(fresh.cache(), fresh.body.len(), false);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let revalidated = get(&url("/rubygems/versions")).await;
    assert_eq!((revalidated.cache(), &revalidated.body), ("HIT", &doc.body));
    t.saw(revalidated.cache(), revalidated.body.len(), false);

    // A client that leaves mid-body (its fill goes on and commits), and one
    // that leaves before any answer (its fill times out upstream).
    let mut stream = tokio::net::TcpStream::connect(bin.addr).await.unwrap();
    stream
        .write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = vec![0; 64 * 1024];
    let n = stream.read(&mut first).await.unwrap();
    assert!(n > 0 && first.starts_with(b"HTTP/1.1 200"));
    drop(stream);
    *t.requests.entry("MISS").or_default() += 1;
    t.client_gone += 1;
    let mut stream = tokio::net::TcpStream::connect(bin.addr).await.unwrap();
    stream
        .write_all(b"GET /stalled.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(stream);
    *t.requests.entry("other").or_default() += 1;
    t.client_gone += 1;

    // Every answer over, every fill ended (the stalled fetch times out).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let s = loop {
        let s = scrape_at(&admin).await;
        let ended = sum(&s, "package_cache_fills_ended_total", "result", &ENDS);
        let settled = sum(&s, "package_cache_requests_total", "cache", &CACHE) == t.total() as f64
            && s.get("package_cache_fills_in_progress") == 0.0
            && ended == s.get("package_cache_fills_started_total")
            && origin.hits("/stalled.bin") == 1
            && s.opt(&format!(
                "package_cache_upstream_errors_total{{source=\"http://{}\",kind=\"timeout\"}}",
                origin.addr()
            )) == Some(1.0);
        if settled {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "did not settle at {t:?}: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Each request once, in the place its X-Cache says.
    for c in CACHE {
        assert_eq!(
            s.sum("package_cache_requests_total", &[("cache", c)]),
            *t.requests.get(c).unwrap_or(&0) as f64,
            "requests {c}"
        );
    }
    let incomplete = |r: &str| {
        s.get(&format!(
            "package_cache_requests_incomplete_total{{reason=\"{r}\"}}"
        ))
    };
    assert_eq!(incomplete("client_gone"), t.client_gone as f64);
    assert_eq!(incomplete("aborted"), t.aborted as f64);
    assert_eq!(
        s.sum("package_cache_served_bytes_total", &[("from", "cache")]),
        t.cache_bytes as f64
    );
    let upstream_bytes = s.sum("package_cache_served_bytes_total", &[("from", "upstream")]);
    let floor = t.upstream_bytes + broken_received;
    assert!(
        (floor as f64..=(floor + big.len() as u64 + broken.len() as u64) as f64)
            .contains(&upstream_bytes),
        "{upstream_bytes} bytes from upstream, {floor} seen complete"
    );

    // One fill per distinct file whose download began, each ended once.
    let started = s.get("package_cache_fills_started_total");
    let distinct = files.len() + pairs.len() + 4; // slow, big, flaky, broken
    assert_eq!(
        started, distinct as f64,
        "404s, DNS errors, refused connections, timeouts and refusals are no fills"
    );
    let ended = |r: &str| {
        s.get(&format!(
            "package_cache_fills_ended_total{{result=\"{r}\"}}"
        ))
    };
    assert_eq!(ended("committed"), (distinct - 1) as f64);
    assert_eq!(ended("failed"), 1.0, "broken.bin");
    let joins = s.get("package_cache_fill_joins_total");
    assert_eq!(
        joins, 3.0,
        "two on slow.bin, one on flaky.bin's second fill"
    );
    let revalidated = |r: &str| {
        s.get(&format!(
            "package_cache_revalidations_total{{result=\"{r}\"}}"
        ))
    };
    assert_eq!(
        (revalidated("updated"), revalidated("not_modified")),
        (1.0, 1.0)
    );
    assert_eq!((revalidated("failed"), revalidated("passed")), (0.0, 0.0));
    // Every MISS led a fill or a document fetch, or joined a fill.
    assert_eq!(
        s.sum("package_cache_requests_total", &[("cache", "MISS")]),
        started + joins + revalidated("updated")
    );

    // Every request the origin saw was one attempt; the dead and the
    // unresolvable mounts' one attempt each failed to connect.
    let src = format!("source=\"http://{}\"", origin.addr());
    assert_eq!(
        s.get(&format!("package_cache_upstream_attempts_total{{{src}}}")),
        origin.total_hits() as f64
    );
    let dead_src = format!("source=\"http://{dead_addr}\"");
    assert_eq!(
        s.get(&format!(
            "package_cache_upstream_attempts_total{{{dead_src}}}"
        )),
        1.0
    );
    assert_eq!(
        s.get(&format!(
            "package_cache_upstream_errors_total{{{dead_src},kind=\"connect\"}}"
        )),
        1.0
    );
    // An origin label always names its port.
    let nodns_src = format!("source=\"{unresolvable}:80\"");
    assert_eq!(
        s.get(&format!(
            "package_cache_upstream_attempts_total{{{nodns_src}}}"
        )),
        1.0
    );
    assert_eq!(
        s.get(&format!(
            "package_cache_upstream_errors_total{{{nodns_src},kind=\"connect\"}}"
        )),
        1.0,
        "a DNS error is a failure to connect"
    );
    assert_eq!(
        s.get(&format!(
            "package_cache_upstream_errors_total{{{src},kind=\"not_found\"}}"
        )),
        1.0,
        "the second 404 came from memory"
    );

    // The page shows the same numbers.
    let page = String::from_utf8(get(&format!("{admin}/")).await.body).unwrap();
    let shown = |id: &str| element(&page, id).0.parse::<f64>().unwrap();
    for (id, c) in [
        ("requests-hit", "HIT"),
        ("requests-miss", "MISS"),
        ("requests-pass", "PASS"),
        ("requests-other", "other"),
    ] {
        assert_eq!(
            shown(id),
            s.sum("package_cache_requests_total", &[("cache", c)]),
            "#{id}"
        );
    }
    assert_eq!(shown("requests-total"), t.total() as f64);
    assert_eq!(shown("requests-client-gone"), incomplete("client_gone"));
    assert_eq!(shown("requests-aborted"), incomplete("aborted"));
    assert_eq!(shown("fills-started"), started);
    assert_eq!(shown("fill-joins"), joins);
    for (id, r) in [
        ("fills-committed", "committed"),
        ("fills-not-stored", "not_stored"),
        ("fills-failed", "failed"),
        ("fills-abandoned", "abandoned"),
    ] {
        assert_eq!(shown(id), ended(r), "#{id}");
    }
    for (id, r) in [
        ("revalidations-updated", "updated"),
        ("revalidations-not-modified", "not_modified"),
        ("revalidations-failed", "failed"),
        ("revalidations-passed", "passed"),
    ] {
        assert_eq!(shown(id), revalidated(r), "#{id}");
    }
    assert_eq!(
        shown("bytes-from-cache"),
        s.sum("package_cache_served_bytes_total", &[("from", "cache")])
    );
    assert_eq!(shown("bytes-from-upstream"), upstream_bytes);
    // For the record (`--nocapture`): the exposition this adds up.
    eprintln!(
        "{}",
        String::from_utf8_lossy(&get(&format!("{admin}/metrics")).await.body)
    );
    bin.kill9().await;
}
