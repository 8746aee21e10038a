//! Checking a committed body, on a hit, against a digest its index lists
//! that the recorded sha256 cannot decide (sha1, sha384, sha512, a module
//! zip's `h1:`). A body cached before any index listed it (fetched by its
//! URL alone) was never checked against that digest, and the upstream may
//! have served anything. The body is read once, off the runtime, through the
//! descriptor the hit opened (beneath the root, so exactly the bytes that
//! would be served), by one check per key at a time; requests that ask
//! meanwhile wait for its outcome. A match is recorded in the entry's
//! metadata (`EntryMeta::verified`), so later hits read nothing. Serving or
//! dropping the entry is the caller's decision.

use super::flight::{Claim, Lead};
use super::meta::EntryMeta;
use super::verify::{differs_at_rest, AtOffset};
use super::{CacheKey, Entry, Error, Inner, Store};
use crate::digest::Digest;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// How many times a request may find a check of its key that was not for
/// its digest or body (or was given up) before it gives up itself.
const MAX_ROUNDS: usize = 4;

/// What [`Store::confirm`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Confirmed {
    /// Known without reading: its sha256 decides the digest, or a match
    /// was recorded with the entry.
    Known,
    /// This call read the body (`bytes`, in `elapsed_ms`), and it matches;
    /// recorded with the entry when it has metadata.
    Hashed {
        /// Bytes read.
        bytes: u64,
        /// How long the check took.
        elapsed_ms: u64,
    },
    /// Matches, by a check of the same body that another request ran while
    /// this one waited.
    Followed,
    /// Does not match: the body's digest in the listed algorithm (its
    /// sha256 when that decides), or why it has none.
    Differs {
        /// What the body is instead.
        found: String,
    },
}

/// One check in progress: how far it got.
pub(crate) struct CheckFlight {
    progress: watch::Sender<Progress>,
}

impl CheckFlight {
    fn new() -> CheckFlight {
        CheckFlight {
            progress: watch::channel(Progress::Running).0,
        }
    }
}

#[derive(Clone)]
enum Progress {
    Running,
    Done(Outcome),
    /// The check stopped without an answer (its task panicked).
    GaveUp,
}

/// A check's outcome, as the requests that waited for it see it.
#[derive(Clone)]
struct Outcome {
    /// The body checked (`None`: a plain file without metadata).
    inode: Option<u64>,
    digest: Digest,
    result: Checked,
}

#[derive(Clone)]
enum Checked {
    /// Recorded with the entry by an earlier check.
    Recorded,
    Matches {
        bytes: u64,
        elapsed_ms: u64,
    },
    Differs(String),
    Failed(String),
}

/// The right to run one check; dropped without an outcome, it tells the
/// requests waiting for it that it gave up.
struct CheckPermit {
    lead: Lead<CacheKey, CheckFlight>,
    done: bool,
}

impl CheckPermit {
    fn finish(mut self, outcome: Outcome) {
        self.end(Progress::Done(outcome));
    }

    fn end(&mut self, progress: Progress) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        // Out of the registry first: a request that comes after the outcome
        // reads the recorded match instead of waiting.
        self.lead.leave();
        self.lead.flight().progress.send_replace(progress);
    }
}

impl Drop for CheckPermit {
    fn drop(&mut self) {
        self.end(Progress::GaveUp);
    }
}

