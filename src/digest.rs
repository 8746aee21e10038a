//! `Digest`: what an index says a file's bytes hash to — the algorithm and
//! the value — which a download is checked against before it is committed.
//! Only sha256 exists today (PyPI pages, RubyGems `/info`). npm's sha512 and
//! sha1 integrity or Cargo's sha256 `cksum` are more values of this one type:
//! adding an algorithm changes this module and the fill's check, not the code
//! that carries digests from an index to a fill. A plain value: no I/O.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;

/// A hash algorithm an index may list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// SHA-256 (FIPS 180-4).
    Sha256,
}

impl Algorithm {
    /// The name, as in `sha256:<hex>`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
        }
    }

    /// Length of a value in hex digits.
    fn hex_len(&self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
        }
    }

    fn try_from_name(name: &str) -> Option<Algorithm> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            _ => None,
        }
    }
}

/// A digest of a file's bytes: an algorithm and its value (lower-case hex).
/// Stored as text, `sha256:<hex>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// A digest from its value in hex (either case); `None` unless it has the
    /// algorithm's length and only hex digits.
    pub fn try_from_hex(algorithm: Algorithm, hex: &str) -> Option<Digest> {
        (hex.len() == algorithm.hex_len() && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(
            || Digest {
                algorithm,
                hex: hex.to_ascii_lowercase(),
            },
        )
    }

    /// A sha256 from its hex value.
    pub fn sha256(hex: &str) -> Option<Digest> {
        Digest::try_from_hex(Algorithm::Sha256, hex)
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The value, lower-case hex.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Whether `bytes` have this digest.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        match self.algorithm {
            Algorithm::Sha256 => hex::encode(Sha256::digest(bytes)) == self.hex,
        }
    }

    /// Whether a body whose sha256 is `sha256_hex` is known not to have this
    /// digest (false when the sha256 says nothing about this algorithm).
    pub fn contradicts_sha256(&self, sha256_hex: &str) -> bool {
        match self.algorithm {
            Algorithm::Sha256 => !self.hex.eq_ignore_ascii_case(sha256_hex),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> String {
        digest.to_string()
    }
}

impl TryFrom<String> for Digest {
    type Error = String;

    /// `<algorithm>:<hex>`; a bare 64-digit hex value is a sha256 (documents
    /// stored before digests named their algorithm).
    fn try_from(text: String) -> Result<Digest, String> {
        let parsed = match text.split_once(':') {
            Some((name, hex)) => {
                Algorithm::try_from_name(name).and_then(|a| Digest::try_from_hex(a, hex))
            }
            None => Digest::sha256(&text),
        };
        parsed.ok_or_else(|| format!("not a digest: {text:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

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
    }

    #[test]
    fn text_form_round_trips_and_reads_bare_sha256() {
        let digest = Digest::sha256(EMPTY).unwrap();
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(json, format!("\"sha256:{EMPTY}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), digest);
        let bare: Digest = serde_json::from_str(&format!("\"{EMPTY}\"")).unwrap();
        assert_eq!(bare, digest);
        assert!(serde_json::from_str::<Digest>("\"md5:00\"").is_err());
        assert!(serde_json::from_str::<Digest>("\"sha256:00\"").is_err());
    }
}
