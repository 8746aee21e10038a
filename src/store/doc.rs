//! Index documents: small, mutable files (a PyPI page, RubyGems `/versions`)
//! replaced whole when the upstream changes. Each is one file
//! (`Layout::doc_file`) holding its metadata and body together, so a
//! replacement (`durable`: temp file, fsync, rename) is atomic and a reader
//! never pairs a new body with old headers. Only this process writes
//! them, so the documents read or written lately are also kept in memory
//! (RubyGems' `/versions` is tens of MB and asked for on every `bundle`).

use super::durable::{self, TempFile};
use super::layout::{Layout, PRIVATE_DIR_MODE};
use super::{CacheKey, Error, Store};
use crate::digest::Digest;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest document accepted (RubyGems' full `/versions` is tens of MB).
pub const MAX_DOC_LEN: u64 = 128 << 20;
const MAX_HEAD_LEN: u32 = 16 << 20;
/// Memory for documents kept whole.
const MEMO_BUDGET: usize = 256 << 20;

/// Documents kept in memory, by key, within [`MEMO_BUDGET`].
#[derive(Default)]
pub(super) struct DocMemo {
    docs: std::collections::HashMap<String, Arc<Doc>>,
    bytes: usize,
}

impl DocMemo {
    fn get(&self, key: &str) -> Option<Arc<Doc>> {
        self.docs.get(key).cloned()
    }

    fn put(&mut self, doc: Arc<Doc>) {
        let size = doc.approx_size();
        if size > MEMO_BUDGET / 4 {
            self.remove(&doc.meta.key);
            return;
        }
        if self.bytes + size > MEMO_BUDGET {
            // Rare (a budget's worth of distinct documents): start over
            // rather than keep recency for every hit.
            self.docs.clear();
            self.bytes = 0;
        }
        self.remove(&doc.meta.key);
        self.bytes += size;
        self.docs.insert(doc.meta.key.clone(), doc);
    }

    /// Puts a document read from disk, unless a newer one was written meanwhile.
    fn offer(&mut self, doc: Arc<Doc>) {
        let newer = self
            .docs
            .get(&doc.meta.key)
            .is_some_and(|have| have.meta.validated_at >= doc.meta.validated_at);
        if !newer {
            self.put(doc);
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.docs.remove(key) {
            self.bytes -= old.approx_size();
        }
    }
}

/// What is recorded with a document.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DocMeta {
    /// The document key (to detect hash collisions).
    pub key: String,
    /// Response headers to send with it (names lower case).
    pub headers: Vec<(String, String)>,
    /// Seconds since the epoch when the upstream last confirmed it.
    pub validated_at: u64,
    /// The upstream's validators, for conditional requests.
    pub upstream_etag: Option<String>,
    /// The upstream's `Last-Modified`.
    pub upstream_last_modified: Option<String>,
    /// The URL it came from.
    pub source: String,
    /// The digests of the files the document lists, by store key
    /// (`CacheKey::canonical`): what downloads are verified against.
    pub hashes: Vec<(String, Digest)>,
    /// What the upstream's document said that the stored body no longer
    /// does and later requests need (a Cargo registry's own `dl`); opaque here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_note: Option<String>,
}

/// A document and its metadata.
#[derive(Clone, Debug)]
pub struct Doc {
    /// Its metadata.
    pub meta: DocMeta,
    /// Its body as served.
    pub body: Bytes,
}

impl Doc {
    fn approx_size(&self) -> usize {
        let hashes: usize = self
            .meta
            .hashes
            .iter()
            .map(|(k, v)| k.len() + 2 * v.as_bytes().len() + 56)
            .sum();
        self.body.len() + hashes + 512
    }
}

impl Store {
    fn doc_path(&self, key: &str) -> PathBuf {
        self.inner.layout.doc_file(key)
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, DocMemo> {
        self.inner
            .docs
            .lock()
            .expect("document memo lock is never poisoned")
    }

    /// The stored document for `key`, if any (a damaged file counts as none).
    pub async fn read_doc(&self, key: &str) -> Result<Option<Arc<Doc>>, Error> {
        if let Some(doc) = self.memo().get(key) {
            return Ok(Some(doc));
        }
        let path = self.doc_path(key);
        let owned = key.to_string();
        let doc = tokio::task::spawn_blocking(move || read_blocking(&path, &owned))
            .await
            .map_err(Error::join)??
            .map(Arc::new);
        if let Some(doc) = &doc {
            self.memo().offer(doc.clone());
            return Ok(Some(doc.clone()));
        }
        // A node with an empty disk takes what another stored below, stale or
        // not: freshness is judged on the copy's own validation time.
        for tier in self.inner.lower_tiers() {
            if let Some(doc) = tier.read_doc(key).await.filter(|d| d.meta.key == key) {
                let doc = Arc::new(doc);
                self.write_local_doc(doc.clone()).await?;
                return Ok(Some(doc));
            }
        }
        Ok(None)
    }

    /// Stores `doc` under its key, replacing any earlier version atomically,
    /// and offers it to the tiers below.
    pub async fn write_doc(&self, doc: Arc<Doc>) -> Result<(), Error> {
        self.write_local_doc(doc.clone()).await?;
        for tier in self.inner.lower_tiers() {
            tier.offer_doc(doc.clone());
        }
        Ok(())
    }

    async fn write_local_doc(&self, doc: Arc<Doc>) -> Result<(), Error> {
        let path = self.doc_path(&doc.meta.key);
        let layout = self.inner.layout.clone();
        // Until the new file is in place, readers must not see the old one from memory.
        self.memo().remove(&doc.meta.key);
        let written = doc.clone();
        let result = tokio::task::spawn_blocking(move || {
            write_blocking(&written, &layout, &path).map_err(|source| Error::Io {
                op: "write document",
                path,
                source,
            })
        })
        .await
        .map_err(Error::join)?;
        if result.is_ok() {
            self.memo().put(doc);
        }
        result
    }

    /// Forgets the document for `key` (the upstream says it is gone).
    pub async fn remove_doc(&self, key: &str) -> Result<(), Error> {
        self.memo().remove(key);
        let path = self.doc_path(key);
        tokio::task::spawn_blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Io {
                op: "remove document",
                path,
                source,
            }),
        })
        .await
        .map_err(Error::join)?
    }
}

