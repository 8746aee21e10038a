//! npm packuments without refused versions: `versions` and `time` lose
//! them, and a dist-tag that named one moves to the newest shown version
//! (by publication time; a tag on a release stays off pre-releases), or goes
//! when none is left. The abbreviated form has no `time`, so its dates come
//! from the full packument ([`publish_times`]). Every other field is kept,
//! in its order.

use super::{Error, Keep, Listed};
use crate::config::supply::parse_instant;
use bytes::Bytes;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Publication times by version, from a full packument's `time` (`created`
/// and `modified` left out).
pub fn publish_times(body: &[u8]) -> Result<HashMap<String, i64>, Error> {
    let doc: Value = serde_json::from_slice(body).map_err(Error::Json)?;
    let Some(time) = doc.get("time").and_then(Value::as_object) else {
        return Ok(HashMap::new());
    };
    Ok(time
        .iter()
        .filter(|(k, _)| *k != "created" && *k != "modified")
        .filter_map(|(k, v)| Some((k.clone(), parse_instant(v.as_str()?)?)))
        .collect())
}

fn is_prerelease(version: &str) -> bool {
    version.contains('-')
}

/// SemVer precedence; versions that are not SemVer by their text.
pub(super) fn semver_order(a: &str, b: &str) -> std::cmp::Ordering {
    let parse = |v: &str| semver::Version::parse(v.trim_start_matches('v')).ok();
    match (parse(a), parse(b)) {
        (Some(a), Some(b)) => a.cmp_precedence(&b),
        _ => a.cmp(b),
    }
}

/// A packument (full or abbreviated) without the versions `keep` refuses;
/// dates from `times` (else its own `time`). `Ok(None)`: nothing refused.
pub fn filter_packument(
    body: &[u8],
    times: &HashMap<String, i64>,
    keep: &mut Keep<'_>,
) -> Result<Option<Bytes>, Error> {
    let mut doc: Value = serde_json::from_slice(body).map_err(Error::Json)?;
    let Some(obj) = doc.as_object_mut() else {
        return Ok(None);
    };
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let own_times: HashMap<String, i64> = match obj.get("time").and_then(Value::as_object) {
        Some(t) => t
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), parse_instant(v.as_str()?)?)))
            .collect(),
        None => HashMap::new(),
    };
    let when = |v: &str| times.get(v).or_else(|| own_times.get(v)).copied();
    let Some(versions) = obj.get_mut("versions").and_then(Value::as_object_mut) else {
        return Ok(None);
    };
    let refused: Vec<String> = versions
        .keys()
        .filter(|v| {
            !keep(&Listed {
                project: &name,
                version: v,
                published: when(v),
            })
        })
        .cloned()
        .collect();
    if refused.is_empty() {
        return Ok(None);
    }
    for v in &refused {
        versions.shift_remove(v);
    }
    let shown: Vec<String> = versions.keys().cloned().collect();
    if let Some(time) = obj.get_mut("time").and_then(Value::as_object_mut) {
        for v in &refused {
            time.shift_remove(v);
        }
    }
    if let Some(tags) = obj.get_mut("dist-tags").and_then(Value::as_object_mut) {
        let mut moved = Map::new();
        for (tag, target) in tags.iter() {
            let Some(target) = target.as_str() else {
                moved.insert(tag.clone(), target.clone());
                continue;
            };
            if !refused.iter().any(|r| r == target) {
                moved.insert(tag.clone(), Value::from(target));
                continue;
            }
            let stable = !is_prerelease(target);
            let newest = shown
                .iter()
                .filter(|v| !stable || !is_prerelease(v))
                .max_by(|a, b| when(a).cmp(&when(b)).then_with(|| semver_order(a, b)));
            if let Some(newest) = newest {
                moved.insert(tag.clone(), Value::from(newest.as_str()));
            }
        }
        *tags = moved;
    }
    Ok(Some(serde_json::to_vec(&doc).map_err(Error::Json)?.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{"_id":"pkg","name":"pkg","dist-tags":{"latest":"1.1.0","next":"2.0.0-rc.1","old":"1.0.0"},"versions":{"1.0.0":{"name":"pkg","version":"1.0.0","dist":{"tarball":"http://c/npm/pkg/-/pkg-1.0.0.tgz","integrity":"sha512-a"}},"1.1.0":{"name":"pkg","version":"1.1.0","dist":{"tarball":"http://c/npm/pkg/-/pkg-1.1.0.tgz"}},"2.0.0-rc.1":{"name":"pkg","version":"2.0.0-rc.1"}},"time":{"created":"2020-01-01T00:00:00.000Z","modified":"2026-01-10T00:00:00.000Z","1.0.0":"2020-01-01T00:00:00.000Z","1.1.0":"2026-01-10T00:00:00.000Z","2.0.0-rc.1":"2026-01-09T00:00:00.000Z"},"readme":"x"}"#;

    #[test]
    fn refused_versions_go_and_dist_tags_move() {
        let times = publish_times(FULL.as_bytes()).unwrap();
        assert_eq!(times.len(), 3);
        let mut keep = |r: &Listed<'_>| r.published.is_some_and(|p| p < 1_767_000_000);
        let out = filter_packument(FULL.as_bytes(), &times, &mut keep)
            .unwrap()
            .unwrap();
        let doc: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            doc["versions"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["1.0.0"]
        );
        assert_eq!(
            doc["dist-tags"],
            serde_json::json!({"latest": "1.0.0", "next": "1.0.0", "old": "1.0.0"})
        );
        assert!(doc["time"].get("1.1.0").is_none() && doc["time"].get("created").is_some());
        assert_eq!(doc["readme"], "x");
        assert!(filter_packument(FULL.as_bytes(), &times, &mut |_| true)
            .unwrap()
            .is_none());
    }

    #[test]
    fn abbreviated_packuments_take_dates_from_the_full_one() {
        let abbreviated = r#"{"name":"pkg","modified":"2026-01-10T00:00:00.000Z","dist-tags":{"latest":"1.1.0"},"versions":{"1.0.0":{"name":"pkg","version":"1.0.0"},"1.1.0":{"name":"pkg","version":"1.1.0"}}}"#;
        let times = publish_times(FULL.as_bytes()).unwrap();
        let mut keep = |r: &Listed<'_>| r.published.is_some_and(|p| p < 1_767_000_000);
        let out = filter_packument(abbreviated.as_bytes(), &times, &mut keep)
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            r#"{"name":"pkg","modified":"2026-01-10T00:00:00.000Z","dist-tags":{"latest":"1.0.0"},"versions":{"1.0.0":{"name":"pkg","version":"1.0.0"}}}"#
        );
        // Nothing left: the tag goes rather than name a missing version.
        let out = filter_packument(abbreviated.as_bytes(), &times, &mut |_| false)
            .unwrap()
            .unwrap();
        let doc: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(doc["dist-tags"], serde_json::json!({}));
    }
}
