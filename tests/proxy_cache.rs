//! Misses stream and commit durably; hits come from disk without the upstream,
//! with the upstream's headers, Range, conditionals, HEAD and HTTP/1.0.

mod support;

use std::time::{Duration, Instant};
use support::app::{committed, source, TestApp};
use support::client::{self, bytes_of, get, get_with, sha256};
use support::origin::{Origin, Reply};

#[tokio::test]
async fn miss_streams_before_the_download_ends_then_commits_durably() {
    let body = bytes_of(256 * 1024, 1);
    // 128 KiB/s: the whole body takes about 2 s upstream.
    let origin = Origin::builder()
        .route(
            "/distfiles/a.tar.gz",
            Reply::file(body.clone()).throttle(128 * 1024),
        )
        .start()
        .await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;

    let started = Instant::now();
    let (parts, mut incoming, head_after) =
        client::open(&app.url("/distfiles/a.tar.gz"), &[]).await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["x-cache"], "MISS");
    assert_eq!(parts.headers["content-length"], body.len().to_string());
    use http_body_util::BodyExt;
    let first = loop {
        let frame = incoming.frame().await.expect("a frame").expect("no error");
        if let Ok(data) = frame.into_data() {
            if !data.is_empty() {
                break data;
            }
        }
    };
    let first_byte = started.elapsed();
    assert!(
        head_after < Duration::from_millis(500),
        "head after {head_after:?}"
    );
    assert!(
        first_byte < Duration::from_millis(500),
        "first byte after {first_byte:?}: not streamed"
    );
    assert_eq!(first[..], body[..first.len()]);
    let (rest, err) = client::read_body(incoming).await;
    assert!(err.is_none(), "{err:?}");
    assert!(
        started.elapsed() > Duration::from_millis(1500),
        "the upstream was throttled"
    );
    assert_eq!([&first[..], &rest[..]].concat(), body.to_vec());

    // Committed: the file at its URL path with the exact bytes, metadata beside
    // it, nothing left in tmp/.
    committed(&app.cache.join("distfiles/a.tar.gz")).await;
    let on_disk = tokio::fs::read(app.cache.join("distfiles/a.tar.gz"))
        .await
        .expect("entry on disk");
    assert_eq!(sha256(&on_disk), sha256(&body));
    let meta = find_meta(&app.cache);
    assert_eq!(meta.len(), 1);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta[0]).unwrap()).unwrap();
    assert_eq!(meta["sha256"], sha256(&body));
    assert_eq!(meta["size"], body.len() as u64);
    assert!(app.tmp_files().is_empty(), "{:?}", app.tmp_files());
    app.stop().await;
}

