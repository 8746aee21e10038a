//! Headless Chromium for the status page: the DOM it builds for a URL, the
//! requests the page made (from Chromium's net log), and the ids and
//! `data-value`s of the page's key numbers in that DOM. Chromium's own
//! background requests (updates, time, accounts) are sent to a closed port on
//! loopback and no name is resolved, so nothing leaves the machine.

use std::path::PathBuf;
use std::time::Duration;

/// Chromium from `PATH`; `None` (skip) when absent, except under `CI`.
pub fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("chromium"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required under CI (apt-get install chromium)"
        );
        eprintln!("skipping: chromium is not installed");
    }
    found
}

/// The DOM Chromium builds for `url` (`--dump-dom`).
pub async fn dump_dom(chromium: &PathBuf, url: &str) -> String {
    dump_dom_logged(chromium, url).await.0
}

/// One request Chromium's network stack started: its URL, and the origin of
/// the document that caused it (`not an origin` for a navigation or the
/// browser's own requests).
#[derive(Debug)]
pub struct Loaded {
    pub url: String,
    pub initiator: String,
}

/// The DOM Chromium builds for `url`, and every request it started meanwhile
/// (from `--log-net-log`). Chromium runs in its own process group with a
/// private profile, and the whole group is killed if it takes longer than a
/// minute.
pub async fn dump_dom_logged(chromium: &PathBuf, url: &str) -> (String, Vec<Loaded>) {
    let profile = tempfile::tempdir().unwrap();
    let net_log = profile.path().join("net-log.json");
    let mut child = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            // Root (CI) cannot use the sandbox; the page is our own.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            // Loopback is never proxied; everything else goes to a closed
            // port here, and no name resolves.
            "--proxy-server=http://127.0.0.1:9",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--disable-extensions",
            "--disable-background-networking",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("p").display()
        ))
        .arg(format!("--log-net-log={}", net_log.display()))
        .args(["--dump-dom", url])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("chromium starts");
    let pgid = rustix::process::Pid::from_raw(child.id().expect("a pid") as i32).expect("pid > 0");
    let kill_group = || {
        // Its renderer and zygote processes too; ESRCH once they are gone.
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    };
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let read = async {
        use tokio::io::AsyncReadExt;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (mut stdout, mut stderr) = (stdout, stderr);
        let _ = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        let status = child.wait().await;
        (status, out, err)
    };
    let result = tokio::time::timeout(Duration::from_secs(60), read).await;
    kill_group();
    let (status, out, err) = result.expect("chromium finished within 60 s (killed)");
    let dom = String::from_utf8_lossy(&out).into_owned();
    assert!(
        status.as_ref().is_ok_and(|s| s.success()) && dom.contains("</html>"),
        "chromium failed: {status:?}\n{}",
        String::from_utf8_lossy(&err)
    );
    (dom, net_log_requests(&net_log))
}

/// Every `URL_REQUEST_START_JOB` in a net log.
fn net_log_requests(path: &std::path::Path) -> Vec<Loaded> {
    let log: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("chromium wrote its net log"))
            .expect("the net log is JSON");
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
        .as_u64()
        .expect("the net log names its event types");
    log["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"].as_u64() == Some(start_job))
        .map(|e| Loaded {
            url: e["params"]["url"].as_str().unwrap_or_default().to_string(),
            initiator: e["params"]["initiator"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        })
        .collect()
}

/// `data-value` and text of the element with `id`, as serialised by Chromium.
pub fn element(dom: &str, id: &str) -> (String, String) {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the DOM:\n{dom}"));
    let open = dom[..at].rfind('<').unwrap();
    let close = at + dom[at..].find('>').unwrap();
    let attrs = &dom[open..close];
    let value = attrs
        .split("data-value=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .unwrap_or_else(|| panic!("#{id} has no data-value: {attrs}"))
        .to_string();
    let text = dom[close + 1..][..dom[close + 1..].find('<').unwrap()].to_string();
    (value, text)
}

/// The page's unit rules, restated: binary units, one decimal.
pub fn human(n: f64) -> String {
    if n < 1024.0 {
        return format!("{n} B");
    }
    let mut v = n / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < 3 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", ["KiB", "MiB", "GiB", "TiB"][unit])
}
