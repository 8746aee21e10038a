//! First-seen times of the supply-chain policy in the shared store: one small
//! JSON object per release key (`{"v":1,"key":…,"first_seen":SECS}`), created
//! with `PUT If-None-Match: *` and never replaced, so the first node to
//! publish a release's time sets it for the fleet and a later writer reads
//! that one back. The key is opaque here (the policy's `MOUNT\tPROJECT\tVERSION`).

use super::{layout, Answer, Damage, Error, SharedStore};
use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

/// Larger than any record: a bigger object is not one.
const MAX_RECORD: u64 = 64 << 10;

#[derive(Serialize, Deserialize)]
struct Record {
    v: u32,
    key: String,
    first_seen: i64,
}

impl SharedStore {
    /// The fleet's first-seen time of `key`, if a node published one.
    pub async fn first_seen(&self, key: &str) -> Result<Option<i64>, Error> {
        let name = layout::first_seen(key);
        let path = self.path(&name)?;
        let request = async {
            let got = self.inner.s3.get(&path).await?;
            if got.meta.size > MAX_RECORD {
                return Ok(None);
            }
            got.bytes().await.map(Some)
        };
        let bytes = match self.call("read first-seen", &name, request).await? {
            Answer::Done(Some(bytes)) => bytes,
            Answer::Done(None) => {
                return Err(self.damaged(name, Damage::Unreadable("too large".into())))
            }
            _ => return Ok(None),
        };
        match parse(&bytes, key) {
            Ok(secs) => Ok(Some(secs)),
            Err(damage) => Err(self.damaged(name, damage)),
        }
    }

    /// Publishes `secs` as the first-seen time of `key` unless a node did
    /// before; the time in the store afterwards (ours, or the earlier writer's).
    pub async fn publish_first_seen(&self, key: &str, secs: i64) -> Result<i64, Error> {
        let name = layout::first_seen(key);
        let path = self.path(&name)?;
        let record = Record {
            v: 1,
            key: key.to_string(),
            first_seen: secs,
        };
        let body = serde_json::to_vec(&record).expect("a first-seen record always serialises");
        let payload = PutPayload::from(Bytes::from(body));
        let options = PutOptions::from(PutMode::Create);
        let request = self.inner.s3.put_opts(&path, payload, options);
        match self.call("publish first-seen", &name, request).await? {
            Answer::Done(_) => Ok(secs),
            // Another node's came first: that one is the fleet's (unless it
            // vanished meanwhile — then ours stands locally, published next time).
            Answer::Exists | Answer::Precondition | Answer::NotFound => {
                Ok(self.first_seen(key).await?.unwrap_or(secs))
            }
        }
    }
}

fn parse(bytes: &[u8], key: &str) -> Result<i64, Damage> {
    let record: Record =
        serde_json::from_slice(bytes).map_err(|e| Damage::Unreadable(e.to_string()))?;
    if record.v != 1 || record.key != key {
        return Err(Damage::Unreadable("not this release's record".into()));
    }
    Ok(record.first_seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_name_their_key() {
        let key = "rubygems\tcrtiny\t0.2.0";
        let body = br#"{"v":1,"key":"rubygems\tcrtiny\t0.2.0","first_seen":1767225600}"#;
        assert_eq!(parse(body, key), Ok(1767225600));
        assert!(parse(body, "rubygems\tcrtiny\t1.0.0").is_err());
        assert!(parse(b"{}", key).is_err());
        assert!(parse(b"\xff", key).is_err());
    }
}
