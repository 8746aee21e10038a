//! `FillWatch`: a request's handle on a fill in progress, whether it started
//! the fill or joined it: it waits for the fill to start (or to fail, or to
//! be given up), then for its first bytes, and hands out readers that follow
//! the growing file. `ActiveFill` is a fill's progress as the status page
//! shows it.

use super::fill::{FillHead, FillShared, FillState};
use super::{BodyReader, Failure};
use std::sync::Arc;
use tokio::sync::watch;

/// A handle on a fill in progress, held by a request that joined it.
pub struct FillWatch {
    shared: Arc<FillShared>,
    rx: watch::Receiver<FillState>,
    /// Bytes seen written (in the file, or held in memory) by [`FillWatch::first_bytes`].
    seen: u64,
}

/// What a joined fill turned out to be, once it left `Pending`.
pub enum FillStart {
    /// The body is streaming: respond from it.
    Started(Arc<FillHead>),
    /// The fetch failed; answer as the leader did.
    Failed(Failure),
    /// The leader gave up before starting; look up again.
    Vacated,
    /// The answer is not cacheable; fetch it uncached.
    Uncacheable,
}

impl FillWatch {
    pub(crate) fn new(shared: Arc<FillShared>) -> FillWatch {
        let rx = shared.state.subscribe();
        FillWatch {
            shared,
            rx,
            seen: 0,
        }
    }

    /// Waits until the fill has left `Pending`.
    pub async fn started(&mut self) -> FillStart {
        let state = match self.rx.wait_for(|s| *s != FillState::Pending).await {
            Ok(state) => state.clone(),
            Err(_) => return FillStart::Vacated,
        };
        match state {
            FillState::Failed(failure) => FillStart::Failed(failure),
            FillState::Vacated => FillStart::Vacated,
            FillState::Uncacheable => FillStart::Uncacheable,
            _ => match self.shared.head.get() {
                Some(head) => FillStart::Started(head.clone()),
                None => FillStart::Vacated,
            },
        }
    }

    /// Waits until the first bytes can be read, or the fill has ended.
    /// False when it failed. A response should not begin before: hyper drops
    /// the head of a response whose body fails on its first poll.
    pub async fn first_bytes(&mut self) -> bool {
        let ready = self.rx.wait_for(|s| match s {
            FillState::Streaming { written } => *written > 0,
            FillState::Spilling { received, .. } => *received > 0,
            FillState::Pending => false,
            _ => true,
        });
        let seen = match ready.await {
            Ok(state) => match *state {
                FillState::Streaming { written } => Some(written),
                FillState::Spilling { received, .. } => Some(received),
                FillState::Complete { len, .. } => Some(len),
                _ => None,
            },
            Err(_) => None,
        };
        self.seen = seen.unwrap_or(0);
        seen.is_some()
    }

    /// Waits until the fill has ended, however it ended; true when its
    /// entry was committed.
    pub async fn ended(&mut self) -> bool {
        let end = self.rx.wait_for(|s| {
            !matches!(
                s,
                FillState::Pending | FillState::Streaming { .. } | FillState::Spilling { .. }
            )
        });
        match end.await {
            Ok(state) => matches!(
                *state,
                FillState::Complete {
                    committed: true,
                    ..
                }
            ),
            Err(_) => false,
        }
    }

    /// Why the fill aborted, when [`FillWatch::first_bytes`] said it had
    /// failed and its writer (or the commit) gave a cause.
    pub fn abort_cause(&self) -> Option<Failure> {
        self.shared.cause.get().cloned()
    }

    /// The current state (for logs and tests).
    pub fn state(&self) -> FillState {
        self.rx.borrow().clone()
    }

    /// A reader over `[start, end)` of the growing body (`end` may be `u64::MAX`).
    /// Only meaningful after [`FillWatch::started`] returned `Started`.
    pub fn reader(&self, start: u64, end: u64) -> Option<BodyReader> {
        let file = self.shared.file.get()?.clone();
        Some(BodyReader::growing(
            self.shared.clone(),
            file,
            start,
            end,
            self.seen,
        ))
    }
}

/// A fill in progress as the status page shows it: a copy, stale at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveFill {
    /// The entry's key as logs show it (`/path`, `host/path`, `/mount/path`).
    pub key: String,
    /// Bytes written so far.
    pub written: u64,
    /// The upstream's Content-Length, once it answered with one.
    pub content_length: Option<u64>,
    /// Responses following the fill now: each live reader (and each request
    /// still waiting for the upstream's answer) holds one receiver.
    pub readers: usize,
    /// The fill's state (`FillState::as_str`).
    pub state: &'static str,
}

impl FillShared {
    /// A snapshot of this fill for the status page.
    pub(crate) fn progress(&self) -> ActiveFill {
        let state = self.state.borrow().clone();
        let written = match state {
            FillState::Streaming { written } => written,
            FillState::Complete { len, .. } => len,
            _ => 0,
        };
        ActiveFill {
            key: self.key.to_string(),
            written,
            content_length: self.head.get().and_then(|h| h.content_length),
            readers: self.state.receiver_count(),
            state: state.as_str(),
        }
    }
}
