//! Maintenance of the bucket, apart from the serving API: listing references and
//! bodies, finding bodies no reference names (for `gc --shared`), deleting them, and
//! aborting multipart uploads that a killed node left behind (at start-up and then
//! periodically, by the upkeep task).

use super::breaker::Counters;
use super::reference::{Reference, MAX_REFERENCE};
use super::{layout, BreakerState, Damage, Error, Found, SharedStore};
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::multipart::MultipartStore;
use object_store::{ObjectStore, ObjectStoreExt, UpdateVersion};
use std::collections::HashSet;
use std::time::{Duration, SystemTime};

/// References read at once when collecting the bodies they name.
const READ_CONCURRENCY: usize = 16;

/// One object as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Its name, relative to the prefix.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// When it was last written.
    pub modified: SystemTime,
}

/// An incomplete multipart upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingUpload {
    /// The object it would create, relative to the prefix.
    pub name: String,
    /// The store's upload id.
    pub upload_id: String,
    /// When it began.
    pub initiated: SystemTime,
}

impl SharedStore {
    /// Every object under `dir` (one of the layout's folders), in name order. Listing
    /// does not go through the breaker: it is for maintenance, which reports failures.
    fn list_dir(&self, dir: &'static str) -> BoxStream<'static, Result<Listed, Error>> {
        let path = match self.path(dir.trim_end_matches('/')) {
            Ok(path) => path,
            Err(err) => return stream::once(async move { Err(err) }).boxed(),
        };
        let store = self.clone();
        self.inner
            .s3
            .list(Some(&path))
            .map(move |item| match item {
                Ok(meta) => Ok(Listed {
                    name: store.relative(&meta.location).unwrap_or_default(),
                    size: meta.size,
                    modified: SystemTime::from(meta.last_modified),
                }),
                Err(source) => Err(Error::Store {
                    op: "list",
                    name: dir.to_string(),
                    source,
                }),
            })
            .boxed()
    }

    /// Every reference: cache entries (`refs/`) then artifacts (`artifacts/`).
    pub fn list_references(&self) -> BoxStream<'static, Result<Listed, Error>> {
        self.list_dir(layout::REFS)
            .chain(self.list_dir(layout::ARTIFACTS))
            .try_filter(|l| std::future::ready(layout::is_reference(&l.name)))
            .boxed()
    }

