//! Mounts (`--mirror NAME=URL`) against real upstreams: index documents are
//! kept for the TTL whatever the client's Cache-Control, revalidated once for
//! many clients, served stale when the upstream is gone; 404s are remembered;
//! no-cache patterns and HTML answers for files are never stored; PyPI pages
//! are rewritten and their digests enforced; RubyGems answers `HEAD /` and
//! checks `.gem` files against `/info`.

mod support;

use package_cache::config::{Config, Profile};
use std::time::Duration;
use support::app::TestApp;
use support::client::{bytes_of, curl, get, get_with, head, sha256};
use support::origin::{Origin, Reply};

fn mount(c: Config, name: &str, profile: Profile, url: &str) -> Config {
    c.with_mount(name, profile, url).expect("valid mount")
}

#[tokio::test]
async fn documents_are_kept_for_the_ttl_then_revalidated_once_for_many_clients() {
    let origin = Origin::builder()
        .route(
            "/versions",
            Reply::file("created_at: x\n---\na 1.0 abc\n")
                .first_byte_delay(Duration::from_millis(300)),
        )
        .start()
        .await;
    let app = TestApp::start(|mut c| {
        c.policy.index_ttl = Duration::from_secs(1);
        mount(c, "rubygems", Profile::Rubygems, &origin.url())
    })
    .await;
    let url = app.url("/rubygems/versions");
    let first = get(&url).await;
    assert_eq!((first.status.as_u16(), first.cache()), (200, "MISS"));
    assert_eq!(first.header("etag"), Some(&*origin_etag(&first.body)));
    // pip and bundler send max-age=0; within the TTL it changes nothing.
    let again = get_with(&url, &[("cache-control", "max-age=0")]).await;
    assert_eq!(
        (again.cache(), again.body.clone()),
        ("HIT", first.body.clone())
    );
    assert_eq!(origin.hits("/versions"), 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    for c in clients {
        let got = c.await.unwrap();
        assert_eq!(
            (got.status.as_u16(), got.body.clone()),
            (200, first.body.clone())
        );
    }
    assert_eq!(
        origin.hits("/versions"),
        2,
        "eight clients, one revalidation"
    );
    let conditional = origin.requests().into_iter().last().unwrap();
    assert_eq!(
        conditional
            .headers
            .get("if-none-match")
            .and_then(|v| v.to_str().ok()),
        first.header("etag"),
        "revalidation is conditional"
    );
    app.stop().await;
}

/// The ETag `Reply::file` gives a body (the upstream's, passed through unchanged).
fn origin_etag(body: &[u8]) -> String {
    format!("\"{}\"", &sha256(body)[..16])
}

#[tokio::test]
async fn a_stale_document_is_served_when_the_upstream_is_gone() {
    let origin = Origin::builder()
        .file(
            "/distfiles/layout.conf",
            "[structure]\n0=filename-hash BLAKE2B 8\n",
        )
        .start()
        .await;
    let app = TestApp::start(|mut c| {
        c.policy.index_ttl = Duration::from_secs(1);
        mount(c, "gentoo", Profile::Gentoo, &origin.url())
    })
    .await;
    let url = app.url("/gentoo/distfiles/layout.conf");
    let fresh = get(&url).await;
    assert_eq!(
        (fresh.status.as_u16(), fresh.header("warning")),
        (200, None)
    );
    origin.stop().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stale = get(&url).await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, fresh.body);
    assert!(
        stale.header("warning").unwrap().starts_with("111 "),
        "{:?}",
        stale.headers
    );
    let age: u64 = stale.header("age").unwrap().parse().unwrap();
    assert!(age >= 1, "age {age}");
    app.stop().await;
}

