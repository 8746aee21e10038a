//! Binding the listeners: every address a host resolves to, with the socket
//! options a proxy needs. Done first in `start`, before root is dropped.

use anyhow::Context;
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpSocket};

/// Binds every address `host` resolves to (`localhost` is often both
/// 127.0.0.1 and ::1); with port 0 only the first, as each would get its own
/// port. An address this machine does not have is skipped; any other failure
/// (the port taken) stops the start, so clients never reach someone else.
pub(super) async fn bind(host: &str, port: u16) -> anyhow::Result<Vec<TcpListener>> {
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .collect();
    addrs.dedup();
    if port == 0 {
        addrs.truncate(1);
    }
    let mut listeners = Vec::new();
    for addr in &addrs {
        match listen(*addr) {
            Ok(listener) => listeners.push(listener),
            Err(err) if matches!(err.raw_os_error(), Some(code) if code == rustix::io::Errno::ADDRNOTAVAIL.raw_os_error() || code == rustix::io::Errno::AFNOSUPPORT.raw_os_error()) =>
            {
                tracing::warn!(addr = %addr, error = %err, "skipping an address this machine does not have");
            }
            Err(err) => return Err(anyhow::Error::new(err).context(format!("binding {addr}"))),
        }
    }
    if listeners.is_empty() {
        anyhow::bail!("{host} resolves to no address this machine can listen on");
    }
    Ok(listeners)
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if addr.is_ipv6() {
        // `::` must not also claim IPv4, which may be bound separately.
        socket2::SockRef::from(&socket).set_only_v6(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}
