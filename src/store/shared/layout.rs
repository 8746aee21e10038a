//! Every object name in the bucket, in one place. Names are relative to the
//! configured prefix (`s3://bucket/PREFIX/…`):
//!
//! - `bodies/<sha256>`: a body whose digest was known before its upload began
//!   (small bodies, held whole; or a digest an index lists). Identical bodies under
//!   different keys share it.
//! - `bodies/u-[<node>-]<32 hex>`: a body streamed up before its digest was known
//!   (random; tagged with the node's name when it has one, so that a restarted node
//!   can abort the uploads it left behind).
//! - `refs/<sha256 of key>`: one reference per cache key, the commit point.
//! - `artifacts/<sha256 of ABI, 32 hex>/<artifact name>`: one reference per built artifact.
//! - `docs/<sha256 of key>`: an index document, head and body in one object.
//! - `policy/first-seen/<sha256 of key>`: when the fleet first saw a release
//!   the supply-chain policy dates itself (created once; the earliest writer wins).
//!
//! Pure: no I/O, so the names can be checked in unit tests.

use sha2::{Digest, Sha256};

/// Where bodies live.
pub(super) const BODIES: &str = "bodies/";
/// Where the references of cache entries live.
pub(super) const REFS: &str = "refs/";
/// Where the references of built artifacts live.
pub(super) const ARTIFACTS: &str = "artifacts/";
/// Where index documents live.
pub(super) const DOCS: &str = "docs/";
/// Where first-seen times live.
pub(super) const FIRST_SEEN: &str = "policy/first-seen/";
/// The prefix of bodies named before their digest was known.
const RANDOM_BODY: &str = "u-";

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `s` is a lower-case hex sha256.
pub(super) fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The body named by its content.
pub(super) fn digest_body(sha256: &str) -> String {
    debug_assert!(is_sha256(sha256));
    format!("{BODIES}{sha256}")
}

/// 32 random hex digits.
pub(super) fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // The OS's generator cannot fail on Linux after boot; a repeated id would only make
    // two uploads collide, which the reference's digest check would then catch.
    let _ = getrandom::fill(&mut bytes);
    hex::encode(bytes)
}

/// Whether `tag` can name a node in body names: 1 to 32 of `[a-z0-9]`.
pub(super) fn valid_node(tag: &str) -> bool {
    (1..=32).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A fresh body name for an upload whose digest is not known yet, tagged with `node`.
pub(super) fn random_body(node: Option<&str>) -> String {
    match node {
        Some(node) => format!("{BODIES}{RANDOM_BODY}{node}-{}", random_id()),
        None => format!("{BODIES}{RANDOM_BODY}{}", random_id()),
    }
}

/// The node tag of a random body name, if it has one.
pub(super) fn body_node(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(BODIES)?.strip_prefix(RANDOM_BODY)?;
    let (node, random) = rest.split_once('-')?;
    (valid_node(node) && is_random(random)).then_some(node)
}

fn is_random(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether the body `name` is named by its content (and so may be shared by keys).
pub(super) fn is_digest_body(name: &str) -> bool {
    name.strip_prefix(BODIES).is_some_and(is_sha256)
}

/// Whether `name` is a body name at all (digest or random).
pub(super) fn is_body(name: &str) -> bool {
    match name.strip_prefix(BODIES) {
        Some(rest) if is_sha256(rest) => true,
        Some(rest) => rest
            .strip_prefix(RANDOM_BODY)
            .is_some_and(|r| is_random(r) || body_node(name).is_some()),
        None => false,
    }
}

/// The reference of cache key `key`.
pub(super) fn entry_ref(key: &str) -> String {
    format!("{REFS}{}", sha256_hex(key.as_bytes()))
}

/// The reference of artifact `name` built for `abi`.
pub(super) fn artifact_ref(abi: &str, name: &str) -> String {
    format!("{ARTIFACTS}{}/{name}", &sha256_hex(abi.as_bytes())[..32])
}

/// The document of key `key`.
pub(super) fn doc(key: &str) -> String {
    format!("{DOCS}{}", sha256_hex(key.as_bytes()))
}

/// The first-seen record of release key `key`.
pub(super) fn first_seen(key: &str) -> String {
    format!("{FIRST_SEEN}{}", sha256_hex(key.as_bytes()))
}

/// Whether `name` is the name of a reference (entry or artifact).
pub(super) fn is_reference(name: &str) -> bool {
    name.strip_prefix(REFS).is_some_and(is_sha256)
        || name
            .strip_prefix(ARTIFACTS)
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(abi, artifact)| abi.len() == 32 && valid_artifact_name(artifact))
}

/// An artifact name is safe as an object name: `[A-Za-z0-9._+@-]`, no leading dot,
/// at most 255 bytes (the names `builds` makes: `NAME-VERSION@RUNTIME.tgz`).
pub(super) fn valid_artifact_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+@-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_named_by_digest_or_at_random() {
        let sha = sha256_hex(b"body");
        let named = digest_body(&sha);
        assert_eq!(named, format!("bodies/{sha}"));
        assert!(is_body(&named) && is_digest_body(&named));
        let a = random_body(None);
        let b = random_body(None);
        assert_ne!(a, b);
        assert!(a.starts_with("bodies/u-") && a.len() == "bodies/u-".len() + 32);
        assert!(is_body(&a) && !is_digest_body(&a));
        assert_eq!(body_node(&a), None);
        let tagged = random_body(Some("node7"));
        assert!(tagged.starts_with("bodies/u-node7-") && is_body(&tagged));
        assert_eq!(body_node(&tagged), Some("node7"));
        assert!(!is_digest_body(&tagged));
        for bad in [
            "bodies/",
            "bodies/u-",
            "bodies/xyz",
            "refs/00",
            "bodies/u-../x",
            "bodies/u-Node-00000000000000000000000000000000",
            "bodies/u-a-b-00000000000000000000000000000000",
        ] {
            assert!(!is_body(bad), "{bad}");
        }
        assert!(valid_node("a1") && !valid_node("") && !valid_node("a-b"));
        assert!(!valid_node(&"a".repeat(33)));
    }

    #[test]
    fn references_hash_their_keys() {
        let r = entry_ref("/distfiles/a.tar.gz");
        assert_eq!(r, format!("refs/{}", sha256_hex(b"/distfiles/a.tar.gz")));
        assert!(is_reference(&r));
        assert_ne!(r, entry_ref("/distfiles/b.tar.gz"));
        let a = artifact_ref(
            "cpython-311-x86_64-linux-gnu 3.11.2",
            "six-1.16.0@py311.tgz",
        );
        assert!(a.starts_with("artifacts/") && a.ends_with("/six-1.16.0@py311.tgz"));
        assert!(is_reference(&a));
        assert_ne!(a, artifact_ref("other abi", "six-1.16.0@py311.tgz"));
        assert!(!is_reference(&doc("/pypi/simple/six/")));
        assert!(!is_reference(&digest_body(&sha256_hex(b""))));
    }

    #[test]
    fn artifact_names_stay_simple() {
        assert!(valid_artifact_name("thin-1.2.11@ruby31.tgz"));
        assert!(valid_artifact_name("0123abcd@py311.tgz"));
        for bad in ["", ".hidden", "a/b", "a b", "a\0b", &"x".repeat(256)] {
            assert!(!valid_artifact_name(bad), "{bad:?}");
        }
    }
}
