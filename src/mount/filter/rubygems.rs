//! RubyGems' compact index without refused releases. `/info/NAME` loses the
//! lines of refused versions (dated by their `created_at` requirement, the
//! compact index's v2 field, when there is one); its MD5 changes, and
//! bundler compares that MD5 with the one `/versions` lists for the gem, so
//! `/versions` is rewritten with the filtered MD5 of every gem whose `/info`
//! was filtered ([`InfoView`]) and without its refused versions.

use super::{Error, Keep, Listed};
use crate::config::supply::parse_instant;
use bytes::Bytes;
use md5::{Digest, Md5};
use std::collections::{HashMap, HashSet};

/// Lower-case hex MD5 of `body`: what bundler expects as the ETag of a
/// compact-index file and in `/versions`.
pub fn md5_hex(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// What filtering one `/info/NAME` did, for the `/versions` served beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoView {
    /// MD5 of the upstream's `/info/NAME` (as `/versions` lists it).
    pub upstream_md5: String,
    /// MD5 of the filtered body.
    pub filtered_md5: String,
    /// The refused versions, as lines spell them (`1.0.0`, `1.0.0-java`).
    pub refused: HashSet<String>,
}

/// `/info/NAME` of gem `name` without the versions `keep` refuses, and what
/// `/versions` must say about it. `Ok(None)`: nothing refused.
pub fn filter_info(
    body: &[u8],
    name: &str,
    keep: &mut Keep<'_>,
) -> Result<Option<(Bytes, InfoView)>, Error> {
    let text = std::str::from_utf8(body).map_err(|_| Error::NotUtf8)?;
    let mut out = String::with_capacity(text.len());
    let mut refused = HashSet::new();
    let mut in_body = false;
    for line in text.split_inclusive('\n') {
        if !in_body {
            // The `---` line opens the list; anything before it is a header.
            in_body = line.trim_end() == "---";
            out.push_str(line);
            continue;
        }
        let Some((field, rest)) = line.split_once(' ') else {
            out.push_str(line);
            continue;
        };
        // `VERSION[-PLATFORM]`: gem versions never contain '-'.
        let version = field.split('-').next().unwrap_or(field);
        let reqs = rest.rsplit_once('|').map_or("", |(_, r)| r);
        let published = reqs
            .split(',')
            .find_map(|r| r.trim().strip_prefix("created_at:"))
            .and_then(parse_instant);
        if keep(&Listed {
            project: name,
            version,
            published,
        }) {
            out.push_str(line);
        } else {
            refused.insert(field.to_string());
        }
    }
    if refused.is_empty() {
        return Ok(None);
    }
    let view = InfoView {
        upstream_md5: md5_hex(body),
        filtered_md5: md5_hex(out.as_bytes()),
        refused,
    };
    Ok(Some((out.into(), view)))
}

