//! References of cache entries and built artifacts: look up, publish (create-if-absent),
//! replace (compare-and-swap on the ETag), record last use, remove.

use super::breaker::Counters;
use super::reference::{ArtifactInfo, EntryInfo, Reference, FORMAT, MAX_REFERENCE};
use super::upload::UploadedBody;
use super::{layout, Answer, Damage, Error, Found, Published, SharedStore};
use crate::store::unix_now;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{de::DeserializeOwned, Serialize};

/// How often a publication retries when the reference changes under it.
const MAX_ROUNDS: usize = 3;

impl SharedStore {
    /// The reference of cache key `key` (`CacheKey::canonical`), if one is published.
    /// A reference that cannot be read is `Err(Damaged)`: [`SharedStore::remove`] it.
    pub async fn lookup(&self, key: &str) -> Result<Option<Found<EntryInfo>>, Error> {
        self.read_reference(layout::entry_ref(key), key).await
    }

    /// Publishes `body` as the entry for `key`, unless another writer did first: then
    /// `Lost` with theirs, and `body` is deleted (unless it is the same object).
    pub async fn publish(
        &self,
        key: &str,
        body: UploadedBody,
        info: EntryInfo,
    ) -> Result<Published<EntryInfo>, Error> {
        self.commit(layout::entry_ref(key), key, body, info, None)
            .await
    }

    /// Replaces `bad` (a reference whose body proved damaged, or is stale) with `body`,
    /// if it is still what `bad` read; else `Lost` with whatever replaced it. A random
    /// body `bad` named is deleted once it is no longer referenced.
    pub async fn replace(
        &self,
        bad: &Found<EntryInfo>,
        body: UploadedBody,
        info: EntryInfo,
    ) -> Result<Published<EntryInfo>, Error> {
        let old_body = bad.reference.body.clone();
        let published = self
            .commit(
                bad.name.clone(),
                &bad.reference.key,
                body,
                info,
                Some(&bad.version),
            )
            .await?;
        if published.found().reference.body != old_body && !layout::is_digest_body(&old_body) {
            self.delete_quietly(old_body).await;
        }
        Ok(published)
    }

    /// Deletes the reference of `key` whatever it holds (a damaged one, a purge). Its
    /// body is left to `gc --shared`: another key may share it.
    pub async fn remove(&self, key: &str) -> Result<(), Error> {
        self.delete_reference(&layout::entry_ref(key)).await
    }

    /// The artifact `name` built for runtime ABI `abi`, if one is published.
    pub async fn lookup_artifact(
        &self,
        abi: &str,
        name: &str,
    ) -> Result<Option<Found<ArtifactInfo>>, Error> {
        if !layout::valid_artifact_name(name) {
            return Ok(None);
        }
        let found = self
            .read_reference::<ArtifactInfo>(layout::artifact_ref(abi, name), name)
            .await?;
        // The ABI is hashed into the name: a match of the hash but not the ABI is damage.
        match found {
            Some(found) if found.reference.meta.abi != abi => Err(self.damaged(
                found.name,
                Damage::Unreadable(format!("built for ABI {:?}", found.reference.meta.abi)),
            )),
            other => Ok(other),
        }
    }

    /// Publishes `body` as artifact `name` for `info.abi`; first writer wins.
    pub async fn publish_artifact(
        &self,
        name: &str,
        body: UploadedBody,
        info: ArtifactInfo,
    ) -> Result<Published<ArtifactInfo>, Error> {
        if !layout::valid_artifact_name(name) {
            return Err(Error::BadName {
                kind: "artifact",
                name: name.to_string(),
            });
        }
        let reference = layout::artifact_ref(&info.abi, name);
        self.commit(reference, name, body, info, None).await
    }

