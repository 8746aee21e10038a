//! `Digest`: what an index says an artifact hashes to — PyPI's and RubyGems'
//! sha256, npm's `dist.integrity` (sha512, sha384…) or legacy `shasum`
//! (sha1), a Cargo index line's `cksum` (sha256), Go's `h1:` dirhash — parsed
//! once into one typed value, carried from the index to the fill, and checked
//! there before the body is committed. `BodyHasher` hashes a body as it is
//! written (always sha256, which the entry's metadata records, and the listed
//! algorithm beside it); `h1` computes Go's hash over a finished module zip,
//! which cannot be hashed while streaming. Plain values and pure functions:
//! the caller hands over the bytes (or a reader over them).

pub mod h1;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use std::fmt;

/// A digest listed for one artifact. Equality is over algorithm and bytes.
/// Its text form (`Display`, serde) is `ALGORITHM:HEX` (`sha256:…`,
/// `sha512:…`, `sha1:…`), or `h1:BASE64` for Go, as go.sum writes it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Digest {
    /// SHA-1 (npm's legacy `shasum`, used only where nothing stronger is listed).
    Sha1([u8; 20]),
    /// SHA-256 (PyPI, RubyGems, Cargo's `cksum`).
    Sha256([u8; 32]),
    /// SHA-384 (a Subresource Integrity algorithm).
    Sha384([u8; 48]),
    /// SHA-512 (npm's `dist.integrity`).
    Sha512([u8; 64]),
    /// Go's `h1:` dirhash of a module zip: a SHA-256 over the sorted
    /// per-file hash lines, not over the file's bytes, so it is checked over
    /// the finished file ([`h1::of_zip`]), not while streaming.
    GoH1([u8; 32]),
    /// Go's `/go.mod h1:` of a go.mod: the same dirhash over one file named
    /// `go.mod`, so it follows from the body's streamed sha256
    /// ([`h1::of_mod_sha256`]). Its text form is `h1:BASE64` too, which
    /// parses back as [`Digest::GoH1`]: go.sum says which file a hash is for
    /// beside the hash, not in it.
    GoModH1([u8; 32]),
}

impl Digest {
    /// A sha256 from its hex value (either case); `None` unless it is 64 hex digits.
    pub fn sha256(hex: &str) -> Option<Digest> {
        Digest::from_hex("sha256", hex)
    }

    /// A hex digest (either case) for `algorithm` (`sha1`, `sha256`,
    /// `sha384`, `sha512`); `None` for another algorithm or a value of the
    /// wrong length.
    pub fn from_hex(algorithm: &str, hex_digest: &str) -> Option<Digest> {
        let bytes = hex::decode(hex_digest.trim()).ok()?;
        Digest::from_bytes(algorithm, &bytes)
    }

    /// The strongest hash of a Subresource Integrity value
    /// (`sha512-BASE64 sha1-BASE64`, options after `?` ignored), as npm reads
    /// `dist.integrity`. Unknown algorithms and malformed entries are skipped;
    /// `None` when nothing usable is left.
    pub fn from_sri(value: &str) -> Option<Digest> {
        value
            .split_ascii_whitespace()
            .filter_map(|entry| {
                let (algorithm, rest) = entry.split_once('-')?;
                let digest = rest.split('?').next().unwrap_or_default();
                let bytes = BASE64.decode(digest).ok()?;
                Digest::from_bytes(algorithm, &bytes)
            })
            .max_by_key(Digest::strength)
    }

    /// A Go `h1:BASE64` hash, as go.sum and the checksum database write it.
    pub fn from_go_h1(text: &str) -> Option<Digest> {
        let bytes = BASE64.decode(text.strip_prefix("h1:")?).ok()?;
        Some(Digest::GoH1(bytes.try_into().ok()?))
    }

    fn from_bytes(algorithm: &str, bytes: &[u8]) -> Option<Digest> {
        Some(match algorithm.to_ascii_lowercase().as_str() {
            "sha1" => Digest::Sha1(bytes.try_into().ok()?),
            "sha256" => Digest::Sha256(bytes.try_into().ok()?),
            "sha384" => Digest::Sha384(bytes.try_into().ok()?),
            "sha512" => Digest::Sha512(bytes.try_into().ok()?),
            _ => return None,
        })
    }