fn read_blocking(path: &Path, key: &str) -> Result<Option<Doc>, Error> {
    let io = |source| Error::Io {
        op: "read document",
        path: path.to_path_buf(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let Some(meta) = parse_head(&mut file) else {
        return Ok(None);
    };
    if meta.key != key {
        return Ok(None);
    }
    let mut body = Vec::new();
    file.take(MAX_DOC_LEN).read_to_end(&mut body).map_err(io)?;
    Ok(Some(Doc {
        meta,
        body: Bytes::from(body),
    }))
}

/// Reads the metadata at the start of a document file; `None` when the file
/// is missing, truncated or not a document (for scans of the cache).
pub(super) fn read_head(path: &Path) -> Option<DocMeta> {
    parse_head(&mut File::open(path).ok()?)
}

/// The head as a document file holds it: the metadata, and which names its
/// `hashes` use.
#[derive(Serialize)]
struct HeadOut<'a> {
    names: u32,
    #[serde(flatten)]
    meta: &'a DocMeta,
}

#[derive(Deserialize)]
struct HeadIn {
    /// Absent in files of earlier versions, whose names were lossy.
    #[serde(default)]
    names: u32,
    #[serde(flatten)]
    meta: DocMeta,
}

/// `names` of heads whose `hashes` use `CacheKey::canonical`.
const CANONICAL_NAMES: u32 = 1;

/// The length-prefixed JSON head of a document file. The digests listed by a
/// document an earlier version wrote are renamed to today's canonical names
/// (see `CacheKey::canonical_from_legacy`), so the files they vouch for are
/// still checked.
fn parse_head(file: &mut File) -> Option<DocMeta> {
    let mut len = [0u8; 4];
    file.read_exact(&mut len).ok()?;
    let head_len = u32::from_be_bytes(len);
    if head_len > MAX_HEAD_LEN {
        return None;
    }
    let mut head = vec![0; head_len as usize];
    file.read_exact(&mut head).ok()?;
    let HeadIn { names, mut meta } = serde_json::from_slice::<HeadIn>(&head).ok()?;
    if names < CANONICAL_NAMES {
        for (key, _) in &mut meta.hashes {
            *key = CacheKey::canonical_from_legacy(key);
        }
    }
    Some(meta)
}

fn write_blocking(doc: &Doc, layout: &Layout, path: &Path) -> std::io::Result<()> {
    let head = HeadOut {
        names: CANONICAL_NAMES,
        meta: &doc.meta,
    };
    let head = serde_json::to_vec(&head).map_err(std::io::Error::other)?;
    let mut file = TempFile::create(&layout.tmp_dir(), 0o600)?;
    file.write_all(&(head.len() as u32).to_be_bytes())?;
    file.write_all(&head)?;
    file.write_all(&doc.body)?;
    durable::create_dir(&layout.docs_dir(), PRIVATE_DIR_MODE)?;
    durable::create_dir(
        path.parent().expect("document paths have a parent"),
        PRIVATE_DIR_MODE,
    )?;
    file.commit(path)
}
