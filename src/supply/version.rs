//! Version order per ecosystem, and the version sets deny lists name: an
//! exact version, every version, comparators (`>=1.0,<2.0`) or OSV ranges.
//! SemVer for npm, crates.io and Go (`v` prefix), PEP 440 for PyPI and
//! `Gem::Version` order for RubyGems, written out here because no kept crate
//! orders all three (pep440_rs alone pulls a dozen); a version an
//! ecosystem's rules cannot read falls back to comparing its numeric and
//! alphabetic runs, which agrees with all three on ordinary versions.

use super::Ecosystem;
use std::cmp::Ordering;

/// Orders `a` and `b` as `ecosystem` does.
pub fn compare(ecosystem: Ecosystem, a: &str, b: &str) -> Ordering {
    match ecosystem {
        Ecosystem::Npm | Ecosystem::Crates | Ecosystem::Go => {
            let sem = |v: &str| semver::Version::parse(v.trim().trim_start_matches('v')).ok();
            match (sem(a), sem(b)) {
                (Some(a), Some(b)) => a.cmp_precedence(&b),
                _ => runs(a, b),
            }
        }
        Ecosystem::Pypi => match (Pep440::parse(a), Pep440::parse(b)) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => runs(a, b),
        },
        Ecosystem::Rubygems => runs(a, b),
    }
}

/// Whether `a` and `b` name the same version (`1.0` and `1.0.0` on PyPI).
pub fn same(ecosystem: Ecosystem, a: &str, b: &str) -> bool {
    a == b || compare(ecosystem, a, b) == Ordering::Equal
}

/// Whether `version` is a pre-release (for moving npm dist-tags).
pub fn is_prerelease(ecosystem: Ecosystem, version: &str) -> bool {
    match ecosystem {
        Ecosystem::Pypi => {
            Pep440::parse(version).is_some_and(|v| v.pre.is_some() || v.dev.is_some())
        }
        _ => {
            version.trim_start_matches('v').contains('-')
                || version
                    .bytes()
                    .any(|b| b.is_ascii_alphabetic() && b != b'v')
        }
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Run<'a> {
    // A letter run sorts before a number: `1.0.a` < `1.0.0` (Gem::Version's
    // pre-release rule).
    Text(&'a str),
    Number(u128),
}

/// Gem::Version order: numeric and alphabetic runs, missing runs as 0,
/// trailing zeros insignificant, a letter run (pre-release) before a number.
fn runs(a: &str, b: &str) -> Ordering {
    let split = |v: &str| -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut current = String::new();
        let mut digits = false;
        for c in v.chars() {
            if !c.is_ascii_alphanumeric() {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
                continue;
            }
            if !current.is_empty() && c.is_ascii_digit() != digits {
                out.push(std::mem::take(&mut current));
            }
            digits = c.is_ascii_digit();
            current.push(c.to_ascii_lowercase());
        }
        if !current.is_empty() {
            out.push(current);
        }
        out
    };
    let (a, b) = (split(a), split(b));
    fn run(s: Option<&String>) -> Run<'_> {
        match s {
            None => Run::Number(0),
            Some(s) => match s.parse::<u128>() {
                Ok(n) if s.bytes().all(|b| b.is_ascii_digit()) => Run::Number(n),
                _ => Run::Text(s.as_str()),
            },
        }
    }
    for i in 0..a.len().max(b.len()) {
        match run(a.get(i)).cmp(&run(b.get(i))) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    Ordering::Equal
}

/// A PEP 440 version, as its sort key.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Pep440 {
    epoch: u64,
    release: Vec<u64>,
    /// (0 = dev-only release, before any pre-release; 1 = pre-release with
    /// its letter rank and number; 2 = final).
    pre_key: (u8, u8, u64),
    post_key: (u8, u64),
    dev_key: (u8, u64),
    local: Vec<String>,
    pre: Option<(u8, u64)>,
    dev: Option<u64>,
}