#[tokio::test]
async fn a_missing_file_is_asked_for_once_per_negative_ttl() {
    let origin = Origin::builder().start().await;
    let app = TestApp::start(|mut c| {
        c.policy.negative_ttl = Duration::from_secs(1);
        mount(c, "gentoo", Profile::Gentoo, &origin.url())
    })
    .await;
    let url = app.url("/gentoo/distfiles/ab/missing.tar.gz");
    let storm: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    for c in storm {
        assert_eq!(c.await.unwrap().status, 404);
    }
    for _ in 0..5 {
        assert_eq!(get(&url).await.status, 404);
    }
    let asked = origin.hits("/distfiles/ab/missing.tar.gz");
    assert!(
        asked <= 2,
        "a storm of 25 requests asked upstream {asked} times"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(&url).await.status, 404);
    assert_eq!(
        origin.hits("/distfiles/ab/missing.tar.gz"),
        asked + 1,
        "asked again after the TTL"
    );
    app.stop().await;
}

#[tokio::test]
async fn no_cache_patterns_and_html_answers_are_never_stored() {
    let body = bytes_of(10_000, 7);
    let origin = Origin::builder()
        .file("/private/secret.tgz", body.clone())
        .file("/public/ok.tgz", body.clone())
        .route(
            "/public/portal.tgz",
            Reply::file("<html><body>Please log in</body></html>")
                .header("content-type", "text/html; charset=utf-8"),
        )
        .start()
        .await;
    let app = TestApp::start(|mut c| {
        c.policy.no_cache = vec!["/m/private/**".into()];
        mount(c, "m", Profile::Generic, &origin.url())
    })
    .await;
    for _ in 0..2 {
        let got = get(&app.url("/m/private/secret.tgz")).await;
        assert_eq!((got.status.as_u16(), got.cache()), (200, "PASS"));
        assert_eq!(got.body, body.to_vec());
        let portal = get(&app.url("/m/public/portal.tgz")).await;
        assert_eq!(portal.status, 200);
        assert_ne!(portal.cache(), "HIT");
    }
    assert_eq!(origin.hits("/private/secret.tgz"), 2);
    assert_eq!(origin.hits("/public/portal.tgz"), 2);
    let ok = get(&app.url("/m/public/ok.tgz")).await;
    assert_eq!(ok.cache(), "MISS");
    let mounted = app.cache.join(".package-cache-mounts/m/public");
    support::app::committed(&mounted.join("ok.tgz")).await;
    assert!(!mounted.join("portal.tgz").exists());
    assert!(!app.cache.join(".package-cache-mounts/m/private").exists());
    app.stop().await;
}

#[tokio::test]
async fn rubygems_answers_head_root_itself_and_checks_gems_against_info() {
    let good = bytes_of(30_000, 1);
    let platform = bytes_of(20_000, 2);
    let tampered = bytes_of(25_000, 3);
    let info = format!(
        "---\n1.0.0 |checksum:{}\n1.0.0-x86_64-linux |checksum:{}\n2.0.0 |checksum:{}\n",
        sha256(&good),
        sha256(&platform),
        sha256(b"what the index says"),
    );
    let origin = Origin::builder()
        .file("/info/my-gem", info)
        .file("/gems/my-gem-1.0.0.gem", good.clone())
        .file("/gems/my-gem-1.0.0-x86_64-linux.gem", platform.clone())
        .file("/gems/my-gem-2.0.0.gem", tampered.clone())
        .start()
        .await;
    let app = TestApp::start(|c| mount(c, "rubygems", Profile::Rubygems, &origin.url())).await;
    assert_eq!(head(&app.url("/rubygems/")).await.status, 200);
    assert_eq!(get(&app.url("/rubygems/info/my-gem")).await.status, 200);
    for (name, body) in [
        ("my-gem-1.0.0.gem", &good),
        ("my-gem-1.0.0-x86_64-linux.gem", &platform),
    ] {
        let got = get(&app.url(&format!("/rubygems/gems/{name}"))).await;
        assert_eq!(
            (got.status.as_u16(), got.error.clone()),
            (200, None),
            "{name}"
        );
        assert_eq!(got.body, body.to_vec());
    }
    // Refused either with 502 or by a broken body, depending on whether the
    // check failed before the response began: curl fails both ways.
    let bad_url = app.url("/rubygems/gems/my-gem-2.0.0.gem");
    let (code, body, _) = curl(&["-sS", "--fail", &bad_url]).await;
    assert_ne!(code, 0, "a gem that does not match /info must not download");
    assert!(body.len() < tampered.len());
    let gems = app.cache.join(".package-cache-mounts/rubygems/gems");
    support::app::committed(&gems.join("my-gem-1.0.0-x86_64-linux.gem")).await;
    assert!(!gems.join("my-gem-2.0.0.gem").exists());
    let (code, _, _) = curl(&["-sS", "--fail", &bad_url]).await;
    assert_ne!(code, 0);
    assert_eq!(
        origin.hits("/gems/my-gem-2.0.0.gem"),
        2,
        "never served from the cache"
    );
    // Offline, the source root still answers: gem keeps choosing the compact index.
    origin.stop().await;
    assert_eq!(head(&app.url("/rubygems/")).await.status, 200);
    app.stop().await;
}

