//! How the upstream client reaches a host: a `--resolve HOST:PORT:ADDR` rule
//! for exactly that host and port, else DNS; and, on the client that follows
//! redirects to another origin, a guard on the address actually connected
//! to, so that an upstream cannot send the cache to a loopback, private or
//! link-local address by naming it (or a name that resolves to it).
//!
//! It owns TCP connection set-up only; TLS is layered on top by
//! hyper-rustls, which still verifies the name from the URL.

use crate::config::AllowedHost;
use http::Uri;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection refused because the host resolved to a special address that
/// the operator did not allow.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{host}:{port} is at {addr}, a {class} address (allow it with --allow-redirect-host)")]
pub struct Refused {
    /// The host as the URL named it.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The address it resolved to.
    pub addr: IpAddr,
    /// What kind of address that is.
    pub class: &'static str,
}

/// The hosts that may be reached at special addresses (`--allow-redirect-host`).
#[derive(Debug, Default)]
pub struct Guard {
    allowed: Vec<AllowedHost>,
}

impl Guard {
    /// A guard that lets `allowed` through.
    pub fn new(allowed: Vec<AllowedHost>) -> Guard {
        Guard { allowed }
    }

    fn allows(&self, host: &str, port: u16) -> bool {
        self.allowed.iter().any(|a| a.matches(host, port))
    }

    fn allows_host(&self, host: &str) -> bool {
        self.allowed
            .iter()
            .any(|a| a.host.eq_ignore_ascii_case(host))
    }
}

/// `--resolve` rules: (lower-case host, port) → address.
pub type Overrides = HashMap<(String, u16), IpAddr>;

/// The TCP connector under TLS: `--resolve` rules by host and port, then DNS,
/// then (with a guard) the check of the connected address.
#[derive(Clone)]
pub struct Connector {
    http: HttpConnector<Resolver>,
    overrides: Arc<Overrides>,
    guard: Option<Arc<Guard>>,
}

impl Connector {
    /// Connects with `http` (whose resolver must be this module's), applying
    /// `overrides`; with `guard`, refuses special addresses it does not allow.
    pub fn new(
        http: HttpConnector<Resolver>,
        overrides: Arc<Overrides>,
        guard: Option<Arc<Guard>>,
    ) -> Connector {
        Connector {
            http,
            overrides,
            guard,
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower_service::Service::<Uri>::poll_ready(&mut self.http, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let host = uri.host().unwrap_or("").to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        });
        // The rule names host and port, as curl's --resolve does: the
        // address replaces the host for that port only.
        let target = match self.overrides.get(&(host.clone(), port)) {
            Some(ip) => at_address(&uri, *ip, port).unwrap_or(uri),
            None => uri,
        };
        let checked = self.guard.as_ref().is_some_and(|g| !g.allows(&host, port));
        let mut http = self.http.clone();
        Box::pin(async move {
            let io = tower_service::Service::call(&mut http, target).await?;
            if checked {
                let addr = io.inner().peer_addr()?.ip();
                if let Some(class) = special(addr) {
                    return Err(Box::new(Refused {
                        host,
                        port,
                        addr,
                        class,
                    }) as BoxError);
                }
            }
            Ok(io)
        })
    }
}

/// `uri` pointed at `ip:port` (only scheme, host and port matter to the connector).
fn at_address(uri: &Uri, ip: IpAddr, port: u16) -> Option<Uri> {
    let authority = SocketAddr::new(ip, port).to_string();
    Uri::builder()
        .scheme(uri.scheme_str()?)
        .authority(authority)
        .path_and_query("/")
        .build()
        .ok()
}

/// DNS through the system resolver. With a guard, a name that also has
/// ordinary addresses connects only to those; a name with special addresses
/// alone is left to the connector's check, which refuses it by name.
#[derive(Clone, Debug, Default)]
pub struct Resolver {
    guard: Option<Arc<Guard>>,
}

impl Resolver {
    /// A resolver; `guard` as the connector's.
    pub fn new(guard: Option<Arc<Guard>>) -> Resolver {
        Resolver { guard }
    }
}

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let host = name.as_str().to_ascii_lowercase();
        let filter = self.guard.as_ref().is_some_and(|g| !g.allows_host(&host));
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ordinary: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| special(a.ip()).is_none())
                .collect();
            if filter && !ordinary.is_empty() {
                return Ok(ordinary.into_iter());
            }
            Ok(addrs.into_iter())
        })
    }
}

/// What kind of special address `ip` is, if it is one: anything that is not
/// an ordinary public unicast address (RFC 6890's special-purpose registries).
pub fn special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_private() {
        "private"
    } else if ip.is_link_local() {
        "link-local"
    } else if ip.is_unspecified() || a == 0 {
        "unspecified"
    } else if ip.is_broadcast() {
        "broadcast"
    } else if ip.is_multicast() {
        "multicast"
    } else if a == 100 && (b & 0xc0) == 64 {
        // 100.64.0.0/10, carrier-grade NAT (RFC 6598).
        "shared"
    } else if ip.is_documentation() || (a == 198 && (b & 0xfe) == 18) {
        // Documentation ranges and 198.18.0.0/15 (benchmarking, RFC 2544).
        "documentation or benchmarking"
    } else if a >= 240 || (a == 192 && b == 0 && c == 0) {
        // 240.0.0.0/4 and 192.0.0.0/24 (IETF protocol assignments).
        "reserved"
    } else {
        return None;
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    // An IPv4 address in IPv6 clothing is what it wraps: the mapped form
    // (::ffff:a.b.c.d) and the NAT64 prefix (64:ff9b::/96).
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_v4(v4);
    }
    let seg = ip.segments();
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = seg[6].to_be_bytes();
        let [c, d] = seg[7].to_be_bytes();
        return special_v4(Ipv4Addr::new(a, b, c, d));
    }
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if ip.is_unique_local() {
        "unique local"
    } else if ip.is_unicast_link_local() || (seg[0] & 0xffc0) == 0xfec0 {
        // fe80::/10, and the deprecated site-local fec0::/10.
        "link-local"
    } else if ip.is_multicast() {
        "multicast"
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        "documentation or benchmarking"
    } else if seg[..4] == [0x100, 0, 0, 0] || seg[..6] == [0; 6] {
        // 100::/64 (discard) and the deprecated IPv4-compatible ::/96.
        "reserved"
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(ip: &str) -> Option<&'static str> {
        special(ip.parse().unwrap())
    }

    #[test]
    fn special_addresses_are_told_from_public_ones() {
        for (ip, want) in [
            ("127.0.0.1", "loopback"),
            ("127.9.9.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.31.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("100.64.0.1", "shared"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "unique local"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("ff02::1", "multicast"),
        ] {
            assert_eq!(class(ip), Some(want), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn overrides_point_the_uri_at_the_address() {
        let uri: Uri = "https://mirror.example/x".parse().unwrap();
        let at = at_address(&uri, "::1".parse().unwrap(), 8443).unwrap();
        assert_eq!(at.to_string(), "https://[::1]:8443/");
    }
}
