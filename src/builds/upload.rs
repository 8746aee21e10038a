//! `Builds::upload`: a local source sent over HTTP, counted against its
//! client's quota from its first byte until a build request claims it.

use super::{inbox, job, quota, spec, Builds, Error};
use std::time::{Duration, Instant};

/// How long an upload waits for the build request that names it.
pub(super) const UPLOAD_TTL: Duration = Duration::from_secs(600);

/// An upload waiting for its build request, holding its bytes of its
/// client's quota until it is claimed or expires.
pub(super) struct Pending {
    pub(super) source: inbox::Source,
    pub(super) at: Instant,
    _held: quota::Reservation,
}

impl Builds {
    /// Receives an uploaded local source from `client`; the returned id goes
    /// in the build request's `upload` field. Its bytes count against the
    /// client's `--inbox-quota` from the moment they are announced (all of
    /// `declared` at once) or arrive (chunk by chunk, when no length was
    /// declared) until a build request claims the upload or it expires; a
    /// client at its quota is refused at once and holds up no one else.
    pub async fn upload(
        &self,
        sha1: &str,
        body: std::pin::Pin<
            Box<dyn futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send>,
        >,
        client: quota::ClientId,
        declared: Option<u64>,
    ) -> Result<String, Error> {
        use futures_util::StreamExt;
        self.check_enabled()?;
        if !spec::valid_sha1(sha1) {
            return Err(spec::Error::BadSha1(sha1.chars().take(64).collect()).into());
        }
        let inbox = self.open_inbox()?;
        let mut held = self.inner.ledger.reserve(client, declared.unwrap_or(0))?;
        let mut refused = None;
        let mut seen = 0u64;
        let counted = body.map(|chunk| {
            let chunk = chunk?;
            seen += chunk.len() as u64;
            if seen > held.bytes() {
                held.grow(seen - held.bytes()).map_err(|over| {
                    refused = Some(over);
                    std::io::Error::other("over the upload quota")
                })?;
            }
            Ok(chunk)
        });
        let source = match inbox.upload(sha1, counted).await {
            Ok(source) => source,
            Err(_) if refused.is_some() => {
                return Err(refused.take().expect("checked just now").into())
            }
            Err(err) => return Err(err.into()),
        };
        held.shrink_to(source.size);
        let id = job::random_hex(16);
        self.inner
            .uploads
            .lock()
            .expect("uploads lock is never poisoned")
            .insert(
                id.clone(),
                Pending {
                    source,
                    at: Instant::now(),
                    _held: held,
                },
            );
        Ok(id)
    }
}
