//! The maintenance commands on the shared store's bucket (`--shared-store`):
//! `stats` counts references, bodies, documents and pending uploads; `verify`
//! re-hashes every referenced body and removes the references of damaged ones;
//! `purge` removes the references whose key matches a glob; `gc --shared`
//! removes bodies no reference names (older than a grace period, so uploads
//! about to be published are safe) and, with `--max-size`, the least recently
//! used references first. Runs on a runtime of its own: the commands are
//! blocking, the client is async.

use super::{Error, Verdict};
use crate::config::SharedStoreConfig;
use crate::store::shared::{Error as SharedError, SharedStore};
use crate::store::CacheKey;
use futures_util::{StreamExt, TryStreamExt};
use indicatif::HumanBytes;
use std::io::Write;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a command does on the bucket.
#[derive(Clone, Debug)]
pub enum SharedCommand {
    /// `stats`.
    Stats {
        /// One JSON object instead of lines.
        json: bool,
    },
    /// `verify`.
    Verify,
    /// `purge PATTERN`.
    Purge {
        /// The glob on the request path.
        pattern: String,
        /// List only.
        dry_run: bool,
    },
    /// `gc --shared`.
    Gc {
        /// List only.
        dry_run: bool,
        /// Bodies younger than this are never removed.
        grace: Duration,
        /// Keep the referenced bodies under this many bytes, removing the least
        /// recently used references first.
        max_size: Option<u64>,
    },
}

/// Runs `command` on the bucket `config` names, writing its report to `out`.
pub fn run(
    config: &SharedStoreConfig,
    command: &SharedCommand,
    out: &mut dyn Write,
) -> Result<Verdict, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Output)?;
    runtime.block_on(async {
        let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
        let store = SharedStore::open(config, tracker.clone(), cancel.clone())
            .await
            .map_err(shared)?;
        let verdict = match command {
            SharedCommand::Stats { json } => stats(&store, *json, out).await,
            SharedCommand::Verify => verify(&store, out).await,
            SharedCommand::Purge { pattern, dry_run } => {
                purge(&store, pattern, *dry_run, out).await
            }
            SharedCommand::Gc {
                dry_run,
                grace,
                max_size,
            } => gc(&store, *dry_run, *grace, *max_size, out).await,
        };
        // Background deletes (a damaged body) finish before the process exits.
        tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(30), tracker.wait()).await;
        cancel.cancel();
        verdict
    })
}

fn shared(err: SharedError) -> Error {
    Error::Shared(Box::new(err))
}