    /// Ranks algorithms as npm's ssri does (sha512 > sha384 > sha256 > sha1).
    fn strength(&self) -> u8 {
        match self {
            Digest::Sha1(_) => 1,
            Digest::Sha256(_) | Digest::GoH1(_) | Digest::GoModH1(_) => 2,
            Digest::Sha384(_) => 3,
            Digest::Sha512(_) => 4,
        }
    }

    /// The algorithm's name: `sha1`, `sha256`, `sha384`, `sha512`, `h1`.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Digest::Sha1(_) => "sha1",
            Digest::Sha256(_) => "sha256",
            Digest::Sha384(_) => "sha384",
            Digest::Sha512(_) => "sha512",
            Digest::GoH1(_) | Digest::GoModH1(_) => "h1",
        }
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Digest::Sha1(d) => d,
            Digest::Sha256(d) | Digest::GoH1(d) | Digest::GoModH1(d) => d,
            Digest::Sha384(d) => d,
            Digest::Sha512(d) => d,
        }
    }

    /// The value in lower-case hex.
    pub fn hex(&self) -> String {
        hex::encode(self.as_bytes())
    }

    /// Whether the digest is over the file's bytes, so that it can be
    /// checked while they stream ([`BodyHasher`]); not [`Digest::GoH1`].
    pub fn is_streamable(&self) -> bool {
        !matches!(self, Digest::GoH1(_))
    }

    /// Whether `bytes` are the file this digest lists (a Go `h1:` is
    /// computed over `bytes` as a module zip).
    pub fn matches(&self, bytes: &[u8]) -> bool {
        match self {
            Digest::GoH1(_) => h1::of_zip(std::io::Cursor::new(bytes)).ok().as_ref() == Some(self),
            _ => {
                let mut hasher = BodyHasher::new(Some(self));
                hasher.update(bytes);
                hasher.finish().verdict(self) == Verdict::Matches
            }
        }
    }

    /// Whether a body whose sha256 is `sha256_hex` has this digest: `None`
    /// when the sha256 cannot say (sha1, sha384, sha512, a zip's `h1:`);
    /// a go.mod's `h1:` follows from it ([`h1::of_mod_sha256`]).
    pub fn decided_by_sha256(&self, sha256_hex: &str) -> Option<bool> {
        match self {
            Digest::Sha256(d) => Some(hex::encode(d).eq_ignore_ascii_case(sha256_hex)),
            Digest::GoModH1(_) => {
                let sha256 = hex::decode(sha256_hex).ok().filter(|b| b.len() == 32);
                Some(sha256.is_some_and(|b| &h1::of_mod_sha256(&b) == self))
            }
            _ => None,
        }
    }

    /// Whether a body whose sha256 is `sha256_hex` is known not to have this
    /// digest (false when the sha256 says nothing about this algorithm).
    pub fn contradicts_sha256(&self, sha256_hex: &str) -> bool {
        self.decided_by_sha256(sha256_hex) == Some(false)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Digest::GoH1(d) | Digest::GoModH1(d) => write!(f, "h1:{}", BASE64.encode(d)),
            other => write!(f, "{}:{}", other.algorithm(), other.hex()),
        }
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> String {
        digest.to_string()
    }
}

impl TryFrom<String> for Digest {
    type Error = String;

    /// `ALGORITHM:HEX` or `h1:BASE64`; a bare 64-digit hex value is a sha256
    /// (documents stored before digests named their algorithm).
    fn try_from(text: String) -> Result<Digest, String> {
        let parsed = match text.split_once(':') {
            Some(("h1", _)) => Digest::from_go_h1(&text),
            Some((name, hex)) if hex.len() % 2 == 0 => Digest::from_hex(name, hex),
            Some(_) => None,
            None if text.len() == 64 => Digest::sha256(&text),
            None => None,
        };
        parsed.ok_or_else(|| format!("not a digest: {text:?}"))
    }
}

/// Hashes a body as it is written: always with sha256 (what an entry's
/// metadata records), and with the listed digest's algorithm too when that
/// is another streamable one. Dropping it checks nothing.
#[derive(Clone)]
pub struct BodyHasher {
    sha256: Sha256,
    also: Option<Also>,
}

