//! The listeners' settings: where the proxy, admin and TLS listeners bind,
//! and the public URL clients reach the proxy at. Each value is validated
//! when it is made (`try_listen`, `PublicUrl::try_new`), so `app` only binds.

use super::Error;
use std::path::PathBuf;
use std::time::Duration;

/// Where a listener binds: a host (name or address, resolved at start) and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenAddr {
    /// Host name or IP address, IPv6 without brackets.
    pub host: String,
    /// Port (0 picks one).
    pub port: u16,
}

impl ListenAddr {
    /// `127.0.0.1:0` (tests).
    pub fn loopback_any_port() -> ListenAddr {
        ListenAddr {
            host: "127.0.0.1".into(),
            port: 0,
        }
    }

    /// Parses `--admin`: `HOST:PORT` (`[V6]:PORT` for IPv6) or `off` (`None`).
    pub fn try_admin(raw: &str) -> Result<Option<ListenAddr>, Error> {
        ListenAddr::try_listen("--admin", raw)
    }

    /// Parses a listener option: `HOST:PORT` (`[V6]:PORT` for IPv6) or `off` (`None`).
    pub fn try_listen(option: &'static str, raw: &str) -> Result<Option<ListenAddr>, Error> {
        if raw.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let bad = || Error::Listen(option, raw.to_string());
        let (host, port) = raw.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.strip_suffix(']').ok_or_else(bad)?,
            // An unbracketed IPv6 address is ambiguous: its last group
            // would be read as the port.
            None if host.contains(':') => return Err(bad()),
            None => host,
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Some(ListenAddr {
            host: host.to_string(),
            port,
        }))
    }
}

/// Client-facing server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Host to bind (resolved at start).
    pub host: String,
    /// Port to bind (0 picks one).
    pub port: u16,
    /// Time allowed for a request head; also closes idle keep-alive connections.
    pub header_timeout: Duration,
    /// A client that takes no bytes for this long is dropped.
    pub client_timeout: Duration,
    /// Connections beyond this get 503.
    pub max_connections: usize,
    /// How long shutdown waits for transfers in flight.
    pub shutdown_grace: Duration,
    /// Become this user (and group) once the listeners are bound.
    pub run_as: Option<(String, Option<String>)>,
    /// The optional HTTPS listener.
    pub tls: Option<TlsListener>,
    /// The admin listener (`/metrics`, `/healthz`, status page); `None`: off.
    pub admin: Option<ListenAddr>,
    /// The URL clients reach the proxy at (`--public-url`); `None`: the
    /// listening address, filled in by `app` once it is bound.
    pub public_url: Option<PublicUrl>,
}

/// The absolute URL clients reach the proxy at: `http` or `https`, a host,
/// an optional port and path prefix; no query, fragment or credentials; kept
/// without a trailing `/`, so that `{url}/NAME/...` names a path on a mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicUrl(String);

impl PublicUrl {
    /// Validates `raw` (`--public-url`).
    pub fn try_new(raw: &str) -> Result<PublicUrl, Error> {
        let bad = |reason: &str| Error::PublicUrl {
            value: raw.to_string(),
            reason: reason.to_string(),
        };
        let url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("not an http or https URL"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("credentials do not belong in it"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a query or fragment does not belong in it"));
        }
        Ok(PublicUrl(url.as_str().trim_end_matches('/').to_string()))
    }

    /// `http://` and the listening address, as a default for clients on
    /// this host or that reach it by that address.
    pub fn of_listener(addr: std::net::SocketAddr) -> PublicUrl {
        PublicUrl(format!("http://{addr}"))
    }

    /// The URL, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The HTTPS listener: a port on the same host, and its certificate files.
#[derive(Clone, Debug)]
pub struct TlsListener {
    /// Port (0 picks one).
    pub port: u16,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_are_absolute_http_without_a_trailing_slash() {
        for (raw, kept) in [
            ("http://cachehost:4000/", "http://cachehost:4000"),
            ("https://cache.example/pkg/", "https://cache.example/pkg"),
            ("http://[::1]:4000", "http://[::1]:4000"),
        ] {
            assert_eq!(PublicUrl::try_new(raw).unwrap().as_str(), kept, "{raw}");
        }
        for bad in [
            "cachehost:4000",
            "ftp://cache.example/",
            "http://user:pw@cache.example/",
            "http://cache.example/?a=1",
            "http://cache.example/#x",
            "/relative",
        ] {
            assert!(
                matches!(PublicUrl::try_new(bad), Err(Error::PublicUrl { .. })),
                "{bad}"
            );
        }
        let addr: std::net::SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(
            PublicUrl::of_listener(addr).as_str(),
            "http://127.0.0.1:4000"
        );
    }

    #[test]
    fn admin_addresses_parse() {
        let at = |host: &str, port| {
            Some(ListenAddr {
                host: host.into(),
                port,
            })
        };
        assert_eq!(
            ListenAddr::try_admin("localhost:4001").unwrap(),
            at("localhost", 4001)
        );
        assert_eq!(ListenAddr::try_admin("[::1]:0").unwrap(), at("::1", 0));
        assert_eq!(ListenAddr::try_admin("off").unwrap(), None);
        for bad in ["4001", "::1:4001", "host:", ":4001", "h:99999", "[::1:80"] {
            assert!(ListenAddr::try_admin(bad).is_err(), "{bad}");
        }
    }
}
