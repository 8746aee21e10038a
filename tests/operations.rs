//! Operations: keep-alive, slowloris protection, and the real clients Portage
//! uses — wget's FETCHCOMMAND and its `-c` resume (Range) against hits and
//! against a fill still in progress.

mod support;

use std::time::Duration;
use support::app::{source, TestApp};
use support::client::{self, bytes_of, sha256};
use support::origin::{Origin, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let origin = Origin::builder()
        .file("/a", "aaa")
        .file("/b", "bbbb")
        .start()
        .await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;
    let stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    use http_body_util::BodyExt;
    for (path, want) in [
        ("/a", "aaa"),
        ("/b", "bbbb"),
        ("/a", "aaa"),
        ("/missing", ""),
    ] {
        let req = http::Request::get(path)
            .header("host", "x")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let res = sender
            .send_request(req)
            .await
            .expect("same connection still open");
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        if want.is_empty() {
            assert_eq!(status, 404);
        } else {
            assert_eq!(&body[..], want.as_bytes());
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn slowloris_and_idle_connections_are_closed() {
    let app = TestApp::start(|mut c| {
        c.server.header_timeout = Duration::from_secs(1);
        c
    })
    .await;
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /x HTTP/1.1\r\nHost: ").await.unwrap();
    let mut idle = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a half-sent head is cut off");
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "an idle connection is closed");
    assert!(started.elapsed() < Duration::from_secs(4));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portage_wget_fetch_and_resume() {
    let body = bytes_of(600 * 1024, 60);
    let origin = Origin::builder()
        .route("/distfiles/3f/pkg-1.0.tar.gz", Reply::file(body.clone()))
        .route(
            "/distfiles/aa/slow-2.0.tar.xz",
            Reply::file(body.clone()).throttle(300 * 1024),
        )
        .start()
        .await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pkg-1.0.tar.gz");
    let out_s = out.to_str().unwrap();
    let url = app.url("/distfiles/3f/pkg-1.0.tar.gz");
    // Portage's default FETCHCOMMAND.
    let (code, _, err) =
        client::wget(&["-t", "3", "-T", "60", "--passive-ftp", "-O", out_s, &url]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(sha256(&std::fs::read(&out).unwrap()), sha256(&body));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // RESUMECOMMAND against a hit: a partial file is completed with a Range request.
    std::fs::write(&out, &body[..100_000]).unwrap();
    let (code, _, err) = client::wget(&[
        "-c",
        "-t",
        "3",
        "-T",
        "60",
        "--passive-ftp",
        "-O",
        out_s,
        &url,
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("206"),
        "wget resumed with a partial response: {err}"
    );
    assert_eq!(sha256(&std::fs::read(&out).unwrap()), sha256(&body));

    // Resume while the entry is still being filled: the range waits for its bytes.
    let slow = app.url("/distfiles/aa/slow-2.0.tar.xz");
    let starter = tokio::spawn({
        let slow = slow.clone();
        async move { client::get(&slow).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out2 = dir.path().join("slow-2.0.tar.xz");
    std::fs::write(&out2, &body[..400_000]).unwrap();
    let (code, _, err) = client::wget(&[
        "-c",
        "-t",
        "3",
        "-T",
        "60",
        "-O",
        out2.to_str().unwrap(),
        &slow,
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("206"), "{err}");
    assert_eq!(sha256(&std::fs::read(&out2).unwrap()), sha256(&body));
    assert!(starter.await.unwrap().error.is_none());
    assert_eq!(origin.hits("/distfiles/aa/slow-2.0.tar.xz"), 1);
    assert!(
        origin
            .requests()
            .iter()
            .all(|r| r.headers.get("range").is_none()),
        "fills fetch whole files"
    );
    app.stop().await;
}
