//! The one response body type used by every handler, and its constructors.
//!
//! Bodies are boxed and unsync so that file readers, upstream bodies and fixed
//! texts all fit one `Response<Body>`.

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use std::io;

/// The response body type of the proxy.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, io::Error>;

/// An empty body.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body holding `data` in memory.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body streaming the chunks of `stream`; an error ends the body uncleanly.
pub fn from_stream<S>(stream: S) -> Body
where
    S: Stream<Item = io::Result<Bytes>> + Send + 'static,
{
    StreamBody::new(stream.map_ok(Frame::data)).boxed_unsync()
}