/// `/versions` with what the filtered `/info` files say: for each gem in
/// `views`, its refused versions left out of its lines (a line left with none
/// goes), and on its last line the filtered MD5, when the upstream's last
/// line named the `/info` that was filtered. Lines of other gems, and the
/// header, byte for byte. `Ok(None)`: nothing changed.
pub fn filter_versions(
    body: &[u8],
    views: &HashMap<String, InfoView>,
) -> Result<Option<Bytes>, Error> {
    if views.is_empty() {
        return Ok(None);
    }
    let text = std::str::from_utf8(body).map_err(|_| Error::NotUtf8)?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let start = lines
        .iter()
        .position(|l| l.trim_end() == "---")
        .map_or(lines.len(), |i| i + 1);
    let parse = |line: &str| -> Option<(String, String, String)> {
        let mut fields = line.trim_end_matches('\n').splitn(3, ' ');
        let (name, versions, md5) = (fields.next()?, fields.next()?, fields.next()?);
        views
            .contains_key(name)
            .then(|| (name.to_string(), versions.to_string(), md5.to_string()))
    };
    // Each filtered gem's lines, with the versions they keep.
    let mut kept: Vec<Option<(String, Vec<String>, String)>> = vec![None; lines.len()];
    let mut upstream_last: HashMap<String, String> = HashMap::new();
    let mut last_kept: HashMap<String, usize> = HashMap::new();
    for (i, line) in lines.iter().enumerate().skip(start) {
        let Some((name, versions, md5)) = parse(line) else {
            continue;
        };
        let view = &views[&name];
        // A yank (`-1.0.0`) of a refused version goes too.
        let left: Vec<String> = versions
            .split(',')
            .filter(|v| !v.is_empty() && !view.refused.contains(v.trim_start_matches('-')))
            .map(str::to_string)
            .collect();
        upstream_last.insert(name.clone(), md5.clone());
        if !left.is_empty() {
            last_kept.insert(name.clone(), i);
        }
        kept[i] = Some((name, left, md5));
    }
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    for (i, line) in lines.iter().enumerate() {
        let Some((name, left, md5)) = &kept[i] else {
            out.push_str(line);
            continue;
        };
        if left.is_empty() {
            changed = true;
            continue;
        }
        let view = &views[name];
        let md5 = if last_kept.get(name) == Some(&i)
            && upstream_last.get(name) == Some(&view.upstream_md5)
        {
            view.filtered_md5.as_str()
        } else {
            md5.as_str()
        };
        let new = format!("{name} {} {md5}", left.join(","));
        changed |= new != line.trim_end_matches('\n');
        out.push_str(&new);
        if line.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(changed.then(|| out.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "---\n\
        0.1.0 |checksum:aaaa,ruby:>= 2.0\n\
        0.2.0 |checksum:bbbb,ruby:>= 2.0,created_at:2026-01-01T00:00:00Z\n\
        1.0.0 dep:>= 1|checksum:cccc,created_at:2026-02-01T00:00:00Z\n\
        1.0.0-x86_64-linux |checksum:dddd,created_at:2026-02-01T00:00:00Z\n";

    #[test]
    fn info_loses_refused_lines_and_versions_follow_its_md5() {
        let mut asked = Vec::new();
        let mut keep = |r: &Listed<'_>| {
            asked.push((r.version.to_string(), r.published));
            r.version != "1.0.0"
        };
        let (body, view) = filter_info(INFO.as_bytes(), "crtiny", &mut keep)
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&body),
            "---\n0.1.0 |checksum:aaaa,ruby:>= 2.0\n0.2.0 |checksum:bbbb,ruby:>= 2.0,created_at:2026-01-01T00:00:00Z\n"
        );
        assert_eq!(asked[0], ("0.1.0".to_string(), None));
        assert_eq!(asked[1], ("0.2.0".to_string(), Some(1_767_225_600)));
        assert_eq!(view.upstream_md5, md5_hex(INFO.as_bytes()));
        assert_eq!(view.filtered_md5, md5_hex(&body));
        assert_eq!(
            view.refused,
            HashSet::from(["1.0.0".to_string(), "1.0.0-x86_64-linux".to_string()])
        );
        assert!(filter_info(INFO.as_bytes(), "crtiny", &mut |_| true)
            .unwrap()
            .is_none());

        let old = md5_hex(b"an older info");
        let versions = format!(
            "created_at: 2026-01-01T00:00:00Z\n---\ncrdep 0.1.0 1111\ncrtiny 0.1.0,0.2.0 {old}\ncrtiny 1.0.0,1.0.0-x86_64-linux,-0.2.0 {}\n",
            view.upstream_md5
        );
        let views = HashMap::from([("crtiny".to_string(), view.clone())]);
        let out = filter_versions(versions.as_bytes(), &views)
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            format!(
                "created_at: 2026-01-01T00:00:00Z\n---\ncrdep 0.1.0 1111\ncrtiny 0.1.0,0.2.0 {old}\ncrtiny -0.2.0 {}\n",
                view.filtered_md5
            )
        );
        assert!(filter_versions(versions.as_bytes(), &HashMap::new())
            .unwrap()
            .is_none());
    }
}
