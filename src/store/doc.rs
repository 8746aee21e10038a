//! Index documents: small, mutable files (a PyPI page, RubyGems `/versions`)
//! replaced whole when the upstream changes. Each is one file under
//! `.package-cache/docs/<2 hex>/<sha256 of key>` holding its metadata and
//! body together, so a replacement (temp file, fsync, rename) is atomic and a
//! reader never pairs a new body with old headers.

use super::disk;
use super::{Error, Store};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Largest document accepted (RubyGems' full `/versions` is tens of MB).
pub const MAX_DOC_LEN: u64 = 128 << 20;
const MAX_HEAD_LEN: u32 = 16 << 20;

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
    /// Expected sha256 of files the document lists, by store key
    /// (`CacheKey::canonical`): what downloads are verified against.
    pub hashes: Vec<(String, String)>,
}

/// A document and its metadata.
#[derive(Clone, Debug)]
pub struct Doc {
    /// Its metadata.
    pub meta: DocMeta,
    /// Its body as served.
    pub body: Bytes,
}

impl Store {
    fn doc_path(&self, key: &str) -> PathBuf {
        let digest = hex::encode(Sha256::digest(key.as_bytes()));
        self.inner
            .root
            .join(super::STATE_DIR)
            .join("docs")
            .join(&digest[..2])
            .join(digest)
    }

    /// The stored document for `key`, if any (a damaged file counts as none).
    pub async fn read_doc(&self, key: &str) -> Result<Option<Doc>, Error> {
        let path = self.doc_path(key);
        let key = key.to_string();
        tokio::task::spawn_blocking(move || read_blocking(&path, &key))
            .await
            .map_err(Error::join)?
    }

    /// Stores `doc` under its key, replacing any earlier version atomically.
    pub async fn write_doc(&self, doc: Doc) -> Result<(), Error> {
        let path = self.doc_path(&doc.meta.key);
        let tmp = self.inner.tmp_path("doc");
        tokio::task::spawn_blocking(move || {
            let result = write_blocking(&doc, &path, &tmp);
            if result.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            result.map_err(|source| Error::Io {
                op: "write document",
                path,
                source,
            })
        })
        .await
        .map_err(Error::join)?
    }

    /// Forgets the document for `key` (the upstream says it is gone).
    pub async fn remove_doc(&self, key: &str) -> Result<(), Error> {
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
    let mut len = [0u8; 4];
    if file.read_exact(&mut len).is_err() {
        return Ok(None);
    }
    let head_len = u32::from_be_bytes(len);
    if head_len > MAX_HEAD_LEN {
        return Ok(None);
    }
    let mut head = vec![0; head_len as usize];
    if file.read_exact(&mut head).is_err() {
        return Ok(None);
    }
    let Ok(meta) = serde_json::from_slice::<DocMeta>(&head) else {
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

fn write_blocking(doc: &Doc, path: &Path, tmp: &Path) -> std::io::Result<()> {
    let head = serde_json::to_vec(&doc.meta).map_err(std::io::Error::other)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    file.write_all(&(head.len() as u32).to_be_bytes())?;
    file.write_all(&head)?;
    file.write_all(&doc.body)?;
    file.sync_all()?;
    let parent = path.parent().expect("document paths have a parent");
    let grand = parent.parent().expect("document fan-out has a parent");
    for dir in [grand, parent] {
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => disk::sync_dir(dir.parent().expect("under the state dir"))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    fs::rename(tmp, path)?;
    disk::sync_dir(parent)
}