#[tokio::test]
async fn pypi_pages_are_rewritten_per_representation_and_digests_enforced() {
    let wheel = bytes_of(40_000, 11);
    let bad = bytes_of(40_000, 12);
    let files = Origin::builder()
        .file("/packages/demo-1.0-py3-none-any.whl", wheel.clone())
        .route(
            "/packages/demo-2.0-py3-none-any.whl",
            Reply::file(bad.clone()).throttle(100_000),
        )
        .start()
        .await;
    let html = format!(
        "<!DOCTYPE html><html><body>\n\
         <a href=\"{f}/packages/demo-1.0-py3-none-any.whl#sha256={good}\" data-requires-python=\"&gt;=3.7\">demo-1.0-py3-none-any.whl</a>\n\
         <a href=\"{f}/packages/demo-2.0-py3-none-any.whl#sha256={listed}\" data-yanked=\"\">demo-2.0-py3-none-any.whl</a>\n\
         <a href=\"../../packages/local-1.0.tar.gz#sha256={good}\">local-1.0.tar.gz</a>\n\
         </body></html>\n",
        f = files.url(),
        good = sha256(&wheel),
        listed = sha256(b"not the served bytes"),
    );
    let index = Origin::builder()
        .route(
            "/simple/demo/",
            Reply::file(html).header("content-type", "text/html"),
        )
        .start()
        .await;
    let files_url = files.url();
    let app = TestApp::start(|c| {
        let mut c = mount(c, "pypi", Profile::Pypi, &index.url());
        c.mounts[0]
            .files_hosts
            .push(package_cache::config::SourceUrl::try_new(&files_url).unwrap());
        c
    })
    .await;
    let redirect = get(&app.url("/pypi/simple/Demo")).await;
    assert_eq!(redirect.status, 301);
    assert_eq!(redirect.header("location"), Some("/pypi/simple/demo/"));

    let page = get(&app.url("/pypi/simple/demo/")).await;
    assert_eq!(page.status, 200);
    let text = String::from_utf8(page.body.clone()).unwrap();
    let authority = files.addr().to_string();
    let wheel_path = format!("/pypi/files/{authority}/packages/demo-1.0-py3-none-any.whl");
    assert!(
        text.contains(&format!("href=\"{wheel_path}#sha256={}\"", sha256(&wheel))),
        "{text}"
    );
    assert!(text.contains("data-requires-python=\"&gt;=3.7\""), "{text}");
    assert!(text.contains("data-yanked=\"\""), "{text}");
    assert!(
        text.contains("href=\"/pypi/packages/local-1.0.tar.gz#sha256="),
        "{text}"
    );
    assert!(
        !text.contains(&files.url()),
        "no link leads past the cache: {text}"
    );
    assert_eq!(page.header("vary"), Some("Accept"));
    // pip asks for JSON first; this upstream only has HTML. That answer is a
    // separate entry (one per representation), then both are hits.
    let pip_accept = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";
    let as_json = get_with(&app.url("/pypi/simple/demo/"), &[("accept", pip_accept)]).await;
    assert_eq!(
        (as_json.cache(), as_json.body.clone()),
        ("MISS", page.body.clone())
    );
    assert_eq!(index.total_hits(), 2);
    for accept in [pip_accept, "text/html", "*/*"] {
        let again = get_with(&app.url("/pypi/simple/demo/"), &[("accept", accept)]).await;
        assert_eq!(
            (again.cache(), again.body.clone()),
            ("HIT", page.body.clone()),
            "{accept}"
        );
    }

    let got = get(&app.url(&wheel_path)).await;
    assert_eq!((got.status.as_u16(), got.error.clone()), (200, None));
    assert_eq!(got.body, wheel.to_vec());
    let tampered_path = format!("/pypi/files/{authority}/packages/demo-2.0-py3-none-any.whl");
    // Four clients on one throttled download that does not match its page:
    // every one of them fails, none gets a complete-looking file.
    let tampered_url = app.url(&tampered_path);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let url = tampered_url.clone();
            tokio::spawn(async move { curl(&["-sS", "--fail", &url]).await })
        })
        .collect();
    for c in clients {
        let (code, refused, _) = c.await.unwrap();
        assert_ne!(
            code, 0,
            "a file that does not match its page must not download"
        );
        assert!(refused.len() < bad.len());
    }
    assert_eq!(
        files.hits("/packages/demo-2.0-py3-none-any.whl"),
        1,
        "one fetch for all four"
    );
    let stored = app.cache.join(format!(
        ".package-cache-mounts/pypi/files/{authority}/packages"
    ));
    support::app::committed(&stored.join("demo-1.0-py3-none-any.whl")).await;
    assert!(!stored.join("demo-2.0-py3-none-any.whl").exists());
    // Only configured files hosts can be reached through a rewritten path.
    let elsewhere = get(&app.url("/pypi/files/127.0.0.1:9/packages/x.whl")).await;
    assert_eq!(elsewhere.status, 404);
    assert_eq!(
        index.total_hits(),
        2,
        "the redirect and files made no index requests"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_failed_revalidation_is_shared_by_the_clients_queued_behind_it() {
    let origin = Origin::builder()
        .file("/versions", "created_at: x\n---\na 1.0 abc\n")
        .route(
            "/info/missing",
            Reply::status(404).first_byte_delay(Duration::from_millis(300)),
        )
        .start()
        .await;
    let app = TestApp::start(|mut c| {
        c.policy.index_ttl = Duration::from_secs(1);
        c.policy.negative_ttl = Duration::from_secs(30);
        c.upstream.idle_timeout = Duration::from_secs(1);
        mount(c, "rubygems", Profile::Rubygems, &origin.url())
    })
    .await;
    // Many clients asking for a document the upstream does not have: one request.
    let storm = |path: &'static str| {
        let url = app.url(path);
        (0..8)
            .map(move |_| {
                let url = url.clone();
                tokio::spawn(async move { get(&url).await })
            })
            .collect::<Vec<_>>()
    };
    for c in storm("/rubygems/info/missing") {
        assert_eq!(c.await.unwrap().status, 404);
    }
    assert_eq!(
        origin.hits("/info/missing"),
        1,
        "one upstream request for eight clients"
    );

    // A stored document whose upstream now hangs: one connection, everyone
    // gets the stale copy.
    let fresh = get(&app.url("/rubygems/versions")).await;
    assert_eq!(fresh.status, 200);
    let addr = origin.addr();
    origin.stop().await;
    let hang = tokio::net::TcpListener::bind(addr)
        .await
        .expect("rebind the upstream's port");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hang.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for c in storm("/rubygems/versions") {
        let got = c.await.unwrap();
        assert_eq!(
            (got.status.as_u16(), got.body.clone()),
            (200, fresh.body.clone())
        );
        assert!(got.header("warning").is_some());
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one attempt for eight clients"
    );
    holder.abort();
    app.stop().await;
}

