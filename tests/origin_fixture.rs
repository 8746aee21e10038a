//! Self-test of the `support::origin` fixture: every `Reply` behaviour is checked on the wire
//! with a raw `TcpStream` or a plain hyper client, never through the proxy.

mod support;

use std::io;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use support::origin::{Origin, Reply};
use support::raw::{dechunk, read_body, read_head, read_to_end};
use support::tls::TlsIdentity;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// Upper bound for anything that should happen; keeps a broken fixture from hanging the suite.
const LIMIT: Duration = Duration::from_secs(10);
/// How long "nothing happens" must last to count as a stall.
const QUIET: Duration = Duration::from_millis(300);

fn payload(len: usize) -> Bytes {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

async fn within<T>(fut: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    timeout(LIMIT, fut).await.context("timed out")
}

async fn raw_request(origin: &Origin, request: &str) -> anyhow::Result<TcpStream> {
    let mut stream = within(TcpStream::connect(origin.addr())).await??;
    stream.write_all(request.as_bytes()).await?;
    Ok(stream)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: origin.test\r\n\r\n")
}

/// Sends `requests` on one hyper HTTP/1 connection over `io`; returns (status, headers, body).
async fn hyper_exchange<IO>(
    io: IO,
    requests: Vec<http::Request<Empty<Bytes>>>,
) -> anyhow::Result<Vec<(http::response::Parts, Bytes)>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let conn = tokio::spawn(conn);
    let mut responses = Vec::new();
    for request in requests {
        let response = within(sender.send_request(request)).await??;
        let (parts, body) = response.into_parts();
        responses.push((parts, within(body.collect()).await??.to_bytes()));
    }
    drop(sender);
    within(conn).await???;
    Ok(responses)
}

fn request(method: &str, uri: &str) -> anyhow::Result<http::Request<Empty<Bytes>>> {
    Ok(http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "origin.test")
        .body(Empty::new())?)
}

#[tokio::test]
async fn file_has_validators_and_keep_alive_and_head() -> anyhow::Result<()> {
    let data = payload(100_000);
    let origin = Origin::builder()
        .file("/distfiles/a.tar.gz", data.clone())
        .file("/distfiles/blob", "abc")
        .start()
        .await;
    let stream = within(TcpStream::connect(origin.addr())).await??;
    let requests = vec![
        request("GET", "/distfiles/a.tar.gz")?,
        request("HEAD", "/distfiles/a.tar.gz")?,
        request("GET", "/distfiles/blob")?,
    ];
    let responses = hyper_exchange(stream, requests).await?;

    let (parts, body) = &responses[0];
    assert_eq!(parts.status, 200);
    assert_eq!(body, &data);
    assert_eq!(parts.headers["content-length"], "100000");
    assert_eq!(parts.headers["content-type"], "application/gzip");
    let etag = parts.headers["etag"].to_str()?;
    assert_eq!(etag.len(), 18, "{etag}");
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert!(etag[1..17].bytes().all(|b| b.is_ascii_hexdigit()), "{etag}");
    httpdate::parse_http_date(parts.headers["last-modified"].to_str()?)?;

    let (head, head_body) = &responses[1];
    assert_eq!(head.headers["content-length"], "100000");
    assert_eq!(head.headers["etag"], etag);
    assert!(head_body.is_empty());
    assert_eq!(
        responses[2].0.headers["content-type"],
        "application/octet-stream"
    );

    assert_eq!(
        origin.connections(),
        1,
        "all three requests on one kept-alive connection"
    );
    assert_eq!(origin.hits("/distfiles/a.tar.gz"), 2);
    assert_eq!(origin.total_hits(), 3);
    Ok(())
}

