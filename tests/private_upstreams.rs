//! Private upstreams through the real binary: a mount's credentials (a
//! `--mirror-auth` file, or the userinfo of its `--mirror` URL) reach that
//! mount's origin and nothing else — not a files host on another origin, not
//! another origin after a redirect — SIGHUP picks up a changed file, what
//! they fetch is cached and served as usual, and the secret is in no log
//! line and no file of the cache.

mod support;

use base64::Engine;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use support::app::Binary;
use support::client::{bytes_of, curl, sha256};
use support::origin::{Origin, Reply};

/// `(status, body)` of `url`, by curl.
async fn fetch(url: &str) -> (u16, Vec<u8>) {
    let (code, out, err) = curl(&["-sS", "-w", "\n%{http_code}", url]).await;
    assert_eq!(code, 0, "{err}");
    let split = out.iter().rposition(|b| *b == b'\n').expect("status line");
    let status = String::from_utf8_lossy(&out[split + 1..]).parse().unwrap();
    (status, out[..split].to_vec())
}

async fn wait_for_log(app: &Binary, text: &str) {
    for _ in 0..200 {
        if app.log_lines().iter().any(|l| l.contains(text)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no log line with {text:?}: {:?}", app.log_lines());
}

/// Fails if any file under `dir` or any log line of `app` holds one of `secrets`.
fn assert_nowhere(app: &Binary, dir: &Path, secrets: &[&str]) {
    for line in app.log_lines() {
        for secret in secrets {
            assert!(!line.contains(secret), "logged: {line}");
        }
    }
    let mut stack = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&path).unwrap();
            for secret in secrets {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{} holds a secret",
                    path.display()
                );
            }
        }
    }
    assert!(files > 0, "the cache holds files");
}

fn basic(user_password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_password)
    )
}

