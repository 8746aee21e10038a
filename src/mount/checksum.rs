//! `Checksum`: a digest that an index document lists for an artifact (npm's
//! `dist.integrity` or `shasum`, a Cargo index line's `cksum`, a Go `h1:`
//! hash), parsed once into a typed value, and `Verifier`, which checks bytes
//! against the streamable ones as they arrive. Pure: the caller feeds bytes.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};
use std::fmt;

/// A digest listed for one artifact. Equality is over algorithm and bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Checksum {
    /// SHA-1 (npm's legacy `shasum`, used only where nothing stronger is listed).
    Sha1([u8; 20]),
    /// SHA-256 (Cargo's `cksum`, PyPI, RubyGems).
    Sha256([u8; 32]),
    /// SHA-384 (a Subresource Integrity algorithm).
    Sha384([u8; 48]),
    /// SHA-512 (npm's `dist.integrity`).
    Sha512([u8; 64]),
    /// Go's `h1:` dirhash of a module zip or go.mod: a SHA-256 over the sorted
    /// per-file hash lines, not over the file's bytes, so it cannot be checked
    /// while streaming (see [`crate::mount::go::h1_of_zip`]).
    GoH1([u8; 32]),
}

impl Checksum {
    /// The strongest hash of a Subresource Integrity value
    /// (`sha512-BASE64 sha1-BASE64`, options after `?` ignored), as npm reads
    /// `dist.integrity`. Unknown algorithms and malformed entries are skipped;
    /// `None` when nothing usable is left.
    pub fn from_sri(value: &str) -> Option<Checksum> {
        value
            .split_ascii_whitespace()
            .filter_map(|entry| {
                let (algorithm, rest) = entry.split_once('-')?;
                let digest = rest.split('?').next().unwrap_or_default();
                let bytes = BASE64.decode(digest).ok()?;
                Checksum::from_bytes(algorithm, &bytes)
            })
            .max_by_key(Checksum::strength)
    }

    /// A hex digest (either case) for `algorithm` (`sha1`, `sha256`, `sha384`, `sha512`).
    pub fn from_hex(algorithm: &str, hex_digest: &str) -> Option<Checksum> {
        let bytes = hex::decode(hex_digest.trim()).ok()?;
        Checksum::from_bytes(algorithm, &bytes)
    }

    fn from_bytes(algorithm: &str, bytes: &[u8]) -> Option<Checksum> {
        Some(match algorithm.to_ascii_lowercase().as_str() {
            "sha1" => Checksum::Sha1(bytes.try_into().ok()?),
            "sha256" => Checksum::Sha256(bytes.try_into().ok()?),
            "sha384" => Checksum::Sha384(bytes.try_into().ok()?),
            "sha512" => Checksum::Sha512(bytes.try_into().ok()?),
            _ => return None,
        })
    }

    /// Ranks algorithms as npm's ssri does (sha512 > sha384 > sha256 > sha1).
    fn strength(&self) -> u8 {
        match self {
            Checksum::Sha1(_) => 1,
            Checksum::Sha256(_) | Checksum::GoH1(_) => 2,
            Checksum::Sha384(_) => 3,
            Checksum::Sha512(_) => 4,
        }
    }

    /// The algorithm's name for logs: `sha1`, `sha256`, `sha384`, `sha512`, `h1`.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Checksum::Sha1(_) => "sha1",
            Checksum::Sha256(_) => "sha256",
            Checksum::Sha384(_) => "sha384",
            Checksum::Sha512(_) => "sha512",
            Checksum::GoH1(_) => "h1",
        }
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Checksum::Sha1(d) => d,
            Checksum::Sha256(d) | Checksum::GoH1(d) => d,
            Checksum::Sha384(d) => d,
            Checksum::Sha512(d) => d,
        }
    }

    /// A verifier for the bytes of the file, or `None` for [`Checksum::GoH1`],
    /// which is computed over the unpacked zip instead.
    pub fn verifier(&self) -> Option<Verifier> {
        let state = match self {
            Checksum::Sha1(_) => State::Sha1(Sha1::new()),
            Checksum::Sha256(_) => State::Sha256(Sha256::new()),
            Checksum::Sha384(_) => State::Sha384(Sha384::new()),
            Checksum::Sha512(_) => State::Sha512(Sha512::new()),
            Checksum::GoH1(_) => return None,
        };
        Some(Verifier {
            expected: self.clone(),
            state,
        })
    }
}