impl Store {
    /// Whether `entry`, the committed entry of `key` a lookup gave, has the
    /// digest `listed` its index lists. Decided from the metadata when it
    /// can be (the sha256, a match recorded earlier); otherwise the body is
    /// read whole, off the runtime, by one check per key at a time (the
    /// check runs to its end even if this call is dropped, so requests
    /// waiting for it still get its outcome). `Err` when the body cannot be
    /// read: it is neither confirmed nor refuted.
    pub async fn confirm(
        &self,
        key: &CacheKey,
        entry: &Entry,
        listed: &Digest,
    ) -> Result<Confirmed, Error> {
        let inode = entry.meta.as_ref().map(|m| m.inode);
        if let Some(meta) = &entry.meta {
            match listed.decided_by_sha256(&meta.sha256) {
                Some(true) => return Ok(Confirmed::Known),
                Some(false) => {
                    return Ok(Confirmed::Differs {
                        found: format!("sha256:{}", meta.sha256),
                    })
                }
                None if meta.verified.contains(listed) => return Ok(Confirmed::Known),
                None => {}
            }
        }
        let Some(body) = Body::of(entry) else {
            return Err(Error::Check {
                key: key.to_string(),
                digest: listed.to_string(),
                message: "the entry holds no body to read".into(),
            });
        };
        for _ in 0..MAX_ROUNDS {
            let (mut rx, led) = match self.inner.checks.claim(key, CheckFlight::new) {
                Claim::Lead(lead) => {
                    let rx = lead.flight().progress.subscribe();
                    let permit = CheckPermit { lead, done: false };
                    let inner = self.inner.clone();
                    let (key, listed) = (key.clone(), listed.clone());
                    let body = body.clone();
                    // Not awaited here: the outcome comes through `rx`,
                    // whether or not this call is still there to read it.
                    tokio::task::spawn_blocking(move || {
                        let result = check_blocking(&inner, &key, &body, inode, &listed);
                        permit.finish(Outcome {
                            inode,
                            digest: listed,
                            result,
                        });
                    });
                    (rx, true)
                }
                Claim::Follow(flight) => (flight.progress.subscribe(), false),
            };
            let progress = rx
                .wait_for(|p| !matches!(p, Progress::Running))
                .await
                .map(|p| p.clone());
            let Ok(Progress::Done(outcome)) = progress else {
                continue;
            };
            if outcome.inode != inode || &outcome.digest != listed {
                // A check of another body or digest of this key: ours next.
                continue;
            }
            return match outcome.result {
                Checked::Recorded => Ok(Confirmed::Known),
                Checked::Matches { bytes, elapsed_ms } if led => {
                    Ok(Confirmed::Hashed { bytes, elapsed_ms })
                }
                Checked::Matches { .. } => Ok(Confirmed::Followed),
                Checked::Differs(found) => Ok(Confirmed::Differs { found }),
                Checked::Failed(message) => Err(Error::Check {
                    key: key.to_string(),
                    digest: listed.to_string(),
                    message,
                }),
            };
        }
        Err(Error::Check {
            key: key.to_string(),
            digest: listed.to_string(),
            message: "no check of it finished (checks of this key kept it waiting, or gave up)"
                .into(),
        })
    }
}

/// The bytes a hit would serve: a small body held in memory, or the
/// descriptor the lookup opened.
#[derive(Clone)]
enum Body {
    Small(bytes::Bytes),
    File(Arc<std::fs::File>, u64),
}

impl Body {
    /// `None` for an entry that holds neither (none that a lookup gives).
    fn of(entry: &Entry) -> Option<Body> {
        match (&entry.small, &entry.file) {
            (Some(bytes), _) => Some(Body::Small(bytes.clone())),
            (None, Some(file)) => Some(Body::File(file.clone(), entry.len)),
            (None, None) => None,
        }
    }
}

fn check_blocking(
    inner: &Inner,
    key: &CacheKey,
    body: &Body,
    inode: Option<u64>,
    listed: &Digest,
) -> Checked {
    // A check that ended just before this one began may have recorded it.
    if let Some(inode) = inode {
        if EntryMeta::read_bound(&inner.layout, key, inode)
            .is_some_and(|m| m.verified.contains(listed))
        {
            return Checked::Recorded;
        }
    }
    let started = Instant::now();
    let (differs, bytes) = match body {
        Body::Small(bytes) => (
            differs_at_rest(listed, io::Cursor::new(bytes.as_ref())),
            bytes.len() as u64,
        ),
        Body::File(file, len) => (differs_at_rest(listed, AtOffset::new(file, *len)), *len),
    };
    match differs {
        Ok(None) => {}
        Ok(Some(found)) => return Checked::Differs(found),
        Err(err) => return Checked::Failed(err.to_string()),
    }
    if let Some(inode) = inode {
        if let Err(err) = record(inner, key, inode, listed) {
            // The hit is still good; the next one checks again.
            tracing::warn!(key = %key, error = %err, "cannot record a checked digest with the entry");
        }
    }
    Checked::Matches {
        bytes,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

/// Adds `listed` to the verified digests of `key`'s metadata, if its body is
/// still the inode checked, under the key's guard (a commit or removal
/// meanwhile wrote or removed its own), as adoption binds its metadata.
fn record(inner: &Inner, key: &CacheKey, inode: u64, listed: &Digest) -> io::Result<()> {
    let _guard = inner.guards.lock(key);
    let meta = match std::fs::symlink_metadata(inner.layout.entry(key)) {
        Ok(md) if md.ino() == inode => {
            EntryMeta::read_bound(&inner.layout, key, inode).filter(|meta| meta.size == md.len())
        }
        Ok(_) => None,
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let Some(mut meta) = meta else {
        return Ok(());
    };
    if meta.verified.contains(listed) {
        return Ok(());
    }
    meta.key = key.canonical();
    meta.verified.push(listed.clone());
    super::commit::write_meta(&inner.layout, &meta, &inner.layout.meta_file(key))?;
    // A small body kept whole holds the old metadata.
    inner.hot.remove(key);
    Ok(())
}