/// Every reference, read (damaged ones as `Err`), with its object name.
async fn references(store: &SharedStore) -> Result<Vec<(String, Result<Ref, SharedError>)>, Error> {
    let names: Vec<String> = store
        .list_references()
        .map_ok(|l| l.name)
        .try_collect()
        .await
        .map_err(shared)?;
    let read = futures_util::stream::iter(names)
        .map(|name| async move {
            let found = store.read_listed(&name).await;
            (name, found)
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let mut out = Vec::new();
    for (name, found) in read {
        match found {
            Ok(Some(found)) => out.push((name, Ok(found))),
            Ok(None) => {}
            Err(err) if err.is_damaged() => out.push((name, Err(err))),
            Err(err) => return Err(shared(err)),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

type Ref = crate::store::shared::Found<serde_json::Value>;

async fn stats(store: &SharedStore, json: bool, out: &mut dyn Write) -> Result<Verdict, Error> {
    let count = |stream: futures_util::stream::BoxStream<'static, _>| async move {
        stream
            .try_fold((0u64, 0u64), |(n, b), l: crate::store::shared::Listed| {
                std::future::ready(Ok((n + 1, b + l.size)))
            })
            .await
            .map_err(shared)
    };
    let (refs, ref_bytes) = count(store.list_references()).await?;
    let (bodies, body_bytes) = count(store.list_bodies()).await?;
    let (docs, doc_bytes) = count(store.list_docs()).await?;
    let pending = store.pending_uploads().await.map_err(shared)?.len();
    if json {
        let value = serde_json::json!({
            "store": store.url(),
            "references": refs, "reference_bytes": ref_bytes,
            "bodies": bodies, "body_bytes": body_bytes,
            "documents": docs, "document_bytes": doc_bytes,
            "pending_uploads": pending,
        });
        writeln!(out, "{value}")?;
    } else {
        writeln!(out, "store       {}", store.url())?;
        writeln!(out, "references  {refs} ({})", HumanBytes(ref_bytes))?;
        writeln!(out, "bodies      {bodies} ({})", HumanBytes(body_bytes))?;
        writeln!(out, "documents   {docs} ({})", HumanBytes(doc_bytes))?;
        writeln!(out, "uploads     {pending} pending")?;
    }
    Ok(Verdict::Clean)
}

async fn verify(store: &SharedStore, out: &mut dyn Write) -> Result<Verdict, Error> {
    let (mut good, mut bad, mut bytes) = (0u64, 0u64, 0u64);
    for (name, found) in references(store).await? {
        let damage = match found {
            Err(err) => Some(err.to_string()),
            Ok(found) => match check_body(store, &found).await {
                Ok(len) => {
                    good += 1;
                    bytes += len;
                    None
                }
                Err(err) if err.is_damaged() => Some(err.to_string()),
                Err(err) => return Err(shared(err)),
            },
        };
        if let Some(damage) = damage {
            bad += 1;
            // A damaged body is deleted by the reader; its reference goes too,
            // so the next node to miss it fetches it again.
            store.delete_reference(&name).await.map_err(shared)?;
            writeln!(out, "DAMAGED {name}: {damage} (reference removed)")?;
        }
    }
    writeln!(
        out,
        "verify: {good} bodies match their references ({}), {bad} damaged",
        HumanBytes(bytes)
    )?;
    Ok(if bad > 0 {
        Verdict::Failed
    } else {
        Verdict::Clean
    })
}

/// Reads the body `found` names to its end, verified; its length.
async fn check_body(store: &SharedStore, found: &Ref) -> Result<u64, SharedError> {
    let mut body = store.body(found).await?;
    let mut len = 0;
    while let Some(chunk) = body.next().await {
        len += chunk?.len() as u64;
    }
    Ok(len)
}

async fn purge(
    store: &SharedStore,
    pattern: &str,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<Verdict, Error> {
    let glob = super::purge::matcher(pattern)?;
    let verb = if dry_run { "would remove" } else { "removed" };
    let (mut n, mut bytes) = (0u64, 0u64);
    for (name, found) in references(store).await? {
        let Ok(found) = found else { continue };
        let key = &found.reference.key;
        let Some(path) = CacheKey::try_from_canonical(key).map(|k| k.to_string()) else {
            continue;
        };
        if !glob.is_match(&path) {
            continue;
        }
        if !dry_run {
            store.delete_reference(&name).await.map_err(shared)?;
        }
        n += 1;
        bytes += found.reference.size;
        writeln!(out, "{verb} {path} ({})", HumanBytes(found.reference.size))?;
    }
    writeln!(
        out,
        "purge: {verb} {n} shared references matching {pattern:?}, {} (their bodies go with gc --shared)",
        HumanBytes(bytes)
    )?;
    Ok(Verdict::Clean)
}

async fn gc(
    store: &SharedStore,
    dry_run: bool,
    grace: Duration,
    max_size: Option<u64>,
    out: &mut dyn Write,
) -> Result<Verdict, Error> {
    let verb = if dry_run { "would remove" } else { "removed" };
    let (mut lru, mut lru_bytes) = (0u64, 0u64);
    if let Some(max) = max_size {
        let mut live: Vec<(String, u64, u64, String)> = references(store)
            .await?
            .into_iter()
            .filter_map(|(name, found)| {
                let r = found.ok()?.reference;
                Some((name, r.last_used, r.size, r.body))
            })
            .collect();
        // Bodies shared by several keys count once.
        let mut seen = std::collections::HashSet::new();
        let mut total: u64 = live
            .iter()
            .filter(|l| seen.insert(l.3.clone()))
            .map(|l| l.2)
            .sum();
        live.sort_by_key(|l| (l.1, l.0.clone()));
        for (name, last_used, size, _) in live {
            if total <= max {
                break;
            }
            if !dry_run {
                store.delete_reference(&name).await.map_err(shared)?;
            }
            total = total.saturating_sub(size);
            lru += 1;
            lru_bytes += size;
            writeln!(
                out,
                "{verb} reference {name} ({}, last used {last_used})",
                HumanBytes(size)
            )?;
        }
    }
    let orphans = store.orphan_bodies(grace).await.map_err(shared)?;
    let mut orphan_bytes = 0;
    for body in &orphans {
        if !dry_run {
            store.delete_body(&body.name).await.map_err(shared)?;
        }
        orphan_bytes += body.size;
        writeln!(out, "{verb} body {} ({})", body.name, HumanBytes(body.size))?;
    }
    writeln!(
        out,
        "gc --shared: {verb} {lru} least recently used references ({}) and {} unreferenced bodies ({})",
        HumanBytes(lru_bytes),
        orphans.len(),
        HumanBytes(orphan_bytes)
    )?;
    Ok(Verdict::Clean)
}
