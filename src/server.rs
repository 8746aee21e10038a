//! The accept loop: one task per connection, HTTP/1.1 with keep-alive, a
//! header-read timeout (also closing idle keep-alive connections, so a
//! slowloris cannot hold the server), a client write timeout (a client that
//! takes no bytes is dropped), a connection limit (503 past it) and graceful
//! shutdown. Puts `ConnInfo` (peer, local and original destination) in each
//! request's extensions.

use crate::proxy::respond;
use crate::proxy::target::ConnInfo;
use crate::proxy::Proxy;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connection-level limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Time to receive a request head (and idle keep-alive limit).
    pub header_timeout: Duration,
    /// A pending write to the client for this long drops the connection.
    pub client_timeout: Duration,
    /// Simultaneous connections; more are answered 503 and closed.
    pub max_connections: usize,
}

/// What every connection of the proxy's listeners shares.
#[derive(Clone)]
pub struct Serving {
    /// The request handler.
    pub proxy: Proxy,
    /// Per-connection limits.
    pub limits: Limits,
    /// Connection slots, shared by every listener.
    pub slots: Arc<Semaphore>,
    /// Where connection tasks go.
    pub tasks: TaskTracker,
    /// Stops accepting; open connections finish.
    pub stop: CancellationToken,
    /// Closes what is left.
    pub hard_stop: CancellationToken,
}

/// Serves `listener` until `stop` fires, admitting connections while
/// `slots` has permits, over TLS when `tls` is given; then waits for open
/// connections to finish; `hard_stop` closes whatever is left.
pub async fn serve(listener: TcpListener, ctx: Serving, tls: Option<TlsAcceptor>) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = ctx.stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = ctx.slots.clone().try_acquire_owned() else {
            tracing::warn!(peer = %peer, "connection limit reached; answering 503");
            ctx.tasks.spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let info = conn_info(&stream, peer);
        let mut io = TimeoutStream::new(stream);
        io.set_write_timeout(Some(ctx.limits.client_timeout));
        let io = Box::pin(io);
        let watcher = graceful.watcher();
        let (proxy, limits, hard_stop) = (ctx.proxy.clone(), ctx.limits, ctx.hard_stop.clone());
        let tls = tls.clone();
        ctx.tasks.spawn(async move {
            match tls {
                None => drive(TokioIo::new(io), proxy, info, limits, watcher, hard_stop).await,
                // The handshake counts against the header timeout, so a
                // client that opens a connection and says nothing is dropped.
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(io)).await {
                        Ok(Ok(stream)) => {
                            drive(
                                TokioIo::new(stream),
                                proxy,
                                info,
                                limits,
                                watcher,
                                hard_stop,
                            )
                            .await
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(peer = %peer, error = %err, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Serves HTTP/1.1 on one connection until it ends or `hard_stop` fires.
async fn drive<I>(
    io: I,
    proxy: Proxy,
    info: ConnInfo,
    limits: Limits,
    watcher: Watcher,
    hard_stop: CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let peer = info.peer;
    let service = service_fn(move |mut req| {
        req.extensions_mut().insert(info);
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(proxy.handle(req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .serve_connection(io, service);
    let conn = watcher.watch(conn);
    tokio::select! {
        result = conn => if let Err(err) = result {
            // hyper answers these itself (400, 431, or a closed
            // connection); the handler never sees them.
            if err.is_parse() || err.is_parse_too_large() || err.is_timeout() {
                tracing::warn!(peer = %peer, error = %err, "bad or slow request refused");
            } else {
                tracing::debug!(peer = %peer, error = %err, "connection ended with an error");
            }
        },
        _ = hard_stop.cancelled() => {}
    }
}

async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(respond::TOO_MANY_CONNECTIONS).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

fn conn_info(stream: &TcpStream, peer: SocketAddr) -> ConnInfo {
    let local = stream.local_addr().unwrap_or(peer);
    let sock = socket2::SockRef::from(stream);
    // ENOENT when no DNAT rule applied: then there is no original destination.
    let orig = if local.is_ipv4() {
        sock.original_dst_v4()
    } else {
        sock.original_dst_v6()
    };
    let orig_dst = orig.ok().and_then(|addr| addr.as_socket());
    ConnInfo {
        peer,
        local,
        orig_dst,
    }
}

/// Limits of a small side listener (admin, build API).
#[derive(Clone, Copy, Debug)]
pub struct SmallLimits {
    /// For log lines: which listener.
    pub what: &'static str,
    /// Connections served at once; more are closed at accept, so a stuck
    /// client cannot hold tasks.
    pub max_connections: usize,
    /// Time to send a request head, and to take each write of the answer.
    pub io_timeout: Duration,
}

/// Serves a side listener with `handle` until `stop` fires, then lets open
/// connections finish; `hard_stop` ends whatever is left. Connection tasks go
/// on `tasks`. Unlike the proxy port there is no 503 page: these listeners
/// face operators and scrapers, not fleets.
pub async fn serve_small<H, F, B>(
    listener: TcpListener,
    limits: SmallLimits,
    handle: H,
    tasks: TaskTracker,
    stop: CancellationToken,
    hard_stop: CancellationToken,
) where
    H: Fn(hyper::Request<hyper::body::Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = hyper::Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let what = limits.what;
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = what, error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(listener = what, peer = %peer, "connection limit reached; closing");
            continue;
        };
        let mut io = TimeoutStream::new(stream);
        io.set_write_timeout(Some(limits.io_timeout));
        let handle = handle.clone();
        let service = service_fn(move |req| {
            let answer = handle(req, peer);
            async move { Ok::<_, Infallible>(answer.await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.io_timeout)
            .serve_connection(TokioIo::new(Box::pin(io)), service);
        let conn = graceful.watch(conn);
        let hard_stop = hard_stop.clone();
        tasks.spawn(async move {
            tokio::select! {
                result = conn => if let Err(err) = result {
                    tracing::debug!(listener = what, peer = %peer, error = %err, "connection ended with an error");
                },
                _ = hard_stop.cancelled() => {}
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
