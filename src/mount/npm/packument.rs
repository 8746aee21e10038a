//! Rewriting a packument (full or abbreviated) or a version manifest so that
//! each `dist.tarball` points at the cache, and collecting the integrity each
//! `dist` lists. Real packuments reach tens of MB, so the document is never
//! built as a tree: serde_json walks the bytes once, borrowing each
//! `dist.tarball` value as a raw span of the input (`RawValue`), and only
//! those spans are replaced. Every other byte — `time`, `dist.signatures`,
//! `dist.attestations`, `deprecated`, dist-tags, key order, white space — is
//! copied as it was. Peak memory is the input plus the output plus one small
//! record per version.

use crate::digest::Digest;
use bytes::Bytes;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;
use url::Url;

/// Why a document could not be rewritten: it is not usable as a packument.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is not JSON.
    #[error("packument is not valid json")]
    Json(#[source] serde_json::Error),
}

/// A rewritten document.
#[derive(Debug)]
pub struct Rewritten {
    /// The new body; the input itself (not a copy) when nothing was rewritten.
    pub body: Bytes,
    /// (path on the mount, as [`crate::mount::link::mount_path`] gives it;
    /// listed checksum) for every rewritten tarball whose `dist` lists a
    /// usable `integrity` (else `shasum`), in document order.
    pub digests: Vec<(String, Digest)>,
    /// Tarball URLs left as they were because `map` declined them (another
    /// host), for a warning: those downloads bypass the cache.
    pub unmapped: usize,
}

/// Rewrites the packument `body` fetched from `page_url` (the final URL after
/// redirects). Each `dist.tarball` (under `versions.*`, or at the top of a
/// version manifest) is resolved against `page_url` and given to `map`, which
/// returns the path on the mount that serves it; the tarball then becomes
/// `mount_url` + that path. `mount_url` is the absolute URL clients reach the
/// mount at (no trailing `/`), from configuration: npm reads a relative
/// tarball URL as a local file, and a URL built from a request's `Host` would
/// be stored and handed to every other client. Fails only when `body` is not
/// JSON; other shapes are returned unchanged.
pub fn rewrite(
    body: Bytes,
    page_url: &Url,
    mount_url: &str,
    map: &dyn Fn(&Url) -> Option<String>,
) -> Result<Rewritten, Error> {
    let found = scan(&body).map_err(Error::Json)?;
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut digests = Vec::new();
    let mut unmapped = 0;
    for dist in found {
        let Some(tarball) = dist.tarball else {
            continue;
        };
        let raw = tarball.get();
        let Ok(url) = serde_json::from_str::<String>(raw) else {
            continue; // not a string: nothing a client could fetch
        };
        let Ok(resolved) = page_url.join(&url) else {
            continue;
        };
        let Some(path) = map(&resolved) else {
            unmapped += 1;
            continue;
        };
        let Some(start) = (raw.as_ptr() as usize).checked_sub(body.as_ptr() as usize) else {
            continue;
        };
        let end = start + raw.len();
        if end > body.len() {
            continue;
        }
        let checksum = dist.integrity.or(dist.shasum);
        let replacement = serde_json::to_string(&format!("{mount_url}{path}"))
            .expect("a string always serialises");
        if let Some(checksum) = checksum {
            digests.push((path, checksum));
        }
        edits.push((start, end, replacement));
    }
    if edits.is_empty() {
        return Ok(Rewritten {
            body,
            digests,
            unmapped,
        });
    }
    // Spans come in document order and never overlap (each is a JSON string).
    edits.sort_unstable_by_key(|&(start, _, _)| start);
    let size = edits.iter().fold(body.len(), |size, (start, end, new)| {
        size - (end - start) + new.len()
    });
    let mut out = Vec::with_capacity(size);
    let mut at = 0;
    for (start, end, new) in &edits {
        out.extend_from_slice(&body[at..*start]);
        out.extend_from_slice(new.as_bytes());
        at = *end;
    }
    out.extend_from_slice(&body[at..]);
    Ok(Rewritten {
        body: out.into(),
        digests,
        unmapped,
    })
}

