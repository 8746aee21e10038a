//! Hostile paths get a 4xx and never touch anything outside the cache or the
//! proxy's own state; names round-trip exactly; `a` and `a/b` never clash.

mod support;

use support::app::{committed, source, TestApp};
use support::client::{self, get, raw, raw_status};
use support::origin::Origin;

fn snapshot(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn hostile_requests_get_4xx_and_touch_nothing() {
    let origin = Origin::builder()
        .fallback(support::origin::Reply::file("upstream"))
        .start()
        .await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "secret").unwrap();
    let app = TestApp::start(|c| source(c, &origin.url())).await;
    let before = snapshot(&app.cache);
    let long_path = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(5000));
    let long_header = format!(
        "GET /f HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(600 * 1024)
    );
    let secret = outside.path().join("secret");
    let abs_escape = format!(
        "GET /../../../../../..{} HTTP/1.1\r\nHost: x\r\n\r\n",
        secret.display()
    );
    let cases: Vec<(&str, String)> = vec![
        (
            "dotdot",
            "GET /../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        ),
        (
            "dotdot deep",
            "GET /a/b/../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        ),
        ("escape to a real file", abs_escape),
        (
            "encoded dotdot",
            "GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        ),
        (
            "encoded dotdot upper",
            "GET /a/%2E%2E/x HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        ),
        (
            "encoded slash",
            "GET /a%2fb HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        ),
        (
            "encoded slash dotdot",
            "GET /..%2f..%2fetc%2fpasswd HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        ),
        (
            "backslash",
            "GET /a\\..\\b HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        ),
        (
            "encoded backslash",
            "GET /a%5c..%5cb HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        ),
        ("nul", "GET /a%00b HTTP/1.1\r\nHost: x\r\n\r\n".into()),
        (
            "double slash",
            "GET //etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        ),
        (
            "state dir",
            "GET /.package-cache/lock HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        ),
        (
            "state tmp listing",
            "GET /.package-cache/tmp/ HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        ),
        (
            "encoded state dir",
            "GET /%2Epackage-cache/meta HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        ),
        (
            "hosts dir",
            "GET /.package-cache-hosts/x/y HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        ),
        ("long path", long_path),
        ("long header", long_header),
        (
            "post",
            "POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc".into(),
        ),
        (
            "put",
            "PUT /f HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".into(),
        ),
        ("delete", "DELETE /f HTTP/1.1\r\nHost: x\r\n\r\n".into()),
        ("options", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n".into()),
        ("garbage", "\x01\x02 nonsense\r\n\r\n".into()),
    ];
    for (name, request) in &cases {
        let response = raw(app.addr, request.as_bytes()).await;
        let status = raw_status(&response);
        assert!(
            (400..500).contains(&status),
            "{name}: got {status}: {}",
            String::from_utf8_lossy(&response[..response.len().min(200)])
        );
        assert!(
            !String::from_utf8_lossy(&response).contains("secret"),
            "{name}"
        );
    }
    assert_eq!(
        origin.total_hits(),
        0,
        "no hostile request reached the upstream"
    );
    assert_eq!(snapshot(&app.cache), before, "nothing created in the cache");
    app.stop().await;
}

#[tokio::test]
async fn names_round_trip_with_their_encoding() {
    let origin = Origin::builder()
        .file("/x%2Bcpu.whl", "plus")
        .file("/a%20b.tgz", "space")
        .file("/%C3%A9.tgz", "accent")
        .start()
        .await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;
    let cases = [
        ("/x%2Bcpu.whl", "x+cpu.whl", "plus"),
        ("/a%20b.tgz", "a b.tgz", "space"),
        ("/%C3%A9.tgz", "é.tgz", "accent"),
    ];
    for (path, file, body) in cases {
        let (code, out, err) = client::curl(&["-sS", "-f", &app.url(path)]).await;
        assert_eq!(
            (code, out.as_slice()),
            (0, body.as_bytes()),
            "{path}: {err}"
        );
        assert_eq!(
            origin.hits(path),
            1,
            "{path}: the upstream got the original encoding"
        );
        let stored = app.cache.join(file);
        committed(&stored).await;
        assert_eq!(std::fs::read(&stored).unwrap(), body.as_bytes(), "{file}");
        let hit = get(&app.url(path)).await;
        assert_eq!((hit.cache(), hit.body.as_slice()), ("HIT", body.as_bytes()));
    }
    app.stop().await;
}

#[tokio::test]
async fn a_file_and_a_directory_of_the_same_name_never_clash() {
    let origin = Origin::builder()
        .file("/a", "file a")
        .file("/a/b", "file a/b")
        .file("/c/d", "file c/d")
        .file("/c", "file c")
        .start()
        .await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;
    assert_eq!(get(&app.url("/a")).await.cache(), "MISS");
    committed(&app.cache.join("a")).await;
    for _ in 0..2 {
        let r = get(&app.url("/a/b")).await;
        assert_eq!(
            (r.status.as_u16(), r.cache(), r.body.as_slice()),
            (200, "PASS", &b"file a/b"[..])
        );
    }
    assert_eq!(get(&app.url("/c/d")).await.cache(), "MISS");
    committed(&app.cache.join("c/d")).await;
    let r = get(&app.url("/c")).await;
    assert_eq!(
        (r.status.as_u16(), r.cache(), r.body.as_slice()),
        (200, "PASS", &b"file c"[..])
    );
    assert_eq!(get(&app.url("/a")).await.cache(), "HIT");
    assert_eq!(get(&app.url("/c/d")).await.cache(), "HIT");
    app.stop().await;
}

#[tokio::test]
async fn a_failed_miss_leaves_no_directories() {
    let origin = Origin::builder().start().await;
    let app = TestApp::start(|c| source(c, &origin.url())).await;
    let before = snapshot(&app.cache);
    assert_eq!(get(&app.url("/deep/er/missing.tgz")).await.status, 404);
    assert_eq!(
        raw_status(
            &raw(
                app.addr,
                b"GET /victim.bin/anything HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            .await
        ),
        404
    );
    assert_eq!(snapshot(&app.cache), before);
    app.stop().await;
}