#[tokio::test]
async fn unknown_paths_fall_back_and_requests_are_recorded_raw() -> anyhow::Result<()> {
    let origin = Origin::builder().file("/a", "a").start().await;
    let before = Instant::now();
    let mut stream = raw_request(
        &origin,
        "GET /no%20such/file?x=%2F HTTP/1.1\r\nHost: o\r\nRange: bytes=0-1\r\nX-Dup: 1\r\nX-Dup: 2\r\n\r\n",
    )
    .await?;
    let head = read_head(&mut stream, Vec::new()).await?;
    assert_eq!(head.status, 404);
    assert_eq!(head.header("content-length"), Some("14"));
    let body = read_body(&mut stream, head.rest, 14).await?;
    assert_eq!(body, b"404 Not Found\n");

    let recorded = origin.requests();
    assert_eq!(recorded.len(), 1);
    let r = &recorded[0];
    assert_eq!(r.method, http::Method::GET);
    assert_eq!(r.target, "/no%20such/file?x=%2F");
    assert_eq!(r.path(), "/no%20such/file");
    assert_eq!(r.headers["range"], "bytes=0-1");
    assert_eq!(r.headers.get_all("x-dup").iter().count(), 2);
    assert!(r.at >= before);
    assert_eq!(origin.hits("/no%20such/file"), 1);
    assert_eq!(origin.hits("/no such/file"), 0);
    assert_eq!(origin.hits("/a"), 0);

    let custom = Origin::builder().fallback(Reply::status(410)).start().await;
    let mut stream = raw_request(&custom, &get("/anything")).await?;
    assert_eq!(read_head(&mut stream, Vec::new()).await?.status, 410);
    Ok(())
}

#[tokio::test]
async fn status_redirect_and_header_overrides() -> anyhow::Result<()> {
    let origin = Origin::builder()
        .route("/x", Reply::status(500))
        .route("/r", Reply::redirect(302, "/target"))
        .route(
            "/hd",
            Reply::file("data")
                .header("content-encoding", "gzip")
                .header("x-foo", "bar")
                .header("Content-Type", "text/x-test")
                .without_header("etag"),
        )
        .route("/nc", Reply::status(304))
        .start()
        .await;
    let stream = within(TcpStream::connect(origin.addr())).await??;
    let requests = vec![
        request("GET", "/x")?,
        request("GET", "/r")?,
        request("GET", "/hd")?,
        request("GET", "/nc")?,
    ];
    let responses = hyper_exchange(stream, requests).await?;
    assert_eq!(responses[0].0.status, 500);
    assert_eq!(responses[0].1, "500 Internal Server Error\n");
    assert_eq!(responses[1].0.status, 302);
    assert_eq!(responses[1].0.headers["location"], "/target");
    let hd = &responses[2].0.headers;
    assert_eq!(hd["content-encoding"], "gzip");
    assert_eq!(hd["x-foo"], "bar");
    assert_eq!(
        hd.get_all("content-type").iter().collect::<Vec<_>>(),
        ["text/x-test"]
    );
    assert!(!hd.contains_key("etag"));
    assert_eq!(responses[2].1, "data");
    assert_eq!(responses[3].0.status, 304);
    assert!(!responses[3].0.headers.contains_key("content-length"));
    Ok(())
}

#[tokio::test]
async fn throttle_paces_the_body() -> anyhow::Result<()> {
    let data = payload(16 * 1024);
    let origin = Origin::builder()
        .route("/slow.bin", Reply::file(data.clone()).throttle(16 * 1024))
        .start()
        .await;
    let start = Instant::now();
    let mut stream = raw_request(&origin, &get("/slow.bin")).await?;
    let head = read_head(&mut stream, Vec::new()).await?;
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "head is not throttled"
    );
    let body = read_body(&mut stream, head.rest, data.len()).await?;
    let elapsed = start.elapsed();
    assert_eq!(body, data);
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed <= Duration::from_millis(3000), "{elapsed:?}");
    Ok(())
}

#[tokio::test]
async fn truncate_sends_full_length_then_fin() -> anyhow::Result<()> {
    let data = payload(50_000);
    let origin = Origin::builder()
        .route("/y", Reply::file(data.clone()).truncate_after(1000))
        .route(
            "/yt",
            Reply::file(data.clone())
                .throttle(20_000)
                .truncate_after(5000),
        )
        .start()
        .await;
    for path in ["/y", "/yt"] {
        let mut stream = raw_request(&origin, &get(path)).await?;
        let head = read_head(&mut stream, Vec::new()).await?;
        assert_eq!(head.header("content-length"), Some("50000"));
        let (body, end) = read_to_end(&mut stream, head.rest).await?;
        end.context("a clean FIN, not a reset")?;
        let n = if path == "/y" { 1000 } else { 5000 };
        assert_eq!(body, data[..n], "{path}");
    }
    Ok(())
}