impl Pep440 {
    fn parse(raw: &str) -> Option<Pep440> {
        let lower = raw.trim().to_ascii_lowercase();
        let (public, local) = match lower.split_once('+') {
            Some((p, l)) => (
                p.to_string(),
                l.split(['.', '-', '_']).map(str::to_string).collect(),
            ),
            None => (lower, Vec::new()),
        };
        let mut s = public.trim_start_matches('v');
        let epoch = match s.split_once('!') {
            Some((e, rest)) => {
                s = rest;
                e.parse().ok()?
            }
            None => 0,
        };
        let end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let release: Vec<u64> = s[..end]
            .trim_end_matches('.')
            .split('.')
            .map(|n| n.parse().ok())
            .collect::<Option<_>>()?;
        let mut rest = &s[end..];
        let number = |rest: &mut &str| -> u64 {
            let r = rest.trim_start_matches(['.', '-', '_']);
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            let n = r[..end].parse().unwrap_or(0);
            *rest = &r[end..];
            n
        };
        let strip = |rest: &mut &str, words: &[&str]| -> bool {
            let r = rest.trim_start_matches(['.', '-', '_']);
            for w in words {
                if let Some(after) = r.strip_prefix(w) {
                    *rest = after;
                    return true;
                }
            }
            false
        };
        let mut pre = None;
        for (rank, words) in [
            (2, &["rc", "c", "preview", "pre"][..]),
            (0, &["alpha", "a"][..]),
            (1, &["beta", "b"][..]),
        ] {
            if strip(&mut rest, words) {
                pre = Some((rank, number(&mut rest)));
                break;
            }
        }
        let mut post = None;
        let implicit = rest.starts_with('-') && rest[1..].starts_with(|c: char| c.is_ascii_digit());
        if implicit || strip(&mut rest, &["post", "rev", "r"]) {
            post = Some(number(&mut rest));
        }
        let dev = strip(&mut rest, &["dev"]).then(|| number(&mut rest));
        if !rest.is_empty() {
            return None;
        }
        let mut trimmed = release;
        while trimmed.len() > 1 && trimmed.last() == Some(&0) {
            trimmed.pop();
        }
        let pre_key = match (pre, post, dev) {
            (None, None, Some(_)) => (0, 0, 0),
            (Some((rank, n)), _, _) => (1, rank, n),
            (None, _, _) => (2, 0, 0),
        };
        Some(Pep440 {
            epoch,
            release: trimmed,
            pre_key,
            post_key: post.map_or((0, 0), |n| (1, n)),
            dev_key: dev.map_or((1, 0), |n| (0, n)),
            local,
            pre,
            dev,
        })
    }
}

/// A comparison in a deny list's range (`>=1.0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `=` or `==`.
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
}

/// One OSV range event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Affected from this version on (`"0"`: from the first).
    Introduced(String),
    /// Not affected from this version on.
    Fixed(String),
    /// Affected up to and including this version.
    LastAffected(String),
    /// The range ends before this version.
    Limit(String),
}

/// The versions a deny entry covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionSet {
    /// Every version.
    Any,
    /// These versions exactly.
    Exact(Vec<String>),
    /// Versions that satisfy every comparison.
    Constraints(Vec<(Op, String)>),
    /// OSV: listed versions, or inside any of the ranges (each a list of events).
    Osv {
        /// `affected[].versions`.
        versions: Vec<String>,
        /// `affected[].ranges[].events` of SEMVER and ECOSYSTEM ranges.
        ranges: Vec<Vec<Event>>,
    },
}

impl VersionSet {
    /// Parses a plain list's third field: `*`, a version, or comparisons
    /// joined by commas (`>=1.0,<2.0`). `None` when a comparison has no version.
    pub fn parse_plain(raw: &str) -> Option<VersionSet> {
        let raw: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
        if raw.is_empty() || raw == "*" {
            return Some(VersionSet::Any);
        }
        if !raw.starts_with(['<', '>', '=', '!']) && !raw.contains(',') {
            return Some(VersionSet::Exact(vec![raw]));
        }
        let mut out = Vec::new();
        for part in raw.split(',') {
            let (op, version) = [
                ("==", Op::Eq),
                ("!=", Op::Ne),
                ("<=", Op::Le),
                (">=", Op::Ge),
                ("<", Op::Lt),
                (">", Op::Gt),
                ("=", Op::Eq),
            ]
            .iter()
            .find_map(|(p, op)| part.strip_prefix(p).map(|v| (*op, v)))
            .unwrap_or((Op::Eq, part));
            if version.is_empty() || version.starts_with(['<', '>', '=', '!']) {
                return None;
            }
            out.push((op, version.to_string()));
        }
        Some(VersionSet::Constraints(out))
    }

    /// Whether `version` is in the set, ordered as `ecosystem` orders.
    pub fn contains(&self, ecosystem: Ecosystem, version: &str) -> bool {
        let cmp = |other: &str| compare(ecosystem, version, other);
        match self {
            VersionSet::Any => true,
            VersionSet::Exact(list) => list.iter().any(|v| same(ecosystem, version, v)),
            VersionSet::Constraints(list) => list.iter().all(|(op, v)| {
                let o = cmp(v);
                match op {
                    Op::Eq => o == Ordering::Equal,
                    Op::Ne => o != Ordering::Equal,
                    Op::Lt => o == Ordering::Less,
                    Op::Le => o != Ordering::Greater,
                    Op::Gt => o == Ordering::Greater,
                    Op::Ge => o != Ordering::Less,
                }
            }),
            VersionSet::Osv { versions, ranges } => {
                versions.iter().any(|v| same(ecosystem, version, v))
                    || ranges
                        .iter()
                        .any(|events| in_range(ecosystem, version, events))
            }
        }
    }
}

