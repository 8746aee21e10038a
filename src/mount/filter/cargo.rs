//! Cargo sparse-index files without refused versions: one JSON object a
//! line, dated by `pubtime` (RFC 3339, written by registries since 2025);
//! the lines kept are the upstream's bytes, so the file stays what cargo
//! parses. A line that does not parse is kept, as cargo skips it itself.

use super::{Error, Keep, Listed};
use crate::config::supply::parse_instant;
use bytes::Bytes;

#[derive(serde::Deserialize)]
struct Line {
    name: String,
    vers: String,
    pubtime: Option<String>,
}

/// The index file without the versions `keep` refuses. `Ok(None)`: nothing refused.
pub fn filter_index(body: &[u8], keep: &mut Keep<'_>) -> Result<Option<Bytes>, Error> {
    let mut out = Vec::with_capacity(body.len());
    let mut refused = 0;
    for line in body.split_inclusive(|&b| b == b'\n') {
        if let Ok(entry) = serde_json::from_slice::<Line>(line) {
            let shown = keep(&Listed {
                project: &entry.name,
                version: &entry.vers,
                published: entry.pubtime.as_deref().and_then(parse_instant),
            });
            if !shown {
                refused += 1;
                continue;
            }
        }
        out.extend_from_slice(line);
    }
    Ok((refused > 0).then(|| out.into()))
}

/// The `pubtime` the index file gives `version`, if any.
pub fn pubtime(body: &[u8], version: &str) -> Option<i64> {
    body.split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Line>(line).ok())
        .find(|entry| entry.vers == version)
        .and_then(|entry| entry.pubtime.as_deref().and_then(parse_instant))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lines_of_refused_versions_go() {
        let index = concat!(
            r#"{"name":"fixture-core","vers":"0.1.0","deps":[],"cksum":"aa","features":{},"yanked":false,"pubtime":"2020-01-01T00:00:00Z"}"#,
            "\n",
            r#"{"name":"fixture-core","vers":"0.2.0","deps":[],"cksum":"bb","features":{},"yanked":false,"pubtime":"2026-01-10T00:00:00Z"}"#,
            "\n",
            r#"{"name":"fixture-core","vers":"0.3.0","deps":[],"cksum":"cc","features":{},"yanked":false}"#,
            "\n"
        );
        let mut asked = Vec::new();
        let mut keep = |r: &Listed<'_>| {
            asked.push((r.version.to_string(), r.published));
            r.published.is_some_and(|p| p < 1_767_000_000)
        };
        let out = filter_index(index.as_bytes(), &mut keep).unwrap().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            index.lines().next().unwrap().to_string() + "\n"
        );
        assert_eq!(asked[2], ("0.3.0".to_string(), None));
        assert_eq!(pubtime(index.as_bytes(), "0.2.0"), Some(1_768_003_200));
        assert_eq!(pubtime(index.as_bytes(), "0.3.0"), None);
        assert_eq!(pubtime(index.as_bytes(), "9.9.9"), None);
        assert!(filter_index(index.as_bytes(), &mut |_| true)
            .unwrap()
            .is_none());
    }
}