#[derive(Clone)]
enum Also {
    Sha1(Sha1),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl BodyHasher {
    /// A hasher for a body that must have `expected` (if any).
    pub fn new(expected: Option<&Digest>) -> BodyHasher {
        let also = match expected {
            Some(Digest::Sha1(_)) => Some(Also::Sha1(Sha1::new())),
            Some(Digest::Sha384(_)) => Some(Also::Sha384(Sha384::new())),
            Some(Digest::Sha512(_)) => Some(Also::Sha512(Sha512::new())),
            Some(Digest::Sha256(_) | Digest::GoH1(_) | Digest::GoModH1(_)) | None => None,
        };
        BodyHasher {
            sha256: Sha256::new(),
            also,
        }
    }

    /// Feeds the next bytes of the body.
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        match &mut self.also {
            Some(Also::Sha1(h)) => h.update(bytes),
            Some(Also::Sha384(h)) => h.update(bytes),
            Some(Also::Sha512(h)) => h.update(bytes),
            None => {}
        }
    }

    /// The digests of the whole body.
    pub fn finish(self) -> BodyDigests {
        let also = self.also.map(|also| match also {
            Also::Sha1(h) => Digest::Sha1(h.finalize().into()),
            Also::Sha384(h) => Digest::Sha384(h.finalize().into()),
            Also::Sha512(h) => Digest::Sha512(h.finalize().into()),
        });
        BodyDigests {
            sha256: Digest::Sha256(self.sha256.finalize().into()),
            also,
        }
    }
}

/// What a [`BodyHasher`] computed.
#[derive(Clone, Debug)]
pub struct BodyDigests {
    /// The body's sha256 (recorded with the entry).
    pub sha256: Digest,
    /// The listed algorithm's digest, when it is not sha256.
    also: Option<Digest>,
}

/// Whether a body has the digest its index lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It does.
    Matches,
    /// It does not; the body's own digest in the listed algorithm.
    Differs(Digest),
    /// Not decidable from the streamed hashes (a Go `h1:`, checked over the
    /// finished zip with [`h1::of_zip`]).
    NeedsFile,
}

