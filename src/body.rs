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
/// The response head always goes out first, also when the stream fails at
/// once or right after its first chunk (see `HeadFirst`).
pub fn from_stream<S>(stream: S) -> Body
where
    S: Stream<Item = io::Result<Bytes>> + Send + 'static,
{
    let stream = HeadFirst {
        inner: Box::pin(stream),
        held: None,
    };
    StreamBody::new(stream.map_ok(Frame::data)).boxed_unsync()
}

/// Holds back an error that a stream yields until the next poll. hyper
/// buffers a response head with the body frames that follow it, polling
/// the body again while its buffer has room, and drops everything still
/// buffered when a poll fails: a body that fails on its first poll, or
/// right after a first chunk that was ready at once (a fill that aborted
/// after the bytes a reader had seen), would reach the client as a closed
/// connection with no status. One `Pending` in between lets hyper flush the
/// head and the bytes before it, and the client sees the status and a body
/// that ends uncleanly, as for an error later in the body.
struct HeadFirst<S> {
    inner: std::pin::Pin<Box<S>>,
    held: Option<io::Error>,
}

impl<S> Stream for HeadFirst<S>
where
    S: Stream<Item = io::Result<Bytes>>,
{
    type Item = io::Result<Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if let Some(err) = self.held.take() {
            return Poll::Ready(Some(Err(err)));
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Err(err))) => {
                self.held = Some(err);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    /// Serves one response made by `respond` over an in-memory pipe of
    /// `pipe` bytes and reads it as a client: its status, and whether its
    /// body ended cleanly. Panics (naming `what`) if no head arrives.
    async fn fetch_over_pipe(
        what: &str,
        pipe: usize,
        respond: impl Fn() -> hyper::Response<Body> + Clone + Send + 'static,
    ) -> (http::StatusCode, bool) {
        let (client_io, server_io) = tokio::io::duplex(pipe);
        let server = tokio::spawn(async move {
            let service = service_fn(move |_req| {
                let respond = respond.clone();
                async move { Ok::<_, std::convert::Infallible>(respond()) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(server_io), service)
                .await;
        });
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client_io))
            .await
            .unwrap();
        tokio::spawn(conn);
        let request = hyper::Request::get("/")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            sender.send_request(request),
        )
        .await
        .expect("in time")
        .unwrap_or_else(|err| panic!("{what}: the head arrives: {err}"));
        let status = response.status();
        let clean = response.into_body().collect().await.is_ok();
        server.abort();
        (status, clean)
    }

    /// A body that fails before its first byte still lets its head out.
    #[tokio::test]
    async fn a_body_failing_at_once_still_sends_its_head() {
        let (status, clean) = fetch_over_pipe("failing at once", 64 * 1024, || {
            let failing = futures_util::stream::once(async {
                Err::<Bytes, _>(io::Error::other("the fill failed"))
            });
            hyper::Response::new(from_stream(failing))
        })
        .await;
        assert_eq!(status, 200);
        assert!(!clean, "the body ends uncleanly");
    }

    /// A body that fails right after a first chunk that was ready at once
    /// (a reader sending the bytes it had seen of a fill that then aborted)
    /// lets its head and that chunk out too: hyper keeps polling a body while
    /// its buffer has room, and drops what it buffered when a poll fails.
    #[tokio::test]
    async fn a_body_failing_after_its_first_chunk_still_sends_its_head() {
        for (len, pipe) in [(100, 1 << 20), (120_000, 1 << 20), (120_000, 64 * 1024)] {
            let what = format!("{len} bytes");
            let (status, clean) = fetch_over_pipe(&what, pipe, move || {
                let items = [
                    Ok(Bytes::from(vec![7u8; len])),
                    Err(io::Error::other("the fill aborted")),
                ];
                let mut response =
                    hyper::Response::new(from_stream(futures_util::stream::iter(items)));
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_LENGTH, (2 * len).into());
                response
            })
            .await;
            assert_eq!(status, 200, "{what}");
            assert!(!clean, "{what}: the body ends uncleanly");
        }
    }
}
