//! Index documents in the shared store: one object per document key, its head
//! (key, length, sha256, the caller's metadata) and body together, replaced whole by a
//! single PUT, so a reader never pairs a body with another version's headers. The last
//! writer wins: each node revalidates on its own, and any fresh copy will do.

use super::breaker::Counters;
use super::{layout, Answer, Damage, Error, SharedStore};
use crate::store::unix_now;
use bytes::{Buf, Bytes};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Largest document body accepted (as `store::MAX_DOC_LEN`).
const MAX_DOC_LEN: u64 = 128 << 20;
/// Largest head accepted.
const MAX_HEAD_LEN: u32 = 16 << 20;

/// A document read from the shared store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedDoc<M> {
    /// The caller's metadata (headers, validators, …).
    pub meta: M,
    /// The body as served.
    pub body: Bytes,
    /// Seconds since the epoch when it was stored.
    pub stored_at: u64,
}

#[derive(Serialize, Deserialize)]
struct Head<M> {
    v: u32,
    key: String,
    size: u64,
    sha256: String,
    stored_at: u64,
    meta: M,
}

impl SharedStore {
    /// Stores document `key`, replacing any other version.
    pub async fn write_doc<M: Serialize>(
        &self,
        key: &str,
        meta: &M,
        body: Bytes,
    ) -> Result<(), Error> {
        if body.len() as u64 > MAX_DOC_LEN {
            return Err(Error::Rejected {
                damage: Damage::Long {
                    expected: MAX_DOC_LEN,
                },
            });
        }
        let head = Head {
            v: 1,
            key: key.to_string(),
            size: body.len() as u64,
            sha256: hex::encode(Sha256::digest(&body)),
            stored_at: unix_now(),
            meta,
        };
        let head = serde_json::to_vec(&head).expect("a document head always serialises");
        let len = (head.len() as u32).to_be_bytes();
        let bytes = body.len() as u64;
        let payload: PutPayload = [Bytes::copy_from_slice(&len), Bytes::from(head), body]
            .into_iter()
            .collect();
        let name = layout::doc(key);
        let path = self.path(&name)?;
        let options = PutOptions::from(PutMode::Overwrite);
        let request = self.inner.s3.put_opts(&path, payload, options);
        self.call("write document", &name, request).await?;
        Counters::add(&self.inner.counters.bytes_up, bytes);
        Ok(())
    }

    /// The stored document `key`, if any. One that fails its checks is `Err(Damaged)`.
    pub async fn read_doc<M: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<SharedDoc<M>>, Error> {
        let name = layout::doc(key);
        let path = self.path(&name)?;
        let request = async {
            let got = self.inner.s3.get(&path).await?;
            if got.meta.size > MAX_DOC_LEN + u64::from(MAX_HEAD_LEN) + 4 {
                return Ok(None);
            }
            got.bytes().await.map(Some)
        };
        let bytes = match self.call("read document", &name, request).await? {
            Answer::Done(Some(bytes)) => bytes,
            Answer::Done(None) => {
                return Err(self.damaged(name, Damage::Unreadable("too large".into())))
            }
            _ => return Ok(None),
        };
        Counters::add(&self.inner.counters.bytes_down, bytes.len() as u64);
        match parse(bytes, key) {
            Ok(doc) => Ok(Some(doc)),
            Err(damage) => Err(self.damaged(name, damage)),
        }
    }

    /// Forgets document `key`.
    pub async fn remove_doc(&self, key: &str) -> Result<(), Error> {
        let name = layout::doc(key);
        let path = self.path(&name)?;
        self.call("remove document", &name, self.inner.s3.delete(&path))
            .await
            .map(|_| ())
    }
}

fn parse<M: DeserializeOwned>(mut bytes: Bytes, key: &str) -> Result<SharedDoc<M>, Damage> {
    let unreadable = |why: &str| Damage::Unreadable(why.to_string());
    if bytes.len() < 4 {
        return Err(unreadable("no head"));
    }
    let head_len = bytes.get_u32();
    if head_len > MAX_HEAD_LEN || head_len as usize > bytes.len() {
        return Err(unreadable("head length out of range"));
    }
    let head = bytes.split_to(head_len as usize);
    let head: Head<M> = serde_json::from_slice(&head).map_err(|e| unreadable(&e.to_string()))?;
    if head.v != 1 || head.key != key {
        return Err(unreadable("not this document"));
    }
    if bytes.len() as u64 != head.size {
        return Err(match (bytes.len() as u64) < head.size {
            true => Damage::Short {
                expected: head.size,
                got: bytes.len() as u64,
            },
            false => Damage::Long {
                expected: head.size,
            },
        });
    }
    let got = hex::encode(Sha256::digest(&bytes));
    if got != head.sha256 {
        return Err(Damage::Digest {
            expected: head.sha256,
            got,
        });
    }
    Ok(SharedDoc {
        meta: head.meta,
        body: bytes,
        stored_at: head.stored_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(key: &str, body: &[u8], tamper: impl Fn(&mut Vec<u8>)) -> Bytes {
        let head = Head {
            v: 1,
            key: key.into(),
            size: body.len() as u64,
            sha256: hex::encode(Sha256::digest(body)),
            stored_at: 7,
            meta: vec![("etag".to_string(), "\"x\"".to_string())],
        };
        let head = serde_json::to_vec(&head).unwrap();
        let mut out = (head.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&head);
        out.extend_from_slice(body);
        tamper(&mut out);
        Bytes::from(out)
    }

    #[test]
    fn documents_parse_only_when_whole_and_theirs() {
        let doc: SharedDoc<Vec<(String, String)>> =
            parse(encode("/simple/six/", b"<html>", |_| {}), "/simple/six/").unwrap();
        assert_eq!(doc.body, Bytes::from_static(b"<html>"));
        assert_eq!(doc.stored_at, 7);
        let check = |bytes: Bytes, key: &str| parse::<Vec<(String, String)>>(bytes, key);
        assert!(check(encode("/a", b"x", |_| {}), "/b").is_err());
        assert!(matches!(
            check(encode("/a", b"xyz", |b| b.truncate(b.len() - 1)), "/a"),
            Err(Damage::Short { .. })
        ));
        assert!(matches!(
            check(encode("/a", b"xyz", |b| b.push(b'!')), "/a"),
            Err(Damage::Long { .. })
        ));
        assert!(matches!(
            check(
                encode("/a", b"xyz", |b| {
                    let last = b.len() - 1;
                    b[last] ^= 1
                }),
                "/a"
            ),
            Err(Damage::Digest { .. })
        ));
        assert!(check(Bytes::from_static(b"\xff\xff\xff\xff{}"), "/a").is_err());
        assert!(check(Bytes::new(), "/a").is_err());
    }
}
