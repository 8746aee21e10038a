//! `CacheKey::canonical`: one string per key and one key per string
//! (`CacheKey::try_from_canonical` gives the key back). It names a key's
//! metadata file and keys the 404 memory and the digest registry.
//!
//! `<namespace>\n<segment>/<segment>/…`, where the namespace is `mirrors`,
//! `mount:<name>` or a host's name (written `host:<name>` when the name alone
//! would read as one of the others), and where, in names and segments, `%`,
//! `/`, control bytes and bytes that are not UTF-8 are written `%XX`.
//!
//! Earlier versions wrote a lossy form: bytes that are not UTF-8 became
//! U+FFFD, and a host named `mirrors` read as the mirrors' namespace. For
//! every key whose names and path are UTF-8 without `%` or control bytes, on
//! a host not named `mirrors`, `host:…` or `mount:…`, both forms are the same
//! string, so an existing cache keeps its names. For the others,
//! [`CacheKey::legacy_canonical`] gives the old name, and metadata written
//! under it is still read: it is bound to its body's inode, so a name two
//! keys once shared never lends one of them the other's metadata.

use super::{CacheKey, Namespace};
use std::fmt::Write;

const MIRRORS: &str = "mirrors";
const MOUNT: &str = "mount:";
const HOST: &str = "host:";

impl CacheKey {
    /// The key's one-string name, unique per key (see the module doc).
    pub fn canonical(&self) -> String {
        let mut out = String::with_capacity(64);
        match &self.namespace {
            Namespace::Mirrors => out.push_str(MIRRORS),
            Namespace::Mount(name) => {
                out.push_str(MOUNT);
                escape(name.as_bytes(), &mut out);
            }
            Namespace::Host(host) => {
                if host == MIRRORS || host.starts_with(MOUNT) || host.starts_with(HOST) {
                    out.push_str(HOST);
                }
                escape(host.as_bytes(), &mut out);
            }
        }
        out.push('\n');
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            escape(segment, &mut out);
        }
        out
    }

    /// The name earlier versions gave this key, when it differs from
    /// [`CacheKey::canonical`]: where their metadata for it is.
    pub fn legacy_canonical(&self) -> Option<String> {
        let path: Vec<_> = self
            .segments
            .iter()
            .map(|s| String::from_utf8_lossy(s))
            .collect();
        let path = path.join("/");
        let legacy = match &self.namespace {
            Namespace::Mirrors => format!("{MIRRORS}\n{path}"),
            Namespace::Host(host) => format!("{host}\n{path}"),
            Namespace::Mount(name) => format!("{MOUNT}{name}\n{path}"),
        };
        (legacy != self.canonical()).then_some(legacy)
    }

    /// The key named `name`, if `name` is the canonical name of a valid key.
    pub fn try_from_canonical(name: &str) -> Option<CacheKey> {
        let (ns, path) = name.split_once('\n')?;
        let text = |s: &str| String::from_utf8(unescape(s)?).ok();
        let namespace = if ns == MIRRORS {
            Namespace::Mirrors
        } else if let Some(mount) = ns.strip_prefix(MOUNT) {
            Namespace::Mount(text(mount)?)
        } else if let Some(host) = ns.strip_prefix(HOST) {
            Namespace::Host(text(host)?)
        } else {
            Namespace::Host(text(ns)?)
        };
        let segments = path.split('/').map(unescape).collect::<Option<Vec<_>>>()?;
        let key = CacheKey::try_from_segments(namespace, segments).ok()?;
        // Only the one spelling: `%41` for `A` names no key.
        (key.canonical() == name).then_some(key)
    }

    /// The canonical name of the key an earlier version named `legacy` (the
    /// digests its index documents list are keyed so). Exact unless the old
    /// name held U+FFFD for bytes that were not UTF-8, which cannot be told
    /// apart from a real U+FFFD (that one is assumed).
    pub fn canonical_from_legacy(legacy: &str) -> String {
        let Some((ns, path)) = legacy.split_once('\n') else {
            return legacy.to_string();
        };
        let namespace = if ns == MIRRORS {
            Namespace::Mirrors
        } else if let Some(mount) = ns.strip_prefix(MOUNT) {
            Namespace::Mount(mount.to_string())
        } else {
            Namespace::Host(ns.to_string())
        };
        // Built unvalidated: this only renames, it admits nothing.
        CacheKey {
            namespace,
            segments: path.split('/').map(|s| s.as_bytes().to_vec()).collect(),
        }
        .canonical()
    }
}