/// What one `dist` object holds that matters here, parsed as it is read.
struct Dist<'de> {
    tarball: Option<&'de RawValue>,
    /// `integrity`, when it is a usable SRI value.
    integrity: Option<Digest>,
    /// `shasum` (sha1 hex), when valid.
    shasum: Option<Digest>,
}

/// Walks the document once, collecting every `dist` of interest.
fn scan(body: &[u8]) -> Result<Vec<Dist<'_>>, serde_json::Error> {
    let mut found = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    Top { found: &mut found }.deserialize(&mut de)?;
    de.end()?;
    Ok(found)
}

/// The keys this walk looks at, recognised without allocating.
enum Key {
    Versions,
    Dist,
    Tarball,
    Integrity,
    Shasum,
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "versions" => Key::Versions,
                    "dist" => Key::Dist,
                    "tarball" => Key::Tarball,
                    "integrity" => Key::Integrity,
                    "shasum" => Key::Shasum,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Accepts any JSON value but an object, keeping nothing: where a value of
/// another shape than expected must be skipped, not refused.
macro_rules! skip_other_shapes {
    (strings) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        skip_other_shapes!();
    };
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
    };
}

/// The document: `versions` (a packument) or `dist` (a version manifest).
struct Top<'f, 'de> {
    found: &'f mut Vec<Dist<'de>>,
}

impl<'de> DeserializeSeed<'de> for Top<'_, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Top<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a packument")
    }
    skip_other_shapes!(strings);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Versions => map.next_value_seed(Versions {
                    found: &mut *self.found,
                })?,
                Key::Dist => {
                    if let Some(dist) = map.next_value_seed(DistSeed)? {
                        self.found.push(dist);
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// `versions`: version → manifest.
struct Versions<'f, 'de> {
    found: &'f mut Vec<Dist<'de>>,
}

impl<'de> DeserializeSeed<'de> for Versions<'_, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Versions<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a versions object")
    }
    skip_other_shapes!(strings);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(Manifest {
                found: &mut *self.found,
            })?;
        }
        Ok(())
    }
}

/// One version's manifest: only its `dist` matters.
struct Manifest<'f, 'de> {
    found: &'f mut Vec<Dist<'de>>,
}

impl<'de> DeserializeSeed<'de> for Manifest<'_, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Manifest<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a version manifest")
    }
    skip_other_shapes!(strings);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            if let Key::Dist = key {
                if let Some(dist) = map.next_value_seed(DistSeed)? {
                    self.found.push(dist);
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// A `dist` object; `None` when it is not an object.
struct DistSeed;

impl<'de> DeserializeSeed<'de> for DistSeed {
    type Value = Option<Dist<'de>>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DistSeed {
    type Value = Option<Dist<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a dist object")
    }
    skip_other_shapes!(strings);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut dist = Dist {
            tarball: None,
            integrity: None,
            shasum: None,
        };
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Tarball => dist.tarball = Some(map.next_value::<&'de RawValue>()?),
                Key::Integrity => {
                    let text = map.next_value::<Text>()?.0;
                    dist.integrity = text.as_deref().and_then(Digest::from_sri);
                }
                Key::Shasum => {
                    let text = map.next_value::<Text>()?.0;
                    dist.shasum = text.as_deref().and_then(|h| Digest::from_hex("sha1", h));
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(dist))
    }
}

/// A string value, or `None` for a value of any other shape.
#[derive(Default)]
struct Text(Option<String>);

impl<'de> de::Deserialize<'de> for Text {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            skip_other_shapes!();
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text, E> {
                Ok(Text(Some(s.to_string())))
            }
        }
        d.deserialize_any(TextVisitor)
    }
}

#[cfg(test)]
mod tests;