#[tokio::test]
async fn a_revalidation_that_ended_is_not_shared_with_later_clients() {
    let origin = Origin::builder()
        .route_first(
            "/versions",
            1,
            Reply::file("created_at: x\n---\na 1.0 abc\n"),
        )
        .route("/versions", Reply::status(503))
        .start()
        .await;
    let app = TestApp::start(|mut c| {
        c.policy.index_ttl = Duration::from_secs(1);
        mount(c, "rubygems", Profile::Rubygems, &origin.url())
    })
    .await;
    let url = app.url("/rubygems/versions");
    let fresh = get(&url).await;
    assert_eq!(fresh.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for round in 1..=3 {
        let stale = get(&url).await;
        assert_eq!((stale.status.as_u16(), &stale.body), (200, &fresh.body));
        assert!(stale.header("warning").is_some(), "round {round}");
        assert_eq!(
            origin.hits("/versions"),
            1 + round,
            "each failed revalidation ended; the next client asks again"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn an_html_page_never_replaces_an_index_document() {
    let origin = Origin::builder()
        .route(
            "/versions",
            Reply::file("<html>Sign in to the hotel wifi</html>")
                .header("content-type", "text/html"),
        )
        .start()
        .await;
    let app = TestApp::start(|c| mount(c, "rubygems", Profile::Rubygems, &origin.url())).await;
    for _ in 0..2 {
        assert_eq!(get(&app.url("/rubygems/versions")).await.status, 502);
    }
    assert_eq!(origin.hits("/versions"), 2, "nothing was stored");
    app.stop().await;
}

#[tokio::test]
async fn a_file_cached_before_its_page_is_checked_when_the_page_is_seen() {
    let served = bytes_of(30_000, 21);
    let page = format!(
        "<html><body><a href=\"/packages/late-1.0.whl#sha256={listed}\">late-1.0.whl</a>\n\
         <a href=\"/packages/empty-1.0.whl#sha256={listed}\">empty-1.0.whl</a></body></html>\n",
        listed = sha256(b"the bytes the index vouches for"),
    );
    let origin = Origin::builder()
        .file("/packages/late-1.0.whl", served.clone())
        .file("/packages/empty-1.0.whl", "")
        .route(
            "/simple/late/",
            Reply::file(page).header("content-type", "text/html"),
        )
        .start()
        .await;
    let app = TestApp::start(|c| mount(c, "pypi", Profile::Pypi, &origin.url())).await;
    let file = app.url("/pypi/packages/late-1.0.whl");
    let early = get(&file).await;
    assert_eq!(
        (early.status.as_u16(), early.body.clone()),
        (200, served.to_vec())
    );
    let stored = app
        .cache
        .join(".package-cache-mounts/pypi/packages/late-1.0.whl");
    support::app::committed(&stored).await;
    assert_eq!(get(&app.url("/pypi/simple/late/")).await.status, 200);
    let (code, body, _) = curl(&["-sS", "--fail", &file]).await;
    assert_ne!(code, 0, "the index now lists another digest");
    assert!(body.len() < served.len());
    assert_eq!(
        origin.hits("/packages/late-1.0.whl"),
        2,
        "dropped and fetched again, verified"
    );
    assert!(!stored.exists());
    // An empty body has no byte to hold back: refused outright.
    let (code, body, _) = curl(&["-sS", "--fail", &app.url("/pypi/packages/empty-1.0.whl")]).await;
    assert_ne!(code, 0);
    assert!(body.is_empty());
    assert!(!app
        .cache
        .join(".package-cache-mounts/pypi/packages/empty-1.0.whl")
        .exists());
    app.stop().await;
}

#[tokio::test]
async fn dot_segments_in_directory_paths_are_refused() {
    let origin = Origin::builder().start().await;
    let app = TestApp::start(|c| mount(c, "gentoo", Profile::Gentoo, &origin.url())).await;
    for path in [
        "/gentoo/a/../../admin/",
        "/gentoo/%2e%2e/x/",
        "/gentoo/a/./",
    ] {
        let response = support::client::raw(
            app.addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(support::client::raw_status(&response), 400, "{path}");
    }
    assert_eq!(origin.total_hits(), 0);
    app.stop().await;
}

/// `curl --fail -x`: (exit code, X-Cache, body) of an absolute-form request for `url`
/// through `proxy`.
async fn through_proxy(proxy: &str, url: &str) -> (i32, String, Vec<u8>) {
    let headers = tempfile::NamedTempFile::new().expect("temp file");
    let dump = headers.path().to_str().expect("utf-8").to_string();
    let (code, body, stderr) = curl(&["-sS", "--fail", "-x", proxy, "-D", &dump, url]).await;
    let head = std::fs::read_to_string(headers.path()).unwrap_or_default();
    let cache = head
        .lines()
        .find_map(|l| l.strip_prefix("x-cache: "))
        .unwrap_or("-")
        .trim()
        .to_string();
    if code != 0 {
        eprintln!("curl -x {proxy} {url}: exit {code}: {stderr}");
    }
    (code, cache, body)
}

#[tokio::test]
async fn forward_proxy_requests_for_a_mounts_upstream_use_that_mount() {
    use base64::Engine;
    use sha2::Digest;
    let genuine = bytes_of(40_000, 3);
    let listed = |data: &[u8]| {
        format!(
            "sha512-{}",
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(data))
        )
    };
    // Relative tarball URLs (resolved against the packument's URL) keep the origin's port out.
    let packument = format!(
        r#"{{"name":"a","versions":{{"1.0.0":{{"dist":{{"tarball":"/a/-/a-1.0.0.tgz","integrity":"{}"}}}},"2.0.0":{{"dist":{{"tarball":"/a/-/a-2.0.0.tgz","integrity":"{}"}}}}}}}}"#,
        listed(&genuine),
        listed(b"what the registry published"),
    );
    let origin = Origin::builder()
        .file("/a", packument)
        .file("/a/-/a-1.0.0.tgz", genuine.clone())
        .file("/a/-/a-2.0.0.tgz", bytes_of(40_000, 4))
        .start()
        .await;
    let app = TestApp::start(|mut c| {
        c.server.public_url =
            Some(package_cache::config::PublicUrl::try_new("http://cache.example:4000/").unwrap());
        mount(c, "npm", Profile::Npm, &origin.url())
    })
    .await;
    let proxy = format!("http://{}", app.addr);
    let upstream = origin.url().trim_end_matches('/').to_string();

    // The packument, asked for by its upstream URL, is the mount's document.
    let (code, cache, body) = through_proxy(&proxy, &format!("{upstream}/a")).await;
    assert_eq!((code, cache.as_str()), (0, "MISS"));
    let doc: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        doc["versions"]["1.0.0"]["dist"]["tarball"],
        "http://cache.example:4000/npm/a/-/a-1.0.0.tgz",
        "links name --public-url, never the request's Host"
    );

    // Its tarball by the upstream URL: cached once, verified against the integrity.
    let tarball = format!("{upstream}/a/-/a-1.0.0.tgz");
    let (code, cache, body) = through_proxy(&proxy, &tarball).await;
    assert_eq!((code, cache.as_str(), body == genuine), (0, "MISS", true));
    let (code, cache, body) = through_proxy(&proxy, &tarball).await;
    assert_eq!((code, cache.as_str(), body == genuine), (0, "HIT", true));
    assert_eq!(origin.hits("/a/-/a-1.0.0.tgz"), 1);
    // The same entry as the mount's own path.
    assert_eq!(get(&app.url("/npm/a/-/a-1.0.0.tgz")).await.cache(), "HIT");

    // A tarball that is not what its packument lists never arrives whole: a 502 when the
    // check failed before the response began, else a body cut short.
    let (code, cache, body) = through_proxy(&proxy, &format!("{upstream}/a/-/a-2.0.0.tgz")).await;
    assert_ne!(code, 0, "{cache} {} bytes", body.len());
    assert!(!app
        .cache
        .join(".package-cache-mounts/npm/a/-/a-2.0.0.tgz")
        .exists());

    // Hosts that are no mount's upstream stay refused.
    let (code, body, _) = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-x",
        &proxy,
        "http://elsewhere.example/a",
    ])
    .await;
    assert_eq!((code, String::from_utf8_lossy(&body).as_ref()), (0, "403"));
    app.stop().await;
}
