//! A failed or truncated fetch is never a good file: readers' responses end
//! detectably, nothing is committed, the next request fetches afresh; crash
//! leftovers are removed at start-up; committed entries survive restarts.

mod support;

use std::time::{Duration, Instant};
use support::app::{committed, source, tmp_files, Binary, TestApp};
use support::client::{self, bytes_of, get, sha256};
use support::origin::{Origin, Reply};

async fn assert_nothing_committed(app: &TestApp, rel: &str) {
    // Give the fill task time to notice and clean up.
    for _ in 0..100 {
        if app.tmp_files().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!app.cache.join(rel).exists(), "{rel} must not be committed");
    assert!(
        app.tmp_files().is_empty(),
        "temporary files left: {:?}",
        app.tmp_files()
    );
}

#[tokio::test]
async fn upstream_closing_early_is_a_failed_download_everywhere() {
    let body = bytes_of(200_000, 20);
    let origin = Origin::builder()
        .route("/fin.bin", Reply::file(body.clone()).truncate_after(50_000))
        .route("/rst.bin", Reply::file(body.clone()).reset_after(50_000))
        .route(
            "/chunked.bin",
            Reply::file(body.clone()).chunked().truncate_after(50_000),
        )
        .route(
            "/close.bin",
            Reply::file(body.clone())
                .close_delimited()
                .reset_after(50_000),
        )
        .start()
        .await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;
    for path in ["/fin.bin", "/rst.bin", "/chunked.bin", "/close.bin"] {
        let got = get(&app.url(path)).await;
        assert_eq!(got.status, 200, "{path}: the head was already sent");
        assert!(
            got.error.is_some(),
            "{path}: the body must end uncleanly, got {} bytes cleanly",
            got.body.len()
        );
        assert!(got.body.len() < body.len(), "{path}");
        assert_eq!(
            &got.body[..],
            &body[..got.body.len()],
            "{path}: what arrived is a true prefix"
        );
        assert_nothing_committed(&app, &path[1..]).await;
    }
    // curl sees the failure too (18: partial file; 56: receive failure).
    let (code, _, _) = client::curl(&["-sS", "-o", "/dev/null", &app.url("/fin.bin")]).await;
    assert!(code == 18 || code == 56, "curl exit {code}");
    assert_eq!(
        origin.hits("/fin.bin"),
        2,
        "the next request fetched afresh"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_clean_close_delimited_body_is_committed() {
    let body = bytes_of(70_000, 21);
    let origin = Origin::builder()
        .route("/close.bin", Reply::file(body.clone()).close_delimited())
        .route("/chunked.bin", Reply::file(body.clone()).chunked())
        .start()
        .await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;
    for path in ["/close.bin", "/chunked.bin"] {
        let got = get(&app.url(path)).await;
        assert!(got.error.is_none(), "{path}: {:?}", got.error);
        assert_eq!(got.body, body.to_vec());
        committed(&app.cache.join(&path[1..])).await;
        let hit = get(&app.url(path)).await;
        assert_eq!((hit.cache(), hit.body.len()), ("HIT", body.len()), "{path}");
        assert_eq!(hit.header("content-length"), Some("70000"));
    }
    app.stop().await;
}

#[tokio::test]
async fn a_stalled_upstream_fails_after_the_idle_timeout_not_a_deadline() {
    let body = bytes_of(100_000, 22);
    let origin = Origin::builder()
        .route("/stall.bin", Reply::file(body.clone()).stall_after(10_000))
        // 40 KB/s for 100 KB: 2.5 s in all, longer than the 1 s idle timeout.
        .route("/slow.bin", Reply::file(body.clone()).throttle(40_000))
        .start()
        .await;
    let app = TestApp::start(|mut c| {
        c.upstream.idle_timeout = Duration::from_secs(1);
        source(c, &origin.url())
    })
    .await;
    let started = Instant::now();
    let got = get(&app.url("/stall.bin")).await;
    assert!(got.error.is_some());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stall detected by the idle timeout"
    );
    assert_nothing_committed(&app, "stall.bin").await;

    let got = get(&app.url("/slow.bin")).await;
    assert!(
        got.error.is_none(),
        "a slow but moving download is not timed out: {:?}",
        got.error
    );
    assert_eq!(got.body, body.to_vec());
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_takes_nothing_is_dropped_while_the_fill_goes_on() {
    let body = bytes_of(32 * 1024 * 1024, 23);
    let origin = Origin::builder()
        .file("/blob.bin", body.clone())
        .start()
        .await;
    let app = TestApp::start(|mut c| {
        c.server.client_timeout = Duration::from_secs(1);
        source(c, &origin.url())
    })
    .await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stuck = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stuck
        .write_all(b"GET /blob.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The fill finished despite the stuck reader.
    assert!(app.cache.join("blob.bin").exists(), "fill committed");
    // And the stuck connection was closed by the proxy: draining it ends short.
    let mut got = Vec::new();
    let drained = tokio::time::timeout(Duration::from_secs(10), stuck.read_to_end(&mut got)).await;
    assert!(drained.is_ok(), "the proxy closed the idle client");
    assert!(
        got.len() < body.len(),
        "client was cut off ({} bytes)",
        got.len()
    );
    app.stop().await;
}

#[tokio::test]
async fn past_the_connection_limit_new_clients_get_503() {
    let origin = Origin::builder().file("/x", "x").start().await;
    let app = TestApp::start(|mut c| {
        c.server.max_connections = 2;
        source(c, &origin.url())
    })
    .await;
    let _a = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let raw = client::raw(app.addr, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(
        client::raw_status(&raw),
        503,
        "{}",
        String::from_utf8_lossy(&raw)
    );
    drop((_a, _b));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(&app.url("/x")).await.status, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_fill_leaves_no_partial_entry_and_restart_refetches() {
    let body = bytes_of(400 * 1024, 24);
    let origin = Origin::builder()
        .route("/crash.bin", Reply::file(body.clone()).throttle(100 * 1024))
        .file("/done.bin", bytes_of(5000, 25))
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let args = [
        "--source",
        &origin.url(),
        "--cache",
        cache.to_str().unwrap(),
    ];
    let bin = Binary::start(&args).await;
    let done = get(&bin.url("/done.bin")).await;
    assert_eq!(done.status, 200);
    committed(&cache.join("done.bin")).await;
    let url = bin.url("/crash.bin");
    let reader = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(tmp_files(&cache).len(), 1, "a fill is in progress");
    bin.kill9().await;
    let cut = reader.await.unwrap();
    assert!(cut.error.is_some(), "the reader saw the crash");
    assert!(!cache.join("crash.bin").exists());

    let bin = Binary::start(&args).await;
    assert!(
        tmp_files(&cache).is_empty(),
        "crash leftovers removed at start-up"
    );
    let again = get(&bin.url("/crash.bin")).await;
    assert!(again.error.is_none());
    assert_eq!(sha256(&again.body), sha256(&body));
    assert_eq!(
        origin.hits("/crash.bin"),
        2,
        "fetched afresh after the crash"
    );
    origin.stop().await;
    let kept = get(&bin.url("/done.bin")).await;
    assert_eq!(
        (kept.status.as_u16(), kept.cache()),
        (200, "HIT"),
        "committed entries survive a crash"
    );
    bin.kill9().await;
}