/// Appends `bytes`, with `%`, `/`, control bytes and non-UTF-8 bytes as `%XX`.
fn escape(bytes: &[u8], out: &mut String) {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '%' || c == '/' || c.is_ascii_control() {
                let _ = write!(out, "%{:02X}", c as u32);
            } else {
                out.push(c);
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// The bytes `escape` wrote `s` from; `None` for a `%` without two hex digits.
fn unescape(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(ns: Namespace, segments: &[&[u8]]) -> CacheKey {
        CacheKey::try_from_segments(ns, segments.iter().map(|s| s.to_vec()).collect())
            .expect("a valid key")
    }

    #[test]
    fn names_the_old_form_shared_are_now_apart() {
        let mirrors = Namespace::Mirrors;
        let groups = [
            vec![
                key(mirrors.clone(), &[b"x"]),
                key(Namespace::Host("mirrors".into()), &[b"x"]),
                key(Namespace::Host("host:mirrors".into()), &[b"x"]),
            ],
            vec![
                key(mirrors.clone(), &[b"a\xff"]),
                key(mirrors.clone(), &[b"a\xfe"]),
                key(mirrors.clone(), &["a\u{fffd}".as_bytes()]),
            ],
            vec![
                key(mirrors.clone(), &[b"a%b"]),
                key(mirrors.clone(), &[b"a%25b"]),
            ],
            vec![
                key(Namespace::Mount("80".into()), &[b"f"]),
                key(Namespace::Host("mount:80".into()), &[b"f"]),
                key(Namespace::Host("host:80".into()), &[b"f"]),
                key(Namespace::Host("80".into()), &[b"f"]),
            ],
        ];
        for group in groups {
            let names: std::collections::HashSet<_> = group.iter().map(|k| k.canonical()).collect();
            assert_eq!(names.len(), group.len(), "{group:?}");
            for k in &group {
                assert_eq!(
                    CacheKey::try_from_canonical(&k.canonical()).as_ref(),
                    Some(k)
                );
            }
        }
    }

    #[test]
    fn ordinary_keys_keep_the_names_earlier_versions_gave_them() {
        for (k, name) in [
            (
                key(Namespace::Mirrors, &[b"distfiles", b"foo-1.0.tar.gz"]),
                "mirrors\ndistfiles/foo-1.0.tar.gz",
            ),
            (
                key(
                    Namespace::Host("a.example:8080".into()),
                    &[b"x", "é y".as_bytes()],
                ),
                "a.example:8080\nx/é y",
            ),
            (
                key(
                    Namespace::Mount("pypi".into()),
                    &[b"files", b"h", b"x+cpu.whl"],
                ),
                "mount:pypi\nfiles/h/x+cpu.whl",
            ),
        ] {
            assert_eq!(k.canonical(), name);
            assert_eq!(k.legacy_canonical(), None, "one name for both versions");
            assert_eq!(CacheKey::canonical_from_legacy(name), name);
        }
        let percent = key(Namespace::Mount("pypi".into()), &[b"a%b.whl"]);
        assert_eq!(percent.canonical(), "mount:pypi\na%25b.whl");
        assert_eq!(
            percent.legacy_canonical().as_deref(),
            Some("mount:pypi\na%b.whl")
        );
        assert_eq!(
            CacheKey::canonical_from_legacy("mount:pypi\na%b.whl"),
            percent.canonical()
        );
    }

    #[test]
    fn strings_that_name_no_key_are_refused() {
        for name in [
            "",
            "mirrors",
            "mirrors\n",
            "mirrors\na//b",
            "mirrors\n%41",
            "mirrors\n%4",
            "mirrors\na%2Fb",
            "mirrors\n.package-cache/lock",
            "mirrors\n..",
        ] {
            assert_eq!(CacheKey::try_from_canonical(name), None, "{name:?}");
        }
    }

    fn name() -> impl Strategy<Value = String> {
        let chars = prop::sample::select(vec!['a', 'z', '.', ':', '%', '\n', '/', 'é', '\u{fffd}']);
        prop_oneof![
            Just("mirrors".to_string()),
            Just("mount:x".to_string()),
            Just("host:x".to_string()),
            prop::collection::vec(chars, 1..8).prop_map(|c| c.into_iter().collect()),
        ]
    }

    fn namespace() -> impl Strategy<Value = Namespace> {
        prop_oneof![
            Just(Namespace::Mirrors),
            name().prop_map(Namespace::Host),
            name().prop_map(Namespace::Mount),
        ]
    }

    fn segment() -> impl Strategy<Value = Vec<u8>> {
        // Random bytes, with the ones the old form lost or confused made likely.
        let byte = prop_oneof![
            any::<u8>(),
            prop::sample::select(vec![b'%', b'a', b'2', b'5', 0xef, 0xbf, 0xbd, 0xff]),
        ];
        prop::collection::vec(byte, 1..10)
    }

    fn cache_key() -> impl Strategy<Value = CacheKey> {
        (namespace(), prop::collection::vec(segment(), 1..4))
            .prop_filter_map("a valid key", |(ns, segments)| {
                CacheKey::try_from_segments(ns, segments).ok()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn every_key_comes_back_from_its_name(k in cache_key()) {
            let name = k.canonical();
            prop_assert_eq!(CacheKey::try_from_canonical(&name), Some(k));
        }

        #[test]
        fn different_keys_have_different_names(a in cache_key(), b in cache_key()) {
            prop_assert_eq!(a == b, a.canonical() == b.canonical());
        }

        #[test]
        fn keys_differing_in_one_byte_have_different_names(
            k in cache_key(), at in any::<prop::sample::Index>(), byte in any::<u8>()
        ) {
            let mut segments = k.segments.clone();
            let last = segments.last_mut().expect("a key has a segment");
            let i = at.index(last.len());
            last[i] = byte;
            if let Ok(other) = CacheKey::try_from_segments(k.namespace.clone(), segments) {
                prop_assert_eq!(other == k, other.canonical() == k.canonical());
            }
        }
    }
}
