//! `/metrics` answers in the format the scraper asks for, checked against
//! the real binary with the reference parsers of Prometheus' Python client
//! (Debian's python3-prometheus-client): its strict OpenMetrics parser for the
//! default answer, and its Prometheus text 0.0.4 parser, which reads an
//! OpenMetrics counter as an empty counter plus an untyped `_total` family,
//! for the text answer.

use crate::support::app::Binary;
use crate::support::client::{bytes_of, curl, get, get_with};
use crate::support::origin::Origin;
use serde_json::Value;
use std::collections::BTreeMap;

/// Debian's python, where the apt package installs the parser (a python
/// on PATH may be another one).
const PYTHON: &str = "/usr/bin/python3";

/// Parses `text` with the client library's parser for `format` (`openmetrics`
/// or `text`) and prints every family as JSON.
const PARSE: &str = r#"
import json, sys
if sys.argv[1] == "openmetrics":
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families
families = [
    {"name": f.name, "type": f.type,
     "samples": [[s.name, s.labels, s.value] for s in f.samples]}
    for f in text_string_to_metric_families(sys.stdin.read())
]
print(json.dumps(families))
"#;

/// The parser, or `None` (skip) when it is not installed, except under `CI`.
fn parser_installed() -> bool {
    let ok = std::process::Command::new(PYTHON)
        .args(["-c", "import prometheus_client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3-prometheus-client is required under CI"
        );
        eprintln!("skipping: python3-prometheus-client is not installed");
    }
    ok
}

/// Family name → (type, {sample name and labels → value}), as the parser saw it.
type Families = BTreeMap<String, (String, BTreeMap<String, f64>)>;

async fn parse(format: &str, text: &[u8]) -> Families {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(PYTHON)
        .args(["-c", PARSE, format])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the parser finishes")
        .unwrap();
    assert!(
        out.status.success(),
        "the {format} parser refused the exposition: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(text)
    );
    let families: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    families
        .into_iter()
        .map(|f| {
            let samples = f["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        format!("{}{}", s[0].as_str().unwrap(), s[1]),
                        s[2].as_f64().unwrap(),
                    )
                })
                .collect();
            (
                f["name"].as_str().unwrap().to_string(),
                (f["type"].as_str().unwrap().to_string(), samples),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_scraper_gets_the_format_it_prefers() {
    let origin = Origin::builder()
        .file("/a.bin", bytes_of(10_000, 1))
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let bin = Binary::start(&[
        "--cache",
        cache.to_str().unwrap(),
        "--source",
        &origin.url(),
    ])
    .await;
    // Series with labels in every family that has them.
    for path in ["/a.bin", "/a.bin", "/missing.bin"] {
        get(&bin.url(path)).await;
    }
    let admin = format!("http://{}/metrics", bin.admin.expect("admin"));
    // Counted when hyper drops the body: let the last request settle.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // A plain curl, and Prometheus 2's Accept: OpenMetrics.
    let (code, plain, err) = curl(&["-sS", "-D", "/dev/stderr", &admin]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{err}"
    );
    let prometheus2 = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let om = get_with(&admin, &[("accept", prometheus2)]).await;
    assert!(om
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert_eq!(om.header("vary"), Some("accept"));
    assert_eq!(om.body, plain, "no traffic in between: the same answer");

    // Prometheus 3 told to scrape the text format, and an older Prometheus.
    let text = get_with(
        &admin,
        &[("accept", "text/plain;version=0.0.4;q=0.6,*/*;q=0.5")],
    )
    .await;
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let older = get_with(
        &admin,
        &[("accept", "text/plain;version=0.0.4;q=1,*/*;q=0.1")],
    )
    .await;
    assert_eq!(older.body, text.body);
    let body = String::from_utf8(text.body.clone()).unwrap();
    assert!(
        !body.contains("# EOF") && !body.contains("# UNIT"),
        "{body}"
    );

    // The negotiation is checked above in any case; the reference parsers
    // only where they are installed (always under CI).
    if !parser_installed() {
        bin.kill9().await;
        return;
    }
    let from_om = parse("openmetrics", &om.body).await;
    let from_text = parse("text", &text.body).await;
    for (name, (kind, samples)) in &from_text {
        assert!(
            ["counter", "gauge", "histogram"].contains(&kind.as_str()) && !samples.is_empty(),
            "{name} read as an empty or untyped family ({kind}): {body}"
        );
    }
    assert_eq!(
        from_text, from_om,
        "both formats carry the same families, types and values"
    );
    let requests = &from_text["package_cache_requests"].1;
    assert_eq!(
        requests["package_cache_requests_total{\"mount\":\"(mirrors)\",\"cache\":\"HIT\"}"],
        1.0
    );
    bin.kill9().await;
}
