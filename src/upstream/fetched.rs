//! `Fetched`: an upstream answer whose status is final, with its first body
//! chunk already in hand, and the body read chunk by chunk under the idle
//! timeout (decoded on the way for documents that asked for it).

use super::{decode, BodyError};
use bytes::Bytes;
use http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::time::Duration;

/// A response whose status is final, with its first body chunk already read.
pub struct Fetched {
    /// The URL that answered (after redirects).
    pub url: String,
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    pub(super) first: Option<Bytes>,
    pub(super) body: Incoming,
    pub(super) idle: Duration,
    pub(super) decoder: Option<decode::Decoder>,
}

impl Fetched {
    /// The next body chunk (decoded, if the request asked for it); `None` at
    /// a clean end. Fails when no byte arrives within the idle timeout, the
    /// connection breaks, or a coded body does not decode.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        loop {
            let raw = match self.first.take() {
                Some(first) => Some(first),
                None => next_data(&mut self.body, self.idle).await?,
            };
            let Some(decoder) = &mut self.decoder else {
                return Ok(raw);
            };
            match raw {
                Some(raw) => {
                    let out = decoder.push(&raw).map_err(BodyError::Decode)?;
                    if !out.is_empty() {
                        return Ok(Some(out));
                    }
                }
                None => {
                    let out = decoder.finish().map_err(BodyError::Decode)?;
                    self.decoder = None;
                    return Ok((!out.is_empty()).then_some(out));
                }
            }
        }
    }

    /// The upstream's Content-Length, if it sent a valid one.
    pub fn content_length(&self) -> Option<u64> {
        self.headers
            .get(header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    }
}

/// How reading the raw body failed.
pub(super) enum RawError {
    Idle(u64),
    Transport(hyper::Error),
}

impl From<RawError> for BodyError {
    fn from(err: RawError) -> BodyError {
        match err {
            RawError::Idle(secs) => BodyError::Idle(secs),
            RawError::Transport(e) => BodyError::Transport(e),
        }
    }
}

pub(super) async fn next_data(
    body: &mut Incoming,
    idle: Duration,
) -> Result<Option<Bytes>, RawError> {
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(RawError::Idle(idle.as_secs())),
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => return Err(RawError::Transport(e)),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if !data.is_empty() {
                return Ok(Some(data));
            }
        }
    }
}
