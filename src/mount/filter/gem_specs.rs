//! RubyGems' legacy indexes without refused releases: `specs.4.8` and
//! `prerelease_specs.4.8` lose the entries of refused versions;
//! `latest_specs.4.8`, which names each gem's newest version per platform,
//! names instead the newest one shown — found in the full `specs.4.8`. The
//! Marshal subset is read and written by [`super::marshal`]; the `.gz`
//! forms are gunzipped (bounded) and gzipped again. Decoding and encoding
//! are CPU work: the caller runs them off the async runtime.

use super::marshal::{self, Spec};
use super::{Error, Keep, Listed};
use bytes::Bytes;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Arc;

/// Larger than any legacy index unpacks to: past it the document is refused
/// rather than unpacked into memory (a gzip bomb).
const MAX_UNPACKED: u64 = 1 << 30;

/// The entries of a legacy index body; `gzipped` for the `.gz` forms.
pub fn decode(body: &[u8], gzipped: bool) -> Result<Vec<Spec>, Error> {
    let unpacked;
    let data = match gzipped {
        true => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .take(MAX_UNPACKED + 1)
                .read_to_end(&mut out)
                .map_err(Error::Gzip)?;
            if out.len() as u64 > MAX_UNPACKED {
                return Err(Error::TooLarge);
            }
            unpacked = out;
            &unpacked[..]
        }
        false => body,
    };
    marshal::read_specs(data).map_err(Error::Marshal)
}

/// `specs` as a legacy index body, gzipped for the `.gz` forms.
pub fn encode(specs: &[Spec], gzipped: bool) -> Bytes {
    let data = marshal::write_specs(specs);
    if !gzipped {
        return data.into();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    gz.write_all(&data).expect("gzip into memory");
    gz.finish().expect("gzip into memory").into()
}

fn listed(spec: &Spec) -> Listed<'_> {
    Listed {
        project: &spec.name,
        version: &spec.version,
        // The legacy index carries no dates.
        published: None,
    }
}

/// `specs` without the entries `keep` refuses (all platforms of a version
/// go together); `None` when it refuses none.
pub fn filter_specs(specs: &[Spec], keep: &mut Keep<'_>) -> Option<Vec<Spec>> {
    let mut verdicts: HashMap<(&str, &str), bool> = HashMap::new();
    let mut shown = Vec::with_capacity(specs.len());
    for spec in specs {
        let kept = *verdicts
            .entry((&spec.name, &spec.version))
            .or_insert_with(|| keep(&listed(spec)));
        if kept {
            shown.push(spec.clone());
        }
    }
    (shown.len() != specs.len()).then_some(shown)
}

/// `latest` (the upstream's `latest_specs`) with each refused entry replaced
/// by the newest version of the same gem and platform in `full` (the
/// upstream's `specs`) that `keep` shows, by `order` (Gem::Version's), or
/// left out when there is none. `None` when `keep` refuses no entry of `latest`.
pub fn filter_latest(
    latest: &[Spec],
    full: &[Spec],
    order: &dyn Fn(&str, &str) -> Ordering,
    keep: &mut Keep<'_>,
) -> Option<Vec<Spec>> {
    let refused: HashMap<(&str, &str), &str> = latest
        .iter()
        .filter(|spec| !keep(&listed(spec)))
        .map(|spec| ((&*spec.name, &*spec.platform), &*spec.version))
        .collect();
    if refused.is_empty() {
        return None;
    }
    // Newest first, so the first version shown is the one.
    let mut candidates: Vec<&Spec> = full
        .iter()
        .filter(|s| {
            refused
                .get(&(&*s.name, &*s.platform))
                .is_some_and(|v| *v != &*s.version)
        })
        .collect();
    candidates.sort_by(|a, b| order(&b.version, &a.version));
    let mut newest: HashMap<(&str, &str), Arc<str>> = HashMap::new();
    let mut judged: HashMap<(&str, &str), bool> = HashMap::new();
    for spec in candidates {
        let slot = (&*spec.name, &*spec.platform);
        if newest.contains_key(&slot) {
            continue;
        }
        let shown = *judged
            .entry((&spec.name, &spec.version))
            .or_insert_with(|| keep(&listed(spec)));
        if shown {
            newest.insert(slot, spec.version.clone());
        }
    }
    let out = latest
        .iter()
        .filter_map(|spec| {
            let slot = (&*spec.name, &*spec.platform);
            if !refused.contains_key(&slot) {
                return Some(spec.clone());
            }
            newest.get(&slot).map(|version| Spec {
                version: version.clone(),
                ..spec.clone()
            })
        })
        .collect();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, version: &str, platform: &str) -> Spec {
        Spec {
            name: name.into(),
            version: version.into(),
            platform: platform.into(),
        }
    }

    fn numeric(a: &str, b: &str) -> Ordering {
        let parse = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap()).collect() };
        parse(a).cmp(&parse(b))
    }

    #[test]
    fn refused_versions_leave_every_platform() {
        let specs = vec![
            spec("a", "1.0", "ruby"),
            spec("a", "2.0", "ruby"),
            spec("a", "2.0", "java"),
            spec("b", "1.0", "ruby"),
        ];
        let mut keep = |l: &Listed<'_>| !(l.project == "a" && l.version == "2.0");
        assert_eq!(
            filter_specs(&specs, &mut keep),
            Some(vec![spec("a", "1.0", "ruby"), spec("b", "1.0", "ruby")])
        );
        let mut all = |_: &Listed<'_>| true;
        assert_eq!(filter_specs(&specs, &mut all), None);
    }

    #[test]
    fn latest_names_the_newest_version_shown() {
        let full = vec![
            spec("a", "1.0", "ruby"),
            spec("a", "1.10", "ruby"),
            spec("a", "1.9", "ruby"),
            spec("a", "2.0", "ruby"),
            spec("a", "2.0", "java"),
            spec("b", "1.0", "ruby"),
            spec("c", "3.0", "ruby"),
        ];
        let latest = vec![
            spec("a", "2.0", "ruby"),
            spec("a", "2.0", "java"),
            spec("b", "1.0", "ruby"),
            spec("c", "3.0", "ruby"),
        ];
        let mut asked = Vec::new();
        let mut keep = |l: &Listed<'_>| {
            asked.push(format!("{} {}", l.project, l.version));
            !(l.project == "a" && l.version == "2.0") && l.project != "c"
        };
        let got = filter_latest(&latest, &full, &numeric, &mut keep).unwrap();
        // a's newest shown is 1.10 (numeric order, not text); java has no
        // other version and goes; c has nothing shown and goes.
        assert_eq!(
            got,
            vec![spec("a", "1.10", "ruby"), spec("b", "1.0", "ruby")]
        );
        // Older versions of a are not asked about once 1.10 is shown.
        assert!(!asked.contains(&"a 1.0".to_string()), "{asked:?}");
        let mut all = |_: &Listed<'_>| true;
        assert_eq!(filter_latest(&latest, &full, &numeric, &mut all), None);
    }

    #[test]
    fn gzipped_bodies_round_trip_and_bad_ones_are_errors() {
        let specs = vec![spec("a", "1.0", "ruby")];
        assert_eq!(decode(&encode(&specs, true), true).unwrap(), specs);
        assert_eq!(decode(&encode(&specs, false), false).unwrap(), specs);
        assert!(matches!(decode(b"not gzip", true), Err(Error::Gzip(_))));
        assert!(matches!(
            decode(b"\x04\x08[", false),
            Err(Error::Marshal(_))
        ));
        let gz = encode(&specs, true);
        assert!(decode(&gz[..gz.len() / 2], true).is_err());
    }
}