    /// Records that `found` was used now, at most once a day per key (a conditional
    /// rewrite of the reference; lost to any concurrent change, which is fine). Returns
    /// whether it wrote.
    pub async fn touch<M: Serialize + Clone>(&self, found: &Found<M>) -> Result<bool, Error> {
        let now = unix_now();
        if !found.reference.wants_touch(now) {
            return Ok(false);
        }
        let mut reference = found.reference.clone();
        reference.last_used = now;
        reference.id = layout::random_id();
        let payload = PutPayload::from(reference.to_json());
        match self
            .put_update(&found.name, payload, &found.version)
            .await?
        {
            Answer::Done(_) => {
                Counters::add(&self.inner.counters.touches, 1);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Reads and checks the reference `name` of `key`.
    pub(super) async fn read_reference<M: DeserializeOwned>(
        &self,
        name: String,
        key: &str,
    ) -> Result<Option<Found<M>>, Error> {
        let path = self.path(&name)?;
        let request = async {
            let got = self.inner.s3.get(&path).await?;
            if got.meta.size > MAX_REFERENCE {
                return Ok((got.meta, None));
            }
            let meta = got.meta.clone();
            Ok((meta, Some(got.bytes().await?)))
        };
        let (meta, bytes) = match self.call("read reference", &name, request).await? {
            Answer::Done(got) => got,
            _ => {
                Counters::add(&self.inner.counters.misses, 1);
                return Ok(None);
            }
        };
        let parsed = match bytes {
            Some(bytes) => Reference::<M>::parse(&bytes, key),
            None => Err(format!("{} bytes", meta.size)),
        };
        match parsed {
            Ok(reference) => {
                Counters::add(&self.inner.counters.hits, 1);
                Ok(Some(Found {
                    reference,
                    name,
                    version: UpdateVersion {
                        e_tag: meta.e_tag,
                        version: meta.version,
                    },
                }))
            }
            Err(reason) => Err(self.damaged(name, Damage::Unreadable(reason))),
        }
    }

    /// Counts and builds a damage error.
    pub(super) fn damaged(&self, name: String, damage: Damage) -> Error {
        Counters::add(&self.inner.counters.damaged, 1);
        tracing::warn!(name = %name, damage = %damage, "shared store: damaged object");
        Error::Damaged { name, damage }
    }

    /// Creates reference `name` for `body` (or, with `replacing`, swaps it for that
    /// version); on a conflict adopts what is there and drops `body`.
    async fn commit<M: Serialize + DeserializeOwned>(
        &self,
        name: String,
        key: &str,
        mut body: UploadedBody,
        meta: M,
        replacing: Option<&UpdateVersion>,
    ) -> Result<Published<M>, Error> {
        let now = unix_now();
        let reference = Reference {
            v: FORMAT,
            id: layout::random_id(),
            key: key.to_string(),
            body: body.name().to_string(),
            size: body.size(),
            sha256: body.sha256().to_string(),
            published_at: now,
            last_used: now,
            meta,
        };
        let payload = PutPayload::from(reference.to_json());
        let mut replacing = replacing.cloned();
        for _ in 0..MAX_ROUNDS {
            let answer = match &replacing {
                Some(version) => self.put_update(&name, payload.clone(), version).await?,
                None => {
                    let path = self.path(&name)?;
                    let options = PutOptions::from(PutMode::Create);
                    let request = self.inner.s3.put_opts(&path, payload.clone(), options);
                    self.call("publish", &name, request).await?
                }
            };
            let put = match answer {
                Answer::Done(put) => put,
                // Someone else's reference is there: adopt it.
                Answer::Exists | Answer::Precondition => {
                    match self.read_reference::<M>(name.clone(), key).await? {
                        Some(theirs) => {
                            Counters::add(&self.inner.counters.races_lost, 1);
                            if theirs.reference.body == body.name() {
                                body.disarm();
                            } else {
                                body.delete().await;
                            }
                            return Ok(Published::Lost(theirs));
                        }
                        // Gone again (removed meanwhile): create it afresh.
                        None => {
                            replacing = None;
                            continue;
                        }
                    }
                }
                Answer::NotFound => {
                    replacing = None;
                    continue;
                }
            };
            body.disarm();
            Counters::add(&self.inner.counters.published, 1);
            return Ok(Published::Won(Found {
                reference,
                name,
                version: UpdateVersion {
                    e_tag: put.e_tag,
                    version: put.version,
                },
            }));
        }
        Err(Error::Contended { name })
    }

    /// `PUT If-Match: ETAG`. RGW 16.2 answers 412 to a quoted ETag, the form S3 sends
    /// and RFC 9110 requires, and honours the same ETag unquoted: so a 412 to the
    /// quoted form is asked once more unquoted (a really stale ETag fails both).
    async fn put_update(
        &self,
        name: &str,
        payload: PutPayload,
        version: &UpdateVersion,
    ) -> Result<Answer<object_store::PutResult>, Error> {
        let path = self.path(name)?;
        let put = |version: UpdateVersion| {
            let options = PutOptions::from(PutMode::Update(version));
            self.inner.s3.put_opts(&path, payload.clone(), options)
        };
        let answer = self
            .call("replace reference", name, put(version.clone()))
            .await?;
        let unquoted = version
            .e_tag
            .as_deref()
            .map(|t| t.trim_matches('"'))
            .filter(|t| Some(*t) != version.e_tag.as_deref());
        match (answer, unquoted) {
            (Answer::Precondition, Some(tag)) => {
                let version = UpdateVersion {
                    e_tag: Some(tag.to_string()),
                    version: version.version.clone(),
                };
                self.call("replace reference", name, put(version)).await
            }
            (answer, _) => Ok(answer),
        }
    }

    /// Deletes reference `name` unconditionally (S3 has no conditional delete that
    /// RGW 16.2 honours: it ignores `If-Match` on DELETE).
    pub async fn delete_reference(&self, name: &str) -> Result<(), Error> {
        if !layout::is_reference(name) {
            return Err(Error::BadName {
                kind: "reference",
                name: name.to_string(),
            });
        }
        let path = self.path(name)?;
        self.call("delete reference", name, self.inner.s3.delete(&path))
            .await
            .map(|_| ())
    }
}