impl BodyDigests {
    /// `expected` held against the body.
    pub fn verdict(&self, expected: &Digest) -> Verdict {
        let got = match expected {
            Digest::GoH1(_) => return Verdict::NeedsFile,
            Digest::GoModH1(_) => {
                let got = h1::of_mod_sha256(self.sha256.as_bytes());
                return if &got == expected {
                    Verdict::Matches
                } else {
                    Verdict::Differs(got)
                };
            }
            Digest::Sha256(_) => &self.sha256,
            _ => match &self.also {
                Some(got) if got.algorithm() == expected.algorithm() => got,
                // Hashed for another digest than this one: say what is known.
                _ => return Verdict::Differs(self.sha256.clone()),
            },
        };
        if got == expected {
            Verdict::Matches
        } else {
            Verdict::Differs(got.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn sri(algorithm: &str, digest: &[u8]) -> String {
        format!("{algorithm}-{}", BASE64.encode(digest))
    }

    #[test]
    fn values_are_checked_and_lower_cased() {
        let upper = Digest::sha256(&EMPTY.to_ascii_uppercase()).unwrap();
        assert_eq!(upper.hex(), EMPTY);
        assert_eq!(upper.to_string(), format!("sha256:{EMPTY}"));
        assert!(Digest::sha256("abc").is_none());
        assert!(Digest::sha256(&"g".repeat(64)).is_none());
        assert!(upper.matches(b""));
        assert!(!upper.matches(b"x"));
        assert!(!upper.contradicts_sha256(&EMPTY.to_ascii_uppercase()));
        assert!(upper.contradicts_sha256(&"0".repeat(64)));
        assert!(!Digest::Sha512([0; 64]).contradicts_sha256(EMPTY));
    }

    #[test]
    fn text_form_round_trips_and_reads_bare_sha256() {
        let digest = Digest::sha256(EMPTY).unwrap();
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(json, format!("\"sha256:{EMPTY}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), digest);
        let bare: Digest = serde_json::from_str(&format!("\"{EMPTY}\"")).unwrap();
        assert_eq!(bare, digest);
        for other in [
            Digest::Sha1([1; 20]),
            Digest::Sha384([2; 48]),
            Digest::Sha512([3; 64]),
            Digest::GoH1([4; 32]),
        ] {
            let json = serde_json::to_string(&other).unwrap();
            assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), other);
        }
        for bad in ["\"md5:00\"", "\"sha256:00\"", "\"h1:!!\"", "\"sha1:abc\""] {
            assert!(serde_json::from_str::<Digest>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sri_picks_the_strongest_listed_hash() {
        let data = b"tarball bytes";
        let sha512 = Sha512::digest(data);
        let sha1 = Sha1::digest(data);
        let both = format!("{} {}", sri("sha1", &sha1), sri("sha512", &sha512));
        let parsed = Digest::from_sri(&both).expect("parses");
        assert_eq!(parsed, Digest::Sha512(sha512.into()));
        // Options, unknown algorithms and bad base64 are skipped.
        let odd = format!("md5-AAAA sha512-!!! {}?foo", sri("sha1", &sha1));
        assert_eq!(Digest::from_sri(&odd), Some(Digest::Sha1(sha1.into())));
        for bad in ["", "sha512", "sha512-", "sha256-AAAA", "nonsense"] {
            assert_eq!(Digest::from_sri(bad), None, "{bad}");
        }
    }

    #[test]
    fn hex_digests_need_the_right_length() {
        let hex = "AB".repeat(32);
        assert_eq!(
            Digest::from_hex("sha256", &hex),
            Some(Digest::Sha256([0xab; 32]))
        );
        assert_eq!(Digest::from_hex("sha1", &hex), None);
        assert_eq!(Digest::from_hex("sha256", "xyz"), None);
        assert_eq!(Digest::from_hex("md5", &"00".repeat(16)), None);
    }

    #[test]
    fn a_body_hasher_decides_every_streamable_digest() {
        let data = b"some crate".repeat(1000);
        let listed = [
            Digest::Sha1(Sha1::digest(&data).into()),
            Digest::Sha256(Sha256::digest(&data).into()),
            Digest::Sha384(Sha384::digest(&data).into()),
            Digest::Sha512(Sha512::digest(&data).into()),
        ];
        for digest in listed {
            let mut good = BodyHasher::new(Some(&digest));
            for chunk in data.chunks(777) {
                good.update(chunk);
            }
            let good = good.finish();
            assert_eq!(good.verdict(&digest), Verdict::Matches, "{digest}");
            assert_eq!(good.sha256, Digest::Sha256(Sha256::digest(&data).into()));
            assert!(digest.matches(&data));
            let mut bad = BodyHasher::new(Some(&digest));
            bad.update(&data[1..]);
            assert!(
                matches!(bad.finish().verdict(&digest), Verdict::Differs(d) if d.algorithm() == digest.algorithm()),
                "{digest}"
            );
            assert!(!digest.matches(&data[1..]));
        }
        let go = Digest::GoH1([0; 32]);
        assert!(!go.is_streamable());
        assert_eq!(
            BodyHasher::new(Some(&go)).finish().verdict(&go),
            Verdict::NeedsFile
        );
        assert_eq!(go.to_string(), format!("h1:{}", BASE64.encode([0; 32])));
    }

    #[test]
    fn a_go_mod_hash_is_checked_from_the_streamed_sha256() {
        let go_mod = b"module example.test/hello\n\ngo 1.21\n";
        let listed = h1::of_mod(go_mod);
        assert!(matches!(listed, Digest::GoModH1(_)));
        assert!(listed.is_streamable());
        assert!(listed.matches(go_mod));
        assert!(!listed.matches(b"module example.test/hello\n"));
        let mut hasher = BodyHasher::new(Some(&listed));
        hasher.update(b"module evil.test/x\n");
        match hasher.finish().verdict(&listed) {
            Verdict::Differs(got) => assert_eq!(got, h1::of_mod(b"module evil.test/x\n")),
            other => panic!("{other:?}"),
        }
        let sha256 = |b: &[u8]| hex::encode(Sha256::digest(b));
        assert_eq!(listed.decided_by_sha256(&sha256(go_mod)), Some(true));
        assert_eq!(listed.decided_by_sha256(&sha256(b"x")), Some(false));
        assert_eq!(listed.decided_by_sha256("not hex"), Some(false));
        assert!(listed.contradicts_sha256(&sha256(b"x")));
        assert_eq!(Digest::GoH1([0; 32]).decided_by_sha256(&sha256(b"x")), None);
        assert_eq!(
            Digest::Sha512([0; 64]).decided_by_sha256(&sha256(b"x")),
            None
        );
    }
}
