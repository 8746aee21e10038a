//! The optional TLS listener: the real binary serves the same cache over
//! HTTPS with a certificate from PEM files, real curl verifies it against its
//! CA, SIGHUP swaps in a renewed certificate without a restart, and a broken
//! renewal keeps the one in use.

mod support;

use std::path::Path;
use std::time::Duration;
use support::app::Binary;
use support::client::{bytes_of, curl, sha256};
use support::origin::Origin;
use support::tls::TlsIdentity;

async fn fetch(port: u16, path: &str, ca: &Path) -> (i32, Vec<u8>, String) {
    let url = format!("https://localhost:{port}{path}");
    let resolve = format!("localhost:{port}:127.0.0.1");
    curl(&[
        "-sS",
        "--fail",
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &resolve,
        &url,
    ])
    .await
}

async fn wait_for_log(app: &Binary, text: &str) {
    for _ in 0..100 {
        if app.log_lines().iter().any(|l| l.contains(text)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no log line with {text:?}");
}

#[tokio::test]
async fn https_serves_the_cache_and_sighup_renews_the_certificate() {
    let body = bytes_of(300_000, 3);
    let origin = Origin::builder()
        .file("/distfiles/a.tgz", body.clone())
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let origin_url = origin.url();
    let first = TlsIdentity::generate();
    let (tls_args, ca1) = first.write_listener_files(dir.path(), "first");
    let cache = dir.path().join("cache");
    let mut args = vec!["--source", &origin_url, "--cache", cache.to_str().unwrap()];
    args.extend(tls_args.iter().map(String::as_str));
    let app = Binary::start(&args).await;
    let port = app.tls_addr().port();
    let (code, got, err) = fetch(port, "/distfiles/a.tgz", &ca1).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(sha256(&got), sha256(&body));
    // The same cache behind both listeners: the plain one hits.
    let (code, _, _) = curl(&["-sS", "--fail", &app.url("/distfiles/a.tgz")]).await;
    assert_eq!(code, 0);
    assert_eq!(origin.hits("/distfiles/a.tgz"), 1);

    // Renewal: a new certificate from another CA, then SIGHUP.
    let second = TlsIdentity::generate();
    let (_, ca2) = second.write_listener_files(dir.path(), "second");
    app.signal(rustix::process::Signal::HUP);
    wait_for_log(&app, "TLS certificate reloaded").await;
    let (code, got, err) = fetch(port, "/distfiles/a.tgz", &ca2).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(got.len(), body.len());
    // Both test CAs have the same name, so OpenSSL's complaint is about the
    // signature rather than the issuer; either way it must refuse.
    let (code, _, _) = fetch(port, "/distfiles/a.tgz", &ca1).await;
    assert_ne!(code, 0, "the old CA no longer verifies the new certificate");

    // A broken renewal keeps the certificate in use.
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    app.signal(rustix::process::Signal::HUP);
    wait_for_log(&app, "TLS certificate not reloaded").await;
    let (code, _, err) = fetch(port, "/distfiles/a.tgz", &ca2).await;
    assert_eq!(code, 0, "{err}");
    app.kill9().await;
}

#[tokio::test]
async fn a_bad_certificate_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "garbage").unwrap();
    let cache = dir.path().join("c");
    let cert = cert.to_str().unwrap();
    let stderr = support::app::refused_start(&[
        "--source",
        "http://127.0.0.1:9/",
        "--cache",
        cache.to_str().unwrap(),
        "--tls-port",
        "0",
        "--tls-cert",
        cert,
        "--tls-key",
        cert,
    ])
    .await;
    assert!(stderr.contains("loading the TLS certificate"), "{stderr}");
}