fn find_meta(cache: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for fan in std::fs::read_dir(cache.join(".package-cache/meta")).unwrap() {
        for f in std::fs::read_dir(fan.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out
}

#[tokio::test]
async fn hits_need_no_upstream_and_keep_its_headers_and_bytes() {
    let body = bytes_of(100_000, 2);
    let origin = Origin::builder()
        .route(
            "/pkg.tar.gz",
            Reply::file(body.clone())
                .header("content-encoding", "gzip")
                .header("content-type", "application/x-tar")
                .header("x-checksum-sha256", "abc")
                .header("connection", "keep-alive, x-hop")
                .header("x-hop", "secret"),
        )
        .start()
        .await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;
    let miss = get(&app.url("/pkg.tar.gz")).await;
    assert_eq!(miss.cache(), "MISS");
    assert_eq!(
        miss.body,
        body.to_vec(),
        "bytes as the upstream sent them, never decoded"
    );
    let etag = miss.header("etag").expect("upstream etag").to_string();
    committed(&app.cache.join("pkg.tar.gz")).await;
    origin.stop().await;

    let hit = get(&app.url("/pkg.tar.gz")).await;
    assert_eq!(hit.status, 200);
    assert_eq!(hit.cache(), "HIT");
    assert_eq!(hit.body, body.to_vec());
    assert_eq!(
        hit.header("etag"),
        Some(etag.as_str()),
        "the upstream's ETag, not an invented one"
    );
    assert_eq!(hit.header("content-encoding"), Some("gzip"));
    assert_eq!(hit.header("content-type"), Some("application/x-tar"));
    assert_eq!(hit.header("x-checksum-sha256"), Some("abc"));
    assert_eq!(hit.header("last-modified"), miss.header("last-modified"));
    assert_eq!(hit.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        hit.header("x-hop"),
        None,
        "headers named in Connection are hop-by-hop"
    );
    assert_eq!(hit.header("content-length"), Some("100000"));

    let head = client::head(&app.url("/pkg.tar.gz")).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some("100000"));
    assert_eq!(head.cache(), "HIT");
    app.stop().await;
}

#[tokio::test]
async fn ranges_conditionals_and_http10_on_hits_read_from_disk() {
    let body = bytes_of(300_000, 3);
    let origin = Origin::builder().file("/f.bin", body.clone()).start().await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;
    let first = get(&app.url("/f.bin")).await;
    committed(&app.cache.join("f.bin")).await;
    let etag = first.header("etag").unwrap().to_string();
    let lm = first.header("last-modified").unwrap().to_string();

    let r = get_with(&app.url("/f.bin"), &[("range", "bytes=100-199")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 100-199/300000"));
    assert_eq!(r.body, body[100..200].to_vec());
    let r = get_with(&app.url("/f.bin"), &[("range", "bytes=-10")]).await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_slice()),
        (206, &body[299_990..])
    );
    let r = get_with(&app.url("/f.bin"), &[("range", "bytes=299999-")]).await;
    assert_eq!((r.status.as_u16(), r.body.len()), (206, 1));
    let r = get_with(&app.url("/f.bin"), &[("range", "bytes=300000-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */300000"));
    let r = get_with(&app.url("/f.bin"), &[("range", "bytes=0-1,5-6")]).await;
    assert_eq!(
        (r.status.as_u16(), r.body.len()),
        (200, 300_000),
        "multiple ranges: the whole body"
    );

    let r = get_with(
        &app.url("/f.bin"),
        &[("range", "bytes=0-9"), ("if-range", &etag)],
    )
    .await;
    assert_eq!(r.status, 206, "matching If-Range");
    let r = get_with(
        &app.url("/f.bin"),
        &[("range", "bytes=0-9"), ("if-range", "\"other\"")],
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.body.len()),
        (200, 300_000),
        "stale If-Range: whole body"
    );
    let r = get_with(
        &app.url("/f.bin"),
        &[("range", "bytes=0-9"), ("if-range", &lm)],
    )
    .await;
    assert_eq!(r.status, 206, "If-Range by date");

    let r = get_with(&app.url("/f.bin"), &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let r = get_with(&app.url("/f.bin"), &[("if-none-match", "\"nope\"")]).await;
    assert_eq!(r.status, 200);
    let r = get_with(&app.url("/f.bin"), &[("if-modified-since", &lm)]).await;
    assert_eq!(r.status, 304);
    let r = get_with(
        &app.url("/f.bin"),
        &[("if-modified-since", "Sat, 01 Jan 2000 00:00:00 GMT")],
    )
    .await;
    assert_eq!(r.status, 200);

    // HTTP/1.0: no chunking, no keep-alive unless asked; the body is all there.
    let raw = client::raw(app.addr, b"GET /f.bin HTTP/1.0\r\n\r\n").await;
    let text = String::from_utf8_lossy(&raw[..200.min(raw.len())]).to_string();
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(&raw[split..], &body[..]);
    assert_eq!(origin.hits("/f.bin"), 1);
    app.stop().await;
}

#[tokio::test]
async fn range_during_a_fill_waits_for_its_bytes() {
    let body = bytes_of(200 * 1024, 4);
    let origin = Origin::builder()
        .route("/slow.bin", Reply::file(body.clone()).throttle(100 * 1024))
        .start()
        .await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;
    let url = app.url("/slow.bin");
    let whole = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The tail is not written yet: the range waits for it, then is exact.
    let r = get_with(&app.url("/slow.bin"), &[("range", "bytes=150000-150999")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.cache(), "MISS");
    assert_eq!(
        r.header("content-range"),
        Some("bytes 150000-150999/204800")
    );
    assert_eq!(r.body, body[150_000..151_000].to_vec());
    assert!(r.error.is_none());
    let w = whole.await.unwrap();
    assert_eq!(w.body, body.to_vec());
    assert_eq!(origin.hits("/slow.bin"), 1);
    app.stop().await;
}

#[tokio::test]
async fn credentials_and_queries_pass_uncached() {
    let origin = Origin::builder()
        .file("/private.bin", "secret")
        .file("/q.bin", "q")
        .start()
        .await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;
    for _ in 0..2 {
        let r = get_with(&app.url("/private.bin"), &[("authorization", "Bearer x")]).await;
        assert_eq!((r.status.as_u16(), r.cache()), (200, "PASS"));
        let r = get_with(&app.url("/private.bin"), &[("cookie", "session=1")]).await;
        assert_eq!((r.status.as_u16(), r.cache()), (200, "PASS"));
        let r = get(&app.url("/q.bin?x=%2F1&y")).await;
        assert_eq!(
            (r.status.as_u16(), r.cache(), r.body.as_slice()),
            (200, "PASS", &b"q"[..])
        );
    }
    assert_eq!(origin.hits("/private.bin"), 4);
    assert_eq!(origin.hits("/q.bin"), 2);
    let forwarded: Vec<_> = origin
        .requests()
        .into_iter()
        .filter(|r| r.path() == "/private.bin")
        .collect();
    assert!(
        forwarded
            .iter()
            .any(|r| r.headers.get("authorization").is_some()),
        "credentials are forwarded"
    );
    let q: Vec<_> = origin
        .requests()
        .into_iter()
        .filter(|r| r.path() == "/q.bin")
        .collect();
    assert_eq!(q[0].target, "/q.bin?x=%2F1&y", "query forwarded unchanged");
    assert!(!app.cache.join("private.bin").exists() && !app.cache.join("q.bin").exists());
    app.stop().await;
}

#[tokio::test]
async fn the_cache_directory_is_locked_while_served() {
    let app = TestApp::start(|c| c).await;
    let err = package_cache::store::Store::open(&app.cache)
        .await
        .err()
        .expect("second open must fail");
    assert!(err.to_string().contains("locked"), "{err}");
    let holder = format!("package-cache process {}", std::process::id());
    assert!(err.to_string().contains(&holder), "names the holder: {err}");
    app.stop().await;
}

#[tokio::test]
async fn head_on_a_miss_fills_the_entry_and_answers_headers_only() {
    let body = bytes_of(80_000, 5);
    let origin = Origin::builder()
        .file("/h.tar.gz", body.clone())
        .start()
        .await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;
    let h = client::head(&app.url("/h.tar.gz")).await;
    assert_eq!(
        (h.status.as_u16(), h.cache(), h.body.len()),
        (200, "MISS", 0)
    );
    assert_eq!(h.header("content-length"), Some("80000"));
    committed(&app.cache.join("h.tar.gz")).await;
    let g = get(&app.url("/h.tar.gz")).await;
    assert_eq!((g.cache(), g.body.len()), ("HIT", 80_000));
    assert_eq!(origin.hits("/h.tar.gz"), 1);
    app.stop().await;
}

#[tokio::test]
async fn small_entries_in_memory_follow_changes_on_disk() {
    let origin = Origin::builder().file("/s.txt", "first").start().await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;
    assert_eq!(get(&app.url("/s.txt")).await.body, b"first");
    committed(&app.cache.join("s.txt")).await;
    assert_eq!(get(&app.url("/s.txt")).await.cache(), "HIT");
    // Something replaces the file behind the server's back: a body its
    // metadata does not describe is damage (quarantined), never served.
    std::fs::write(app.cache.join("s.txt.new"), "second").unwrap();
    std::fs::rename(app.cache.join("s.txt.new"), app.cache.join("s.txt")).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = get(&app.url("/s.txt")).await;
    assert_eq!((r.cache(), r.body.as_slice()), ("MISS", &b"first"[..]));
    assert_eq!(origin.hits("/s.txt"), 2);
    committed(&app.cache.join("s.txt")).await;
    // And deletes it: the next request fetches it again.
    std::fs::remove_file(app.cache.join("s.txt")).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = get(&app.url("/s.txt")).await;
    assert_eq!((r.cache(), r.body.as_slice()), ("MISS", &b"first"[..]));
    assert_eq!(origin.hits("/s.txt"), 3);
    app.stop().await;
}