/// OSV's evaluation of one range: walk its events in version order, each
/// one at or below `version` switching "affected" on or off.
fn in_range(ecosystem: Ecosystem, version: &str, events: &[Event]) -> bool {
    let at = |e: &Event| -> Option<String> {
        match e {
            Event::Introduced(v) if v == "0" => None,
            Event::Introduced(v) | Event::Fixed(v) | Event::LastAffected(v) | Event::Limit(v) => {
                Some(v.clone())
            }
        }
    };
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by(|a, b| match (at(a), at(b)) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => compare(ecosystem, &a, &b),
    });
    let mut affected = false;
    for event in sorted {
        let reached = |v: &str| compare(ecosystem, version, v) != Ordering::Less;
        match event {
            Event::Introduced(v) if v == "0" || reached(v) => affected = true,
            Event::Fixed(v) | Event::Limit(v) if reached(v) => affected = false,
            Event::LastAffected(v) if compare(ecosystem, version, v) == Ordering::Greater => {
                affected = false
            }
            _ => {}
        }
    }
    affected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pep_440_order() {
        let order = [
            "1.0.dev1",
            "1.0a1",
            "1.0a2.dev1",
            "1.0a2",
            "1.0b1",
            "1.0rc1",
            "1.0",
            "1.0.post1",
            "1.0.1",
            "1.1",
            "2!0.1",
        ];
        for pair in order.windows(2) {
            assert_eq!(
                compare(Ecosystem::Pypi, pair[0], pair[1]),
                Ordering::Less,
                "{pair:?}"
            );
        }
        assert!(same(Ecosystem::Pypi, "1.0", "1.0.0"));
        assert!(same(Ecosystem::Pypi, "1.0-1", "1.0.post1"));
        assert!(same(Ecosystem::Pypi, "1.0RC1", "1.0rc1"));
        assert!(is_prerelease(Ecosystem::Pypi, "2.0b3"));
        assert!(!is_prerelease(Ecosystem::Pypi, "2.0.post3"));
    }

    #[test]
    fn semver_and_gem_order() {
        let lt = |e, a, b| assert_eq!(compare(e, a, b), Ordering::Less, "{a} < {b}");
        lt(Ecosystem::Npm, "1.0.0-beta.2", "1.0.0");
        lt(Ecosystem::Npm, "1.9.0", "1.10.0");
        lt(Ecosystem::Go, "v1.2.3", "v1.10.0");
        lt(Ecosystem::Crates, "0.9.9", "0.10.0");
        lt(Ecosystem::Rubygems, "1.0.0.pre", "1.0.0");
        lt(Ecosystem::Rubygems, "0.2.0", "1.0.0");
        lt(Ecosystem::Rubygems, "1.9", "1.10");
        assert!(same(Ecosystem::Rubygems, "1.0", "1.0.0"));
        assert!(is_prerelease(Ecosystem::Npm, "2.0.0-rc.1"));
        assert!(!is_prerelease(Ecosystem::Go, "v2.0.0"));
    }

    #[test]
    fn plain_ranges() {
        let set = VersionSet::parse_plain(">= 1.0, <2.0").unwrap();
        assert!(set.contains(Ecosystem::Npm, "1.5.0"));
        assert!(set.contains(Ecosystem::Npm, "1.0.0"));
        assert!(!set.contains(Ecosystem::Npm, "2.0.0"));
        assert!(!set.contains(Ecosystem::Npm, "0.9.0"));
        assert_eq!(VersionSet::parse_plain("*"), Some(VersionSet::Any));
        assert!(VersionSet::parse_plain("1.2.3")
            .unwrap()
            .contains(Ecosystem::Pypi, "1.2.3.0"));
        assert!(VersionSet::parse_plain("!=1.0")
            .unwrap()
            .contains(Ecosystem::Pypi, "1.1"));
        assert_eq!(VersionSet::parse_plain(">="), None);
        assert_eq!(VersionSet::parse_plain(">=<1"), None);
    }

    #[test]
    fn osv_ranges() {
        let intro = |v: &str| Event::Introduced(v.into());
        let all = VersionSet::Osv {
            versions: vec![],
            ranges: vec![vec![intro("0")]],
        };
        assert!(all.contains(Ecosystem::Npm, "0.0.1"));
        let window = VersionSet::Osv {
            versions: vec!["0.1.0".into()],
            ranges: vec![vec![
                intro("1.2.0"),
                Event::Fixed("1.4.0".into()),
                intro("2.0.0"),
                Event::LastAffected("2.1.0".into()),
            ]],
        };
        for (v, hit) in [
            ("0.1.0", true),
            ("1.1.9", false),
            ("1.2.0", true),
            ("1.3.7", true),
            ("1.4.0", false),
            ("1.9.0", false),
            ("2.0.0", true),
            ("2.1.0", true),
            ("2.1.1", false),
        ] {
            assert_eq!(window.contains(Ecosystem::Npm, v), hit, "{v}");
        }
    }
}