#[tokio::test]
async fn reset_after_sends_prefix_then_rst() -> anyhow::Result<()> {
    let data = payload(50_000);
    let origin = Origin::builder()
        .route("/z", Reply::file(data.clone()).reset_after(2000))
        .start()
        .await;
    let mut stream = raw_request(&origin, &get("/z")).await?;
    let head = read_head(&mut stream, Vec::new()).await?;
    assert_eq!(head.header("content-length"), Some("50000"));
    let (body, end) = read_to_end(&mut stream, head.rest).await?;
    assert_eq!(body, data[..2000]);
    match end {
        Err(err) if err.kind() == io::ErrorKind::ConnectionReset => Ok(()),
        other => bail!("expected a connection reset, got {other:?}"),
    }
}

#[tokio::test]
async fn stall_after_keeps_the_socket_open_until_stop() -> anyhow::Result<()> {
    let data = payload(50_000);
    let origin = Origin::builder()
        .route("/s", Reply::file(data.clone()).stall_after(3000))
        .start()
        .await;
    let mut stream = raw_request(&origin, &get("/s")).await?;
    let head = read_head(&mut stream, Vec::new()).await?;
    let body = read_body(&mut stream, head.rest, 3000).await?;
    assert_eq!(body, data[..3000]);
    let mut byte = [0u8; 1];
    assert!(
        timeout(QUIET, stream.read(&mut byte)).await.is_err(),
        "stalled, still open"
    );

    within(origin.stop()).await?;
    let (rest, _) = read_to_end(&mut stream, Vec::new()).await?;
    assert!(rest.is_empty(), "stop closes the stalled connection");
    Ok(())
}

#[tokio::test]
async fn stall_headers_records_the_request_and_never_answers() -> anyhow::Result<()> {
    let origin = Origin::builder()
        .route("/h", Reply::stall_headers())
        .start()
        .await;
    let mut stream = raw_request(&origin, &get("/h")).await?;
    let mut byte = [0u8; 1];
    assert!(
        timeout(QUIET, stream.read(&mut byte)).await.is_err(),
        "no response"
    );
    assert_eq!(origin.hits("/h"), 1);
    drop(origin);
    let (rest, _) = read_to_end(&mut stream, Vec::new()).await?;
    assert!(rest.is_empty(), "drop closes the stalled connection");
    Ok(())
}

#[tokio::test]
async fn chunked_is_chunked_on_the_wire() -> anyhow::Result<()> {
    let data = payload(40_000);
    let origin = Origin::builder()
        .route("/c", Reply::file(data.clone()).chunked())
        .start()
        .await;
    let mut stream = raw_request(
        &origin,
        "GET /c HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n",
    )
    .await?;
    let head = read_head(&mut stream, Vec::new()).await?;
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    assert_eq!(head.header("content-length"), None);
    let (wire, end) = read_to_end(&mut stream, head.rest).await?;
    end?;
    let (body, chunks) = dechunk(&wire)?;
    assert_eq!(body, data);
    assert!(chunks >= 3, "{chunks} chunks");

    let stream = within(TcpStream::connect(origin.addr())).await??;
    let responses =
        hyper_exchange(stream, vec![request("GET", "/c")?, request("GET", "/c")?]).await?;
    assert_eq!(responses[1].1, data, "hyper decodes it, keep-alive holds");
    Ok(())
}

#[tokio::test]
async fn close_delimited_body_ends_at_fin() -> anyhow::Result<()> {
    let data = payload(30_000);
    let origin = Origin::builder()
        .route("/d", Reply::file(data.clone()).close_delimited())
        .start()
        .await;
    let mut stream = raw_request(&origin, &get("/d")).await?;
    let head = read_head(&mut stream, Vec::new()).await?;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), None);
    assert_eq!(head.header("transfer-encoding"), None);
    let (body, end) = read_to_end(&mut stream, head.rest).await?;
    end?;
    assert_eq!(body, data);
    Ok(())
}

#[tokio::test]
async fn first_byte_delay_delays_the_head() -> anyhow::Result<()> {
    let origin = Origin::builder()
        .route(
            "/fd",
            Reply::file("x").first_byte_delay(Duration::from_millis(400)),
        )
        .start()
        .await;
    let start = Instant::now();
    let mut stream = raw_request(&origin, &get("/fd")).await?;
    let mut byte = [0u8; 1];
    within(stream.read_exact(&mut byte)).await??;
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        origin.hits("/fd"),
        1,
        "recorded on arrival, before the delay"
    );
    Ok(())
}