#[tokio::test]
async fn a_mirror_auth_file_reaches_only_its_origin_and_sighup_reloads_it() {
    const OLD: &str = "tok-one-SECRETA";
    const NEW: &str = "tok-two-SECRETB";
    let wheel = bytes_of(30_000, 91);
    let relative = bytes_of(20_000, 92);
    let files = Origin::builder()
        .file("/packages/demo-1.0-py3-none-any.whl", wheel.clone())
        .bind(SocketAddr::from(([127, 0, 0, 2], 0)))
        .start()
        .await;
    let elsewhere = Origin::builder()
        .file("/landed.tgz", "landed")
        .start()
        .await;
    let page = format!(
        "<!DOCTYPE html><html><body>\n\
         <a href=\"{}#sha256={}\">demo-1.0-py3-none-any.whl</a>\n\
         <a href=\"../../packages/demo-1.1.tar.gz#sha256={}\">demo-1.1.tar.gz</a>\n\
         </body></html>\n",
        files.url_for("/packages/demo-1.0-py3-none-any.whl"),
        sha256(&wheel),
        sha256(&relative),
    );
    let private = Origin::builder()
        .require_authorization(&format!("Bearer {NEW}"))
        .route(
            "/simple/demo/",
            Reply::file(page).header("content-type", "text/html"),
        )
        .file("/packages/demo-1.1.tar.gz", relative.clone())
        .route(
            "/redir.tgz",
            Reply::redirect(302, &elsewhere.url_for("/landed.tgz")),
        )
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("pypi.token");
    std::fs::write(&token, format!("{OLD}\n")).unwrap();
    let cache = dir.path().join("cache");
    let mirror = format!("pypi={}/", private.url());
    let files_host = format!("pypi={}", files.url());
    let auth = format!("pypi={}", token.display());
    let app = Binary::start(&[
        "--cache",
        cache.to_str().unwrap(),
        "--mirror",
        &mirror,
        "--files-host",
        &files_host,
        "--mirror-auth",
        &auth,
        "--allow-redirect-host",
        "127.0.0.1",
    ])
    .await;

    // The token in the file is not the one the upstream wants yet.
    let (status, _) = fetch(&app.url("/pypi/simple/demo/")).await;
    assert_eq!(status, 401, "the upstream's answer is passed on");
    let sent = private.requests();
    assert_eq!(
        sent[0].headers.get("authorization").unwrap(),
        &format!("Bearer {OLD}")[..]
    );

    // A changed file, then SIGHUP: the new token is used.
    std::fs::write(&token, format!("{NEW}\n")).unwrap();
    app.signal(rustix::process::Signal::HUP);
    wait_for_log(&app, "upstream credentials reloaded").await;
    let (status, body) = fetch(&app.url("/pypi/simple/demo/")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let body = String::from_utf8(body).unwrap();
    let file_link = format!(
        "/pypi/files/{}/packages/demo-1.0-py3-none-any.whl",
        files.addr()
    );
    assert!(body.contains(&file_link), "{body}");
    assert!(body.contains("/pypi/packages/demo-1.1.tar.gz"), "{body}");

    // A file on the files host (another origin): fetched, verified, cached,
    // and the token never went there.
    let (status, got) = fetch(&app.url(&file_link)).await;
    assert_eq!((status, sha256(&got)), (200, sha256(&wheel)));
    assert!(files.total_hits() >= 1);
    for r in files.requests() {
        assert!(r.headers.get("authorization").is_none(), "{r:?}");
    }
    // A file on the private origin itself: fetched with the token, cached,
    // then served from the cache like any other.
    for _ in 0..2 {
        let (status, got) = fetch(&app.url("/pypi/packages/demo-1.1.tar.gz")).await;
        assert_eq!((status, sha256(&got)), (200, sha256(&relative)));
        support::app::committed(&cache.join(".package-cache-mounts/pypi/packages/demo-1.1.tar.gz"))
            .await;
    }
    assert_eq!(private.hits("/packages/demo-1.1.tar.gz"), 1, "then a hit");
    // A redirect to another origin does not carry the token.
    let (status, got) = fetch(&app.url("/pypi/redir.tgz")).await;
    assert_eq!((status, &got[..]), (200, &b"landed"[..]));
    let redirected = private
        .requests()
        .into_iter()
        .find(|r| r.path() == "/redir.tgz")
        .expect("asked the private origin");
    assert!(redirected.headers.get("authorization").is_some());
    let landed = elsewhere.requests();
    assert_eq!(landed.len(), 1);
    assert!(landed[0].headers.get("authorization").is_none());

    // A broken file on SIGHUP keeps the token in use.
    std::fs::write(&token, "").unwrap();
    app.signal(rustix::process::Signal::HUP);
    wait_for_log(&app, "upstream credentials not reloaded").await;
    let (status, _) = fetch(&app.url("/pypi/packages/demo-1.2.tar.gz")).await;
    assert_eq!(status, 404);
    let last = private.requests().pop().unwrap();
    assert_eq!(
        last.headers.get("authorization").unwrap(),
        &format!("Bearer {NEW}")[..]
    );

    assert_nowhere(&app, &cache, &[OLD, NEW]);
    app.kill9().await;
}

#[tokio::test]
async fn userinfo_in_a_mirror_url_is_the_credential_and_appears_nowhere() {
    const PASSWORD: &str = "s3cr3t-PASS";
    let body = bytes_of(40_000, 93);
    let private = Origin::builder()
        .require_authorization(&basic(&format!("alice:{PASSWORD}")))
        .file("/dist/pkg-1.0.tgz", body.clone())
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mirror = format!("tarballs=http://alice:{PASSWORD}@{}/dist/", private.addr());
    let source = format!("http://alice:{PASSWORD}@{}/dist", private.addr());
    let app = Binary::start(&[
        "--cache",
        cache.to_str().unwrap(),
        "--mirror",
        &mirror,
        "--source",
        &source,
    ])
    .await;
    for _ in 0..2 {
        let (status, got) = fetch(&app.url("/tarballs/pkg-1.0.tgz")).await;
        assert_eq!((status, sha256(&got)), (200, sha256(&body)));
        support::app::committed(&cache.join(".package-cache-mounts/tarballs/pkg-1.0.tgz")).await;
    }
    assert_eq!(private.hits("/dist/pkg-1.0.tgz"), 1, "cached, then a hit");
    // `--source` takes userinfo the same way.
    let (status, got) = fetch(&app.url("/pkg-1.0.tgz")).await;
    assert_eq!((status, sha256(&got)), (200, sha256(&body)));
    let (status, _) = fetch(&app.url("/tarballs/missing.tgz")).await;
    assert_eq!(status, 404, "failures are logged too, without the password");
    wait_for_log(&app, "missing.tgz").await;
    let encoded = basic(&format!("alice:{PASSWORD}"));
    assert_nowhere(&app, &cache, &[PASSWORD, &encoded[6..]]);
    app.kill9().await;

    // A bad --mirror value is refused without quoting the password, and a
    // good URL with userinfo is not a "bad host".
    let stderr = support::app::refused_start(&[
        "--cache",
        cache.to_str().unwrap(),
        "--mirror",
        &format!("Bad=http://alice:{PASSWORD}@h/"),
    ])
    .await;
    assert!(stderr.contains("***@h"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    let stderr = support::app::refused_start(&[
        "--cache",
        cache.to_str().unwrap(),
        "--mirror",
        &format!("x=ftp://alice:{PASSWORD}@h/"),
    ])
    .await;
    assert!(
        !stderr.contains(PASSWORD) && !stderr.contains("bad host"),
        "{stderr}"
    );
}
