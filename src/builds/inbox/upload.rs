//! [`Inbox::upload`]: an HTTP body into a verified private copy.

use super::name::check_sha1;
use super::private::{Digests, PrivateFile};
use super::{Error, Inbox, Source, SOURCE_MODE};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::io;
use tokio::io::AsyncWriteExt;

pub(super) async fn upload<S: Stream<Item = io::Result<Bytes>> + Unpin>(
    inbox: &Inbox,
    sha1: &str,
    body: S,
) -> Result<Source, Error> {
    check_sha1(sha1)?;
    let copy = PrivateFile::new(inbox, "upload")?;
    match write_limited(inbox, &copy, body).await {
        Ok(digests) => copy.verify(sha1, digests, None).await,
        Err(err) => {
            copy.remove().await;
            Err(err)
        }
    }
}

/// Writes the body into the new private file, refusing it as soon as it
/// passes `max_size`, then syncs it.
async fn write_limited<S: Stream<Item = io::Result<Bytes>> + Unpin>(
    inbox: &Inbox,
    copy: &PrivateFile,
    mut body: S,
) -> Result<Digests, Error> {
    let max_size = inbox.config.max_size;
    let mut out = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(SOURCE_MODE)
        .open(copy.path())
        .await
        .map_err(Error::io("creating", copy.path()))?;
    let mut digests = Digests::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(Error::Body)?;
        if digests.size().saturating_add(chunk.len() as u64) > max_size {
            return Err(Error::TooBig { limit: max_size });
        }
        digests.update(&chunk);
        out.write_all(&chunk)
            .await
            .map_err(Error::io("writing", copy.path()))?;
    }
    out.flush()
        .await
        .map_err(Error::io("writing", copy.path()))?;
    out.sync_all()
        .await
        .map_err(Error::io("syncing", copy.path()))?;
    Ok(digests)
}