#[tokio::test]
async fn pipelined_requests_and_http10_close() -> anyhow::Result<()> {
    let origin = Origin::builder()
        .file("/a", "aaa")
        .file("/b", "bb")
        .start()
        .await;
    let two = format!("{}{}", get("/a"), get("/b"));
    let mut stream = raw_request(&origin, &two).await?;
    let first = read_head(&mut stream, Vec::new()).await?;
    assert_eq!(&first.rest[..3], b"aaa");
    let second = read_head(&mut stream, first.rest[3..].to_vec()).await?;
    assert_eq!(second.header("content-length"), Some("2"));
    assert_eq!(read_body(&mut stream, second.rest, 2).await?, b"bb");

    let mut old = raw_request(&origin, "GET /a HTTP/1.0\r\n\r\n").await?;
    let (response, end) = read_to_end(&mut old, Vec::new()).await?;
    end?;
    assert!(
        response.ends_with(b"\r\n\r\naaa"),
        "HTTP/1.0 gets one response, then FIN"
    );
    assert_eq!(origin.hits("/a"), 2);
    Ok(())
}

#[tokio::test]
async fn stop_closes_connections_and_refuses_new_ones() -> anyhow::Result<()> {
    let origin = Origin::builder().file("/a", "a").start().await;
    let mut idle = raw_request(&origin, &get("/a")).await?;
    let head = read_head(&mut idle, Vec::new()).await?;
    assert_eq!(read_body(&mut idle, head.rest, 1).await?, b"a");

    within(origin.stop()).await?;
    let (rest, _) = read_to_end(&mut idle, Vec::new()).await?;
    assert!(rest.is_empty());
    let refused = TcpStream::connect(origin.addr()).await;
    assert_eq!(
        refused.err().map(|e| e.kind()),
        Some(io::ErrorKind::ConnectionRefused)
    );
    within(origin.stop()).await?;
    assert_eq!(origin.hits("/a"), 1, "records survive stop");
    Ok(())
}

#[tokio::test]
async fn drop_stops_everything() -> anyhow::Result<()> {
    let origin = Origin::builder()
        .route("/s", Reply::file(payload(10)).stall_after(5))
        .start()
        .await;
    let addr = origin.addr();
    let mut stalled = raw_request(&origin, &get("/s")).await?;
    read_head(&mut stalled, Vec::new()).await?;
    drop(origin);
    let (_, _end) = read_to_end(&mut stalled, Vec::new()).await?;
    within(async {
        // Drop cannot wait, so the listener closes on the accept task's next poll.
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await?;
    Ok(())
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    name: &str,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes())?)?;
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = within(TcpStream::connect(addr)).await??;
    Ok(within(connector.connect(ServerName::try_from(name.to_string())?, tcp)).await??)
}

#[tokio::test]
async fn tls_serves_https_trusted_via_ca_pem() -> anyhow::Result<()> {
    let data = payload(70_000);
    let identity = TlsIdentity::generate();
    let origin = Origin::builder()
        .file("/a.bin", data.clone())
        .route("/y", Reply::file(data.clone()).truncate_after(10))
        .tls(identity.clone())
        .start()
        .await;
    assert!(
        origin.url().starts_with("https://127.0.0.1:"),
        "{}",
        origin.url()
    );
    for name in ["localhost", "127.0.0.1"] {
        let tls = tls_connect(origin.addr(), &identity.ca_pem(), name).await?;
        let responses = hyper_exchange(
            tls,
            vec![request("GET", "/a.bin")?, request("HEAD", "/a.bin")?],
        )
        .await?;
        assert_eq!(responses[0].1, data, "{name}");
        assert_eq!(responses[1].0.headers["content-length"], "70000");
    }
    let mut tls = tls_connect(origin.addr(), &identity.ca_pem(), "localhost").await?;
    tls.write_all(get("/y").as_bytes()).await?;
    let head = read_head(&mut tls, Vec::new()).await?;
    assert_eq!(head.header("content-length"), Some("70000"));
    let (body, _) = read_to_end(&mut tls, head.rest).await?;
    assert_eq!(body, data[..10]);

    let stranger = TlsIdentity::generate();
    assert!(
        tls_connect(origin.addr(), &stranger.ca_pem(), "localhost")
            .await
            .is_err(),
        "another CA is not trusted"
    );
    let via_helper = tokio_rustls::TlsConnector::from(identity.client_config());
    let tcp = within(TcpStream::connect(origin.addr())).await??;
    within(via_helper.connect(ServerName::try_from("localhost")?, tcp)).await??;
    assert_eq!(origin.hits("/a.bin"), 4);
    Ok(())
}