/// `sha512-BASE64` (the SRI form) for the byte digests, `h1:BASE64` for Go.
impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checksum::GoH1(d) => write!(f, "h1:{}", BASE64.encode(d)),
            other => write!(
                f,
                "{}-{}",
                other.algorithm(),
                BASE64.encode(other.as_bytes())
            ),
        }
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Checksum({self})")
    }
}

/// Hashes a file's bytes as they arrive and tells whether they match the
/// listed [`Checksum`]. Dropping it checks nothing.
pub struct Verifier {
    expected: Checksum,
    state: State,
}

enum State {
    Sha1(Sha1),
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl Verifier {
    /// Feeds the next bytes of the file.
    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.state {
            State::Sha1(h) => h.update(bytes),
            State::Sha256(h) => h.update(bytes),
            State::Sha384(h) => h.update(bytes),
            State::Sha512(h) => h.update(bytes),
        }
    }

    /// Whether the bytes fed so far are exactly the listed file.
    pub fn matches(self) -> bool {
        let got: Vec<u8> = match self.state {
            State::Sha1(h) => h.finalize().to_vec(),
            State::Sha256(h) => h.finalize().to_vec(),
            State::Sha384(h) => h.finalize().to_vec(),
            State::Sha512(h) => h.finalize().to_vec(),
        };
        got == self.expected.as_bytes()
    }

    /// The checksum being verified (for logs).
    pub fn expected(&self) -> &Checksum {
        &self.expected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sri(algorithm: &str, digest: &[u8]) -> String {
        format!("{algorithm}-{}", BASE64.encode(digest))
    }

    #[test]
    fn sri_picks_the_strongest_listed_hash() {
        let data = b"tarball bytes";
        let sha512 = Sha512::digest(data);
        let sha1 = Sha1::digest(data);
        let both = format!("{} {}", sri("sha1", &sha1), sri("sha512", &sha512));
        let parsed = Checksum::from_sri(&both).expect("parses");
        assert_eq!(parsed, Checksum::Sha512(sha512.into()));
        assert_eq!(parsed.to_string(), sri("sha512", &sha512));
        // Options, unknown algorithms and bad base64 are skipped.
        let odd = format!("md5-AAAA sha512-!!! {}?foo", sri("sha1", &sha1));
        assert_eq!(Checksum::from_sri(&odd), Some(Checksum::Sha1(sha1.into())));
        for bad in ["", "sha512", "sha512-", "sha256-AAAA", "nonsense"] {
            assert_eq!(Checksum::from_sri(bad), None, "{bad}");
        }
    }

    #[test]
    fn hex_digests_need_the_right_length() {
        let hex = "AB".repeat(32);
        assert_eq!(
            Checksum::from_hex("sha256", &hex),
            Some(Checksum::Sha256([0xab; 32]))
        );
        assert_eq!(Checksum::from_hex("sha1", &hex), None);
        assert_eq!(Checksum::from_hex("sha256", "xyz"), None);
        assert_eq!(Checksum::from_hex("md5", &"00".repeat(16)), None);
    }

    #[test]
    fn verifiers_accept_only_the_listed_bytes() {
        let data = b"some crate".repeat(1000);
        let listed = [
            Checksum::Sha1(Sha1::digest(&data).into()),
            Checksum::Sha256(Sha256::digest(&data).into()),
            Checksum::Sha384(Sha384::digest(&data).into()),
            Checksum::Sha512(Sha512::digest(&data).into()),
        ];
        for checksum in listed {
            let mut good = checksum.verifier().expect("streamable");
            for chunk in data.chunks(777) {
                good.update(chunk);
            }
            assert_eq!(good.expected(), &checksum);
            assert!(good.matches(), "{checksum}");
            let mut bad = checksum.verifier().expect("streamable");
            bad.update(&data[1..]);
            assert!(!bad.matches(), "{checksum}");
        }
        assert!(Checksum::GoH1([0; 32]).verifier().is_none());
        assert_eq!(
            Checksum::GoH1([0; 32]).to_string(),
            format!("h1:{}", BASE64.encode([0; 32]))
        );
    }
}
