//! Go module proxies without refused versions: `@v/list` loses them (dated
//! by each version's `.info` `Time`, which the caller reads), and an
//! `@latest` that names one is replaced by the newest shown version
//! ([`newest_shown`]), whose `.info` the caller serves instead; with none
//! shown, `@latest` is a 404 (go then moves on, as for a module without
//! releases).

use super::{Error, Keep, Listed};
use crate::config::supply::parse_instant;
use bytes::Bytes;
use std::collections::HashMap;

/// The `Version` and `Time` of a `.info` (or `@latest`) document.
pub fn info(body: &[u8]) -> Result<(String, Option<i64>), Error> {
    #[derive(serde::Deserialize)]
    struct Info {
        #[serde(rename = "Version")]
        version: String,
        #[serde(rename = "Time")]
        time: Option<String>,
    }
    let info: Info = serde_json::from_slice(body).map_err(Error::Json)?;
    Ok((info.version, info.time.as_deref().and_then(parse_instant)))
}

/// `@v/list` of `module` without the versions `keep` refuses; `times` by
/// version. `Ok(None)`: nothing refused.
pub fn filter_list(
    body: &[u8],
    module: &str,
    times: &HashMap<String, i64>,
    keep: &mut Keep<'_>,
) -> Result<Option<Bytes>, Error> {
    let text = std::str::from_utf8(body).map_err(|_| Error::NotUtf8)?;
    let mut out = String::with_capacity(text.len());
    let mut refused = 0;
    for line in text.split_inclusive('\n') {
        let v = line.trim();
        if !v.is_empty()
            && !keep(&Listed {
                project: module,
                version: v,
                published: times.get(v).copied(),
            })
        {
            refused += 1;
            continue;
        }
        out.push_str(line);
    }
    Ok((refused > 0).then(|| out.into()))
}

/// The newest version of `versions` that `keep` shows (releases before
/// pre-releases, as `go` picks for `@latest`).
pub fn newest_shown(
    versions: &[String],
    module: &str,
    times: &HashMap<String, i64>,
    keep: &mut Keep<'_>,
) -> Option<String> {
    let mut shown: Vec<&String> = versions
        .iter()
        .filter(|v| {
            keep(&Listed {
                project: module,
                version: v,
                published: times.get(v.as_str()).copied(),
            })
        })
        .collect();
    shown.sort_by(|a, b| {
        let pre = |v: &str| v.contains('-');
        pre(b)
            .cmp(&pre(a))
            .then_with(|| super::npm::semver_order(a, b))
    });
    shown.last().map(|v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_lose_refused_versions_and_latest_falls_back() {
        let times = HashMap::from([
            ("v1.0.0".to_string(), 1_600_000_000),
            ("v1.1.0".to_string(), 1_767_100_000),
            ("v1.2.0-rc.1".to_string(), 1_600_000_001),
        ]);
        let mut keep = |r: &Listed<'_>| r.published.is_some_and(|p| p < 1_767_000_000);
        let out = filter_list(
            b"v1.0.0\nv1.1.0\nv1.2.0-rc.1\n",
            "example.com/m",
            &times,
            &mut keep,
        )
        .unwrap()
        .unwrap();
        assert_eq!(&out[..], b"v1.0.0\nv1.2.0-rc.1\n");
        let versions: Vec<String> = ["v1.0.0", "v1.1.0", "v1.2.0-rc.1"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            newest_shown(&versions, "example.com/m", &times, &mut keep).as_deref(),
            Some("v1.0.0"),
            "a release before a newer pre-release"
        );
        assert_eq!(newest_shown(&versions, "m", &times, &mut |_| false), None);
        assert_eq!(
            info(br#"{"Version":"v1.1.0","Time":"2026-01-10T00:00:00Z"}"#).unwrap(),
            ("v1.1.0".to_string(), Some(1_768_003_200))
        );
        assert!(filter_list(b"v1.0.0\n", "m", &times, &mut |_| true)
            .unwrap()
            .is_none());
    }
}
