//! References: the small JSON object per cache key (or built artifact) that names a
//! body and carries its metadata. Creating one (`PUT` with `If-None-Match: *`) is the
//! commit point of a publication; replacing one is a compare-and-swap on its ETag.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The reference format written by this version.
pub(super) const FORMAT: u32 = 1;
/// A reference larger than this is not one of ours (headers are bounded upstream).
pub(super) const MAX_REFERENCE: u64 = 1 << 20;
/// Last use is recorded at most once per this many seconds per key.
pub(super) const TOUCH_EVERY: u64 = 24 * 3600;

/// One reference as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference<M> {
    /// Format version ([`FORMAT`]).
    pub v: u32,
    /// A random id of this publication. Two publications of the same body would
    /// otherwise be the same bytes, so the same ETag, and a compare-and-swap could not
    /// tell the newer from the older.
    pub id: String,
    /// The cache key (`CacheKey::canonical`) or artifact name it belongs to, so a
    /// reference read back is checked against what was asked for.
    pub key: String,
    /// The body's object name, relative to the prefix (`bodies/…`).
    pub body: String,
    /// The body's length in bytes.
    pub size: u64,
    /// The body's sha256, lower-case hex.
    pub sha256: String,
    /// Seconds since the epoch when it was published.
    pub published_at: u64,
    /// Seconds since the epoch when it was last used (recorded at most once a day).
    pub last_used: u64,
    /// What the caller keeps with the body.
    pub meta: M,
}

/// The metadata of a cached upstream file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryInfo {
    /// End-to-end response headers as the upstream sent them (names lower case).
    pub headers: Vec<(String, String)>,
    /// The URL the body was fetched from.
    pub source: String,
    /// Seconds since the epoch when the fetch completed.
    pub fetched_at: u64,
}

/// The metadata of a built artifact.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    /// The runtime's ABI it was built for (Python's SOABI and version, Ruby's
    /// version and arch): another ABI is another artifact.
    pub abi: String,
    /// For a local source, the source's sha256, which a request must match.
    pub source_sha256: Option<String>,
    /// Seconds since the epoch when it was built.
    pub built: u64,
    /// The job that built it (on whichever node).
    pub job: String,
}

impl<M: Serialize> Reference<M> {
    pub(super) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a reference always serialises")
    }
}

impl<M: DeserializeOwned> Reference<M> {
    /// Parses a stored reference and checks that it is one of ours for `key`.
    pub(super) fn parse(bytes: &[u8], key: &str) -> Result<Reference<M>, String> {
        let reference: Reference<M> =
            serde_json::from_slice(bytes).map_err(|e| format!("not a reference: {e}"))?;
        if reference.v != FORMAT {
            return Err(format!("unknown reference format {}", reference.v));
        }
        if reference.key != key {
            return Err(format!("names key {:?}", reference.key));
        }
        if !super::layout::is_body(&reference.body) || !super::layout::is_sha256(&reference.sha256)
        {
            return Err("names no valid body".into());
        }
        Ok(reference)
    }
}

impl<M> Reference<M> {
    /// Whether a use at `now` should be recorded (the last one is a day old).
    pub(super) fn wants_touch(&self, now: u64) -> bool {
        now / TOUCH_EVERY > self.last_used / TOUCH_EVERY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> Reference<EntryInfo> {
        Reference {
            v: FORMAT,
            id: "00".repeat(16),
            key: "/distfiles/a.tar.gz".into(),
            body: format!("bodies/{}", "ab".repeat(32)),
            size: 3,
            sha256: "ab".repeat(32),
            published_at: 1_700_000_000,
            last_used: 1_700_000_000,
            meta: EntryInfo {
                headers: vec![("content-type".into(), "application/x-tar".into())],
                source: "http://mirror.example/distfiles/a.tar.gz".into(),
                fetched_at: 1_700_000_000,
            },
        }
    }

    #[test]
    fn references_round_trip_and_check_their_key() {
        let r = reference();
        let json = r.to_json();
        assert_eq!(Reference::<EntryInfo>::parse(&json, &r.key).unwrap(), r);
        assert!(Reference::<EntryInfo>::parse(&json, "/distfiles/b.tar.gz").is_err());
        assert!(Reference::<EntryInfo>::parse(b"{", &r.key).is_err());
        let mut bad = r.clone();
        bad.body = "refs/x".into();
        assert!(Reference::<EntryInfo>::parse(&bad.to_json(), &r.key).is_err());
        let mut future = r.clone();
        future.v = 2;
        assert!(Reference::<EntryInfo>::parse(&future.to_json(), &r.key).is_err());
        // Maintenance reads any reference without knowing its metadata's type.
        let any = Reference::<serde_json::Value>::parse(&json, &r.key).unwrap();
        assert_eq!(any.meta["source"], r.meta.source);
    }

    #[test]
    fn last_use_is_recorded_once_a_day() {
        let r = reference();
        let day = r.last_used - r.last_used % TOUCH_EVERY;
        assert!(!r.wants_touch(r.last_used));
        assert!(!r.wants_touch(day + TOUCH_EVERY - 1));
        assert!(r.wants_touch(day + TOUCH_EVERY));
    }
}
