//! The real binary: the package-cache 0.2 command line, IPv6, the cache lock,
//! request log lines, and graceful shutdown on SIGTERM.

mod support;

use std::time::Duration;
use support::app::Binary;
use support::client::{bytes_of, get, sha256};
use support::origin::{Origin, Reply};

fn run(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_package-cache"))
        .args(args)
        .output()
        .expect("runs")
}

#[test]
fn help_and_version_speak_the_0_2_command_line() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--source",
        "--cache",
        "--host",
        "--port",
        "--verbose",
        "--syslog",
        "--version",
        "--transparent-host",
        "--ca-file",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
    let out = run(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("package-cache {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_arguments_are_refused_with_a_message() {
    let out = run(&[
        "--source",
        "ftp://example.invalid/",
        "--cache",
        "/nonexistent-never",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid source URL"));
    let out = run(&["--port", "notaport"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["--resolve", "nonsense"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn ipv6_listen_addresses_work() {
    let origin = Origin::builder().file("/v6.bin", "six").start().await;
    let dir = tempfile::tempdir().unwrap();
    let bin = Binary::start_on(
        "::1",
        &[
            "--source",
            &origin.url(),
            "--cache",
            dir.path().to_str().unwrap(),
        ],
    )
    .await;
    assert!(bin.addr.is_ipv6(), "{}", bin.addr);
    let (code, out, err) =
        support::client::curl(&["-sS", "-g", &format!("http://{}/v6.bin", bin.addr)]).await;
    assert_eq!((code, out.as_slice()), (0, &b"six"[..]), "{err}");
    bin.kill9().await;
}

#[tokio::test]
async fn a_second_server_on_the_same_cache_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().to_str().unwrap().to_string();
    let args = ["--source", NOWHERE, "--cache", &cache];
    let bin = Binary::start(&args).await;
    let stderr = support::app::refused_start(&args).await;
    assert!(stderr.contains("locked"), "{stderr}");
    assert_eq!(
        stderr.matches("locked").count(),
        1,
        "a fatal start-up error is said once: {stderr}"
    );
    let holder = format!("package-cache process {}", bin.child.id().unwrap());
    assert!(stderr.contains(&holder), "names the holder: {stderr}");
    bin.kill9().await;
}

/// A source that is never asked (these tests make no request through it).
const NOWHERE: &str = "http://127.0.0.1:9/";

#[tokio::test]
async fn a_server_with_nothing_to_cache_from_refuses_to_start_and_says_what_to_add() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("c");
    let cache = cache.to_str().unwrap();
    let stderr = support::app::refused_start(&["--cache", cache]).await;
    assert!(
        stderr.contains("add --source URL") && stderr.contains("--mirror NAME=URL"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "said once: {stderr}");
    assert!(!dir.path().join("c").exists(), "nothing created");
    // The maintenance and client commands need no upstream.
    let out = run(&["stats", "--cache", dir.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Any one upstream will do: a mount, or a host for transparent mode.
    let origin = Origin::builder().start().await;
    for upstream in [
        vec!["--mirror".to_string(), format!("m={}", origin.url())],
        vec!["--transparent-host".to_string(), "mirror.example".into()],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<&str> = upstream.iter().map(String::as_str).collect();
        args.extend(["--cache", dir.path().to_str().unwrap()]);
        Binary::start(&args).await.kill9().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_transfers_finish_then_exits_cleanly_and_logs_each_request() {
    let body = bytes_of(300 * 1024, 50);
    let origin = Origin::builder()
        .route("/slow.bin", Reply::file(body.clone()).throttle(200 * 1024))
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut bin = Binary::start(&[
        "--source",
        &origin.url(),
        "--cache",
        dir.path().to_str().unwrap(),
    ])
    .await;
    let url = bin.url("/slow.bin");
    let download = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    bin.signal(rustix::process::Signal::TERM);
    let got = download.await.unwrap();
    assert!(
        got.error.is_none(),
        "the transfer in flight finished: {:?}",
        got.error
    );
    assert_eq!(sha256(&got.body), sha256(&body));
    let status = tokio::time::timeout(Duration::from_secs(10), bin.child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        dir.path().join("slow.bin").exists(),
        "the fill committed before exit"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let lines = bin.log_lines();
    let request = lines
        .iter()
        .find(|l| l.contains("\"request\"") && l.contains("/slow.bin"))
        .expect("a request log line");
    let v: serde_json::Value = serde_json::from_str(request).unwrap();
    let f = &v["fields"];
    assert_eq!(
        (
            f["method"].as_str(),
            f["status"].as_u64(),
            f["cache"].as_str()
        ),
        (Some("GET"), Some(200), Some("MISS"))
    );
    assert_eq!(f["bytes"].as_u64(), Some(body.len() as u64));
    assert!(f["elapsed_ms"].as_u64().is_some());
}

#[tokio::test]
async fn syslog_gets_the_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("log.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_package-cache"))
        .args(["--syslog", "--syslog-socket", socket_path.to_str().unwrap()])
        .args([
            "--source",
            NOWHERE,
            "--cache",
            dir.path().join("c").to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--admin",
            "off",
            "--api",
            "off",
        ])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::task::spawn_blocking(move || {
        socket
            .recv(&mut buf)
            .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .await
    .unwrap()
    .expect("a syslog datagram");
    assert!(n.starts_with("<30>package-cache["), "{n}");
    assert!(n.contains("listening"), "{n}");
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shutdown_grace_is_a_deadline_and_nothing_half_done_is_kept() {
    let body = bytes_of(400 * 1024, 51);
    // About 10 s upstream: far past the 1 s grace.
    let origin = Origin::builder()
        .route("/long.bin", Reply::file(body.clone()).throttle(40 * 1024))
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().to_str().unwrap().to_string();
    let args = [
        "--source",
        &origin.url(),
        "--cache",
        &cache,
        "--shutdown-grace",
        "1",
    ];
    let mut bin = Binary::start(&args).await;
    let url = bin.url("/long.bin");
    let download = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = std::time::Instant::now();
    bin.signal(rustix::process::Signal::TERM);
    let status = tokio::time::timeout(Duration::from_secs(10), bin.child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "exited {:?} after SIGTERM",
        asked.elapsed()
    );
    let cut = download.await.unwrap();
    assert!(
        cut.error.is_some(),
        "the client sees the transfer cut short"
    );
    assert!(
        !dir.path().join("long.bin").exists(),
        "an unfinished fill is not committed"
    );
    let bin = Binary::start(&args).await;
    assert!(support::app::tmp_files(dir.path()).is_empty());
    origin.stop().await;
    assert_eq!(
        get(&bin.url("/long.bin")).await.status,
        502,
        "nothing cached, upstream gone"
    );
    bin.kill9().await;
}

/// Query strings carry tokens (signed URLs, private indexes): the access log names the path
/// only, and the query appears at debug level alone, on a line of its own.
#[tokio::test]
async fn query_strings_reach_the_log_only_at_debug_level() {
    let origin = Origin::builder().file("/tok.bin", "body").start().await;
    for (filter, shown) in [("package_cache=info", false), ("package_cache=debug", true)] {
        let dir = tempfile::tempdir().unwrap();
        let args = [
            "--source",
            &origin.url(),
            "--cache",
            dir.path().to_str().unwrap(),
        ];
        let bin = Binary::start_logging(filter, &args).await;
        let got = get(&bin.url("/tok.bin?token=s3cret-value")).await;
        assert_eq!((got.status.as_u16(), got.cache()), (200, "PASS"));
        let mut request = None;
        for _ in 0..100 {
            request = bin
                .log_lines()
                .into_iter()
                .find(|l| l.contains("\"message\":\"request\"") && l.contains("/tok.bin"));
            if request.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let request = request.expect("an access log line");
        let v: serde_json::Value = serde_json::from_str(&request).unwrap();
        assert_eq!(v["fields"]["path"], "/tok.bin", "{filter}: {request}");
        let lines = bin.log_lines();
        let leaked: Vec<_> = lines.iter().filter(|l| l.contains("s3cret")).collect();
        if shown {
            let query = leaked
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["fields"]["message"] == "request query")
                .unwrap_or_else(|| panic!("a query line at debug: {lines:#?}"));
            assert_eq!(query["level"], "DEBUG");
            assert_eq!(query["fields"]["query"], "token=s3cret-value");
            assert_eq!(query["fields"]["path"], "/tok.bin");
        } else {
            assert!(leaked.is_empty(), "the query leaked at info: {leaked:#?}");
        }
        bin.kill9().await;
    }
}

/// The README's list of environment variables is the one `--help` (and the client commands'
/// help) prints: every variable the binary reads is documented, and nothing else.
#[test]
fn the_readme_lists_the_environment_variables_help_shows() {
    let mut helped = std::collections::BTreeSet::new();
    for args in [
        &["--help"][..],
        &["build", "--help"],
        &["inbox", "add", "--help"],
    ] {
        let out = run(args);
        assert!(out.status.success(), "{args:?}");
        let help = String::from_utf8_lossy(&out.stdout).into_owned();
        for (i, _) in help.match_indices("[env: ") {
            let name: String = help[i + 6..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            helped.insert(name);
        }
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("Environment variables `PC_")
        .expect("the README's list of environment variables");
    let paragraph = &readme[start..start + readme[start..].find("\n\n").unwrap()];
    let listed: std::collections::BTreeSet<String> = paragraph
        .split('`')
        .filter(|word| word.starts_with("PC_"))
        .map(str::to_string)
        .collect();
    assert_eq!(listed, helped);
}

#[tokio::test]
async fn a_bad_go_sum_refuses_to_start_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("c");
    let cache = cache.to_str().unwrap();
    let good = dir.path().join("go.sum");
    std::fs::write(
        &good,
        "example.test/hello v1.1.0 h1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n",
    )
    .unwrap();
    let garbage = dir.path().join("garbage.sum");
    std::fs::write(&garbage, "not a go.sum\nnor this\n").unwrap();
    let missing = dir.path().join("missing.sum");
    let on = |name: &str, file: &std::path::Path| format!("{name}={}", file.display());
    for (mirror, go_sum, says) in [
        (
            "pypi=http://127.0.0.1:9/",
            on("pypi", &good),
            "only a go mount takes a go.sum",
        ),
        (
            "go=http://127.0.0.1:9/",
            on("other", &good),
            "no --mirror has that NAME",
        ),
        ("go=http://127.0.0.1:9/", on("go", &missing), "No such file"),
        (
            "go=http://127.0.0.1:9/",
            on("go", &garbage),
            "no go.sum line in it (2 malformed)",
        ),
        (
            "go=http://127.0.0.1:9/",
            "go".to_string(),
            "expected NAME=VALUE",
        ),
    ] {
        let args = ["--cache", cache, "--mirror", mirror, "--go-sum", &go_sum];
        let stderr = support::app::refused_start(&args).await;
        assert!(
            stderr.contains("--go-sum") && stderr.contains(says),
            "{args:?}: {stderr}"
        );
    }
}
