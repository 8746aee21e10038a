//! What a mount's index documents say about one of its files, looked up
//! before the file is fetched: the digest it must have (from the pages
//! served so far for PyPI and npm, the cached RubyGems `/info/NAME`, the
//! cached Cargo index file, the operator's go.sum files and the cached Go
//! checksum-database lookup), and for Cargo where the registry serves it
//! (its own `dl`, kept with the cached `config.json`). What is not known is
//! not checked: a file fetched before its index is stored as its upstream
//! sent it. The checksum databases a go mount's cache holds are found again
//! at start-up (`recall_sumdbs`).

use super::target::Target;
use super::{Error, Proxy};
use crate::config::{Mount, Profile};
use crate::digest::Digest;
use crate::mount::{self, cargo, go, rubygems, Class};
use crate::store::{CacheKey, Lookup, Namespace};

/// Most checksum-database names remembered per proxy (go asks one or two).
const MAX_SUMDBS: usize = 8;

/// Longest sumdb lookup answer read (a record and a signed tree head).
const MAX_LOOKUP: usize = 64 * 1024;

/// How long a file's check waits for the fill of the lookup that lists its
/// hash: the lookup's answer is complete by then; only its commit is left.
const FILL_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Proxy {
    /// The digest an index lists for the file `key` at `target`; an error
    /// when the hashes known for it disagree (Go), and it must be refused.
    pub(super) async fn listed_digest(
        &self,
        target: &Target,
        key: &CacheKey,
    ) -> Result<Option<Digest>, Error> {
        let Target::Mount { mount, path, .. } = target else {
            return Ok(None);
        };
        Ok(match mount.profile {
            Profile::Pypi | Profile::Npm => self.policy.listed.get(&key.canonical()),
            Profile::Rubygems => self.rubygems_digest(mount, path).await,
            Profile::Cargo => self.cargo_digest(mount, path).await,
            Profile::Go => return self.go_digest(mount, path, key).await,
            Profile::Gentoo | Profile::Generic => None,
        })
    }

    /// Where a Cargo registry serves the crate `target` names on the cache's
    /// `dl`: its own `dl` (kept with the cached `config.json`) expanded for
    /// the crate, on one of the mount's sources or files hosts. `target` as
    /// it is (the default `dl` layout on the sources) when nothing better is
    /// known; `None` when the registry's `dl` is on a host the operator did
    /// not configure.
    pub(super) async fn download_target(&self, target: Target) -> Option<Target> {
        let Target::Mount {
            mount, path, query, ..
        } = &target
        else {
            return Some(target);
        };
        if mount.profile == Profile::Go {
            if let go::Route::Sumdb { db, .. } = go::route(path) {
                self.policy.remember_sumdb(&mount.name, &db, MAX_SUMDBS);
            }
        }
        if mount.profile != Profile::Cargo {
            return Some(target);
        }
        let cargo::Route::Download { krate, version } = cargo::route(path) else {
            return Some(target);
        };
        let Some(dl) = self
            .stored_doc_of(mount, "/config.json")
            .await
            .and_then(|d| d.meta.upstream_note.clone())
        else {
            return Some(target);
        };
        let cksum = self.cargo_digest(mount, path).await;
        let Some((upstream, path)) =
            cargo::download_upstream(mount, &dl, &krate, &version, cksum.as_ref())
        else {
            tracing::warn!(mount = %mount.name, dl = %dl, krate = %krate, version = %version,
                "the registry's dl is on a host this mount does not serve (add it with --files-host)");
            return None;
        };
        Some(Target::Mount {
            mount: mount.clone(),
            upstream,
            path,
            query: query.clone(),
        })
    }

    async fn stored_doc_of(
        &self,
        mount: &Mount,
        path: &str,
    ) -> Option<std::sync::Arc<crate::store::Doc>> {
        let Class::Document(spec) = mount::classify(mount, path, None) else {
            return None;
        };
        self.store.read_doc(&spec.key).await.ok().flatten()
    }

    /// The sha256 the cached `/info/NAME` lists for a `.gem`.
    async fn rubygems_digest(&self, mount: &Mount, path: &str) -> Option<Digest> {
        let file = path.strip_prefix("/gems/")?;
        let file = percent_encoding::percent_decode_str(file)
            .decode_utf8()
            .ok()?;
        for name in rubygems::candidate_names(&file) {
            let Some(doc) = self.stored_doc_of(mount, &format!("/info/{name}")).await else {
                continue;
            };
            let info = String::from_utf8_lossy(&doc.body);
            let listed = rubygems::checksum_for(name, &info, &file);
            if let Some(digest) = listed.as_deref().and_then(Digest::sha256) {
                return Some(digest);
            }
        }
        None
    }

    /// The `cksum` the cached index file lists for a crate download.
    async fn cargo_digest(&self, mount: &Mount, path: &str) -> Option<Digest> {
        let cargo::Route::Download { krate, version } = cargo::route(path) else {
            return None;
        };
        let index = cargo::index_path(&krate)?;
        let doc = self.stored_doc_of(mount, &format!("/{index}")).await?;
        cargo::checksum_for(&doc.body, &krate, &version)
    }

    /// The `h1:` of a module zip, or the `/go.mod h1:` of a go.mod, that the
    /// operator's go.sum files list or else a cached checksum-database
    /// lookup gives. When they are both known they must agree: otherwise
    /// which one is right cannot be told, and the file is refused.
    async fn go_digest(
        &self,
        mount: &Mount,
        path: &str,
        key: &CacheKey,
    ) -> Result<Option<Digest>, Error> {
        let go::Route::Version {
            module,
            version,
            file: file @ (go::VersionFile::Zip | go::VersionFile::Mod),
        } = go::route(path)
        else {
            return Ok(None);
        };
        let mut known: Vec<(Digest, String)> = Vec::new();
        let artifact = format!("/{module}/@v/{version}.{}", file.as_str());
        for sums in &mount.go_sums {
            for hash in sums.hashes(&artifact) {
                known.push((hash, format!("go.sum {}", sums.file().display())));
            }
        }
        let go_mod = file == go::VersionFile::Mod;
        if let Some((hash, db)) = self
            .go_lookup_digest(mount, &module, &version, go_mod)
            .await
        {
            known.push((hash, format!("sumdb {db} lookup")));
        }
        let Some((first, _)) = known.first() else {
            return Ok(None);
        };
        if known.iter().any(|(hash, _)| hash != first) {
            let known = known
                .iter()
                .map(|(hash, from)| format!("{hash} ({from})"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::Disagree {
                key: key.to_string(),
                known,
            });
        }
        Ok(Some(first.clone()))
    }

    /// The hash a cached checksum-database lookup gives a module version's
    /// zip (or go.mod), and the database's name.
    async fn go_lookup_digest(
        &self,
        mount: &Mount,
        module: &str,
        version: &str,
        go_mod: bool,
    ) -> Option<(Digest, String)> {
        let namespace = Namespace::Mount(mount.name.clone());
        for db in self.policy.sumdbs(&mount.name) {
            let lookup = format!("/sumdb/{db}/lookup/{module}@{version}");
            let Ok(key) = CacheKey::try_from_path(namespace.clone(), &lookup) else {
                continue;
            };
            let Some(body) = self.committed_body(&key).await else {
                continue;
            };
            let Ok(record) = go::parse_lookup(&body) else {
                tracing::warn!(key = %key, "a cached sumdb lookup is malformed; not used");
                continue;
            };
            if let Some(line) = record.into_iter().find(|l| l.go_mod == go_mod) {
                return Some((line.hash, db));
            }
        }
        None
    }

    /// Remembers the checksum databases whose lookups the go mounts' cache
    /// holds (`sumdb/NAME/`), so that after a restart a lookup cached before
    /// it still protects a zip before any sumdb request passes through again.
    pub async fn recall_sumdbs(&self) {
        for mount in self
            .rules
            .mounts
            .iter()
            .filter(|m| m.profile == Profile::Go)
        {
            let namespace = Namespace::Mount(mount.name.clone());
            let Ok(dir) = CacheKey::try_from_path(namespace, "/sumdb") else {
                continue;
            };
            for db in self.store.child_dirs(&dir, MAX_SUMDBS).await {
                // Only a name go::route would give, as a request would.
                if let go::Route::Sumdb { db: named, .. } =
                    go::route(&format!("/sumdb/{db}/latest"))
                {
                    if named == db {
                        tracing::debug!(mount = %mount.name, db = %db, "checksum database found in the cache");
                        self.policy.remember_sumdb(&mount.name, &db, MAX_SUMDBS);
                    }
                }
            }
        }
    }

    /// The body of a small committed entry, if there is one; a miss is left
    /// alone (its permit is given back). A fill in progress is waited for
    /// (bounded by [`FILL_WAIT`]): a client that asks for a file right after
    /// the lookup that lists its hash has the whole lookup, but its fill
    /// commits a moment after the last byte went out.
    async fn committed_body(&self, key: &CacheKey) -> Option<bytes::Bytes> {
        let entry = match self.store.lookup(key).await {
            Ok(Lookup::Hit(entry)) => entry,
            Ok(Lookup::Filling(mut watch)) => {
                let committed = tokio::time::timeout(FILL_WAIT, watch.ended()).await;
                if committed != Ok(true) {
                    return None;
                }
                let Ok(Lookup::Hit(entry)) = self.store.lookup(key).await else {
                    return None;
                };
                entry
            }
            _ => return None,
        };
        if let Some(body) = entry.small_body() {
            return Some(body.clone());
        }
        if entry.len > MAX_LOOKUP as u64 {
            return None;
        }
        let mut reader = entry.reader(0, entry.len);
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = reader.next_chunk().await {
            body.extend_from_slice(&chunk);
        }
        Some(body.into())
    }
}