    /// Every body.
    pub fn list_bodies(&self) -> BoxStream<'static, Result<Listed, Error>> {
        self.list_dir(layout::BODIES)
            .try_filter(|l| std::future::ready(layout::is_body(&l.name)))
            .boxed()
    }

    /// Every document.
    pub fn list_docs(&self) -> BoxStream<'static, Result<Listed, Error>> {
        self.list_dir(layout::DOCS)
    }

    /// Reads the reference `name` (as listed) whatever its kind, checking that it
    /// belongs under that name. `None` if it is gone.
    pub async fn read_listed(&self, name: &str) -> Result<Option<Found<serde_json::Value>>, Error> {
        if !layout::is_reference(name) {
            return Err(Error::BadName {
                kind: "reference",
                name: name.to_string(),
            });
        }
        let path = self.path(name)?;
        let got = match self.inner.s3.get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => {
                return Err(Error::Store {
                    op: "read reference",
                    name: name.into(),
                    source,
                })
            }
        };
        let meta = got.meta.clone();
        if meta.size > MAX_REFERENCE {
            return Err(self.damaged(name.into(), Damage::Unreadable("too large".into())));
        }
        let bytes = got.bytes().await.map_err(|source| Error::Store {
            op: "read reference",
            name: name.into(),
            source,
        })?;
        let reference = serde_json::from_slice::<Reference<serde_json::Value>>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|r| Reference::<serde_json::Value>::parse(&bytes, &r.key));
        let reference = match reference {
            Ok(r) => r,
            Err(why) => return Err(self.damaged(name.into(), Damage::Unreadable(why))),
        };
        let belongs = match reference.meta.get("abi").and_then(|a| a.as_str()) {
            Some(abi) if name.starts_with(layout::ARTIFACTS) => {
                layout::artifact_ref(abi, &reference.key) == name
            }
            _ => layout::entry_ref(&reference.key) == name,
        };
        if !belongs {
            return Err(self.damaged(
                name.into(),
                Damage::Unreadable(format!("names key {:?}", reference.key)),
            ));
        }
        Ok(Some(Found {
            reference,
            name: name.into(),
            version: UpdateVersion {
                e_tag: meta.e_tag,
                version: meta.version,
            },
        }))
    }

    /// Bodies older than `grace` that no reference names: what `gc --shared` removes.
    /// Bodies are listed before references, so a body published while this runs is
    /// named by then; `grace` covers uploads finished but not yet published. A damaged
    /// (unreadable) reference names nothing.
    pub async fn orphan_bodies(&self, grace: Duration) -> Result<Vec<Listed>, Error> {
        let cutoff = SystemTime::now()
            .checked_sub(grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut candidates: Vec<Listed> = self
            .list_bodies()
            .try_filter(|l| std::future::ready(l.modified < cutoff))
            .try_collect()
            .await?;
        if candidates.is_empty() {
            return Ok(candidates);
        }
        let named: HashSet<String> = self
            .list_references()
            .map(|listed| async move {
                match self.read_listed(&listed?.name).await {
                    Ok(found) => Ok(found.map(|f| f.reference.body)),
                    Err(err) if err.is_damaged() => Ok(None),
                    Err(err) => Err(err),
                }
            })
            .buffer_unordered(READ_CONCURRENCY)
            .try_filter_map(|body| std::future::ready(Ok(body)))
            .try_collect()
            .await?;
        candidates.retain(|c| !named.contains(&c.name));
        Ok(candidates)
    }

    /// Deletes body `name` (from [`SharedStore::orphan_bodies`]).
    pub async fn delete_body(&self, name: &str) -> Result<(), Error> {
        if !layout::is_body(name) {
            return Err(Error::BadName {
                kind: "body",
                name: name.to_string(),
            });
        }
        let path = self.path(name)?;
        match self.inner.s3.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                Counters::add(&self.inner.counters.bodies_deleted, 1);
                Ok(())
            }
            Err(source) => Err(Error::Store {
                op: "delete body",
                name: name.into(),
                source,
            }),
        }
    }

    /// The incomplete multipart uploads under this store's prefix.
    pub async fn pending_uploads(&self) -> Result<Vec<PendingUpload>, Error> {
        let listed = self
            .inner
            .raw
            .list_uploads(&self.inner.s3, &self.inner.prefix)
            .await
            .map_err(|source| Error::Store {
                op: "list uploads",
                name: String::new(),
                source,
            })?;
        Ok(listed
            .into_iter()
            .filter_map(|u| {
                Some(PendingUpload {
                    name: self.relative(&object_store::path::Path::from(u.key.as_str()))?,
                    upload_id: u.upload_id,
                    initiated: SystemTime::from(u.initiated),
                })
            })
            .collect())
    }

    /// Aborts the multipart uploads begun more than `older_than` ago (a live upload
    /// is younger than that: `stale_uploads`, hours). Returns how many.
    pub async fn abort_stale_uploads(&self, older_than: Duration) -> Result<usize, Error> {
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        self.abort_uploads(|upload| upload.initiated <= cutoff)
            .await
    }

    /// Aborts the uploads this node (the configured `node`) began before this client
    /// was opened, whatever their age: the process that began them is gone. None
    /// without a node name.
    pub async fn abort_own_uploads(&self) -> Result<usize, Error> {
        let Some(node) = self.inner.config.node.clone() else {
            return Ok(0);
        };
        let opened = self.inner.opened_at;
        self.abort_uploads(move |upload| {
            layout::body_node(&upload.name) == Some(node.as_str()) && upload.initiated < opened
        })
        .await
    }

    async fn abort_uploads(
        &self,
        abandoned: impl Fn(&PendingUpload) -> bool,
    ) -> Result<usize, Error> {
        let mut aborted = 0;
        for upload in self.pending_uploads().await? {
            if !abandoned(&upload) || !layout::is_body(&upload.name) {
                continue;
            }
            let path = self.path(&upload.name)?;
            match self
                .inner
                .s3
                .abort_multipart(&path, &upload.upload_id)
                .await
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    aborted += 1;
                    Counters::add(&self.inner.counters.uploads_aborted, 1);
                }
                Err(source) => {
                    return Err(Error::Store {
                        op: "abort upload",
                        name: upload.name,
                        source,
                    })
                }
            }
        }
        if aborted > 0 {
            tracing::info!(count = aborted, "shared store: aborted abandoned uploads");
        }
        Ok(aborted)
    }

    /// Starts the upkeep task on the owner's tracker: at once it aborts the uploads
    /// this node left before a restart; at once and then every `stale_uploads / 4`
    /// (1 min to 1 h) it aborts every node's stale uploads; every
    /// `breaker_cooldown` while the breaker is not closed it probes the store, so the
    /// tier comes back without waiting for a request. Ends with the owner's token.
    pub fn spawn_upkeep(&self) {
        let store = self.clone();
        let config = &self.inner.config;
        let (stale, pause) = (config.stale_uploads, config.breaker_cooldown);
        let sweep_every = (stale / 4).clamp(Duration::from_secs(60), Duration::from_secs(3600));
        self.spawn(async move {
            if let Err(err) = store.abort_own_uploads().await {
                tracing::warn!(error = %err, "shared store: aborting this node's uploads failed");
            }
            let mut next_sweep = tokio::time::Instant::now();
            loop {
                if store.breaker() != BreakerState::Closed {
                    let _ = store.probe().await;
                }
                if tokio::time::Instant::now() >= next_sweep
                    && store.breaker() == BreakerState::Closed
                {
                    if let Err(err) = store.abort_stale_uploads(stale).await {
                        tracing::warn!(error = %err, "shared store: upload sweep failed");
                    }
                    next_sweep = tokio::time::Instant::now() + sweep_every;
                }
                tokio::time::sleep(pause).await;
            }
        });
    }
}
