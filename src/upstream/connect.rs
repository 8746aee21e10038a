//! How the upstream client reaches a host: a `--resolve HOST:PORT:ADDR` rule
//! for exactly that host and port, else DNS.
//!
//! It owns TCP connection set-up only; TLS is layered on top by
//! hyper-rustls, which still verifies the name from the URL.

use http::Uri;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `--resolve` rules: (lower-case host, port) → address.
pub type Overrides = HashMap<(String, u16), IpAddr>;

/// The TCP connector under TLS: `--resolve` rules by host and port, then DNS.
#[derive(Clone)]
pub struct Connector {
    http: HttpConnector<Resolver>,
    overrides: Arc<Overrides>,
}

impl Connector {
    /// Connects with `http`, applying `overrides`.
    pub fn new(http: HttpConnector<Resolver>, overrides: Arc<Overrides>) -> Connector {
        Connector { http, overrides }
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
        let mut http = self.http.clone();
        Box::pin(async move { Ok(tower_service::Service::call(&mut http, target).await?) })
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

/// DNS through the system resolver (`--resolve` rules are the connector's:
/// a resolver never learns the port).
#[derive(Clone, Debug, Default)]
pub struct Resolver;

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let host = name.as_str().to_ascii_lowercase();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(addrs.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_point_the_uri_at_the_address() {
        let uri: Uri = "https://mirror.example/x".parse().unwrap();
        let at = at_address(&uri, "::1".parse().unwrap(), 8443).unwrap();
        assert_eq!(at.to_string(), "https://[::1]:8443/");
    }
}
