//! `Config`: the validated, typed settings the app runs with.
//!
//! Built from `cli::Args` with `TryFrom` (every user error is reported here,
//! before anything starts) or with `Config::for_test` in tests.

mod build;
mod credential;
mod go_sum;
mod mounts;
mod shared;
mod source;
pub mod supply;
mod upstream;

use crate::cli::Args;
pub use build::{valid_field, BuildConfig};
pub use credential::Credential;
pub use go_sum::{GoSumFile, Loaded as GoSumLoaded, MAX_GO_SUM};
use mounts::mounts_from;
pub use mounts::{Mount, Profile};
pub use shared::SharedStoreConfig;
pub use source::{Authority, SourceUrl};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
pub use supply::{Exemption, MissingDate, SupplyConfig};
pub use upstream::{redact_userinfo, AllowedHost};

/// A configuration error, reported before start-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `--source` URL is not an absolute http(s) URL.
    #[error("invalid source URL {url:?}: {reason}")]
    Source {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A host name in an option is not valid.
    #[error("invalid host {0:?}")]
    Host(String),
    /// A `--resolve` entry is not `HOST:PORT:ADDR`.
    #[error("invalid --resolve {0:?}: expected HOST:PORT:ADDR")]
    Resolve(String),
    /// No cache directory was given and no default could be derived.
    #[error("no cache directory: pass --cache DIR")]
    NoCacheDir,
    /// Nothing to fetch from: no `--source`, `--mirror` or `--transparent-host`,
    /// so every request would be a 404.
    #[error(
        "no upstream to cache from: add --source URL (a mirror, repeatable, e.g. \
         --source http://mirror.example/gentoo) or --mirror NAME=URL (e.g. \
         --mirror pypi=https://pypi.example); see --help"
    )]
    NoUpstream,
    /// A `--mirror`, `--profile`, `--files-host`, `--mirror-auth`, `--index-path` or
    /// `--go-sum` entry is malformed.
    #[error("invalid {option} {value:?}: {reason}")]
    Mount {
        /// The option.
        option: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A size is not a number with an optional K/M/G/T suffix.
    #[error("invalid size {0:?}: expected a number of bytes with an optional K, M, G or T suffix")]
    Size(String),
    /// `--public-url` is not an absolute http(s) URL of its own.
    #[error("invalid --public-url {value:?}: {reason}")]
    PublicUrl {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A listener option is neither `HOST:PORT` nor `off`.
    #[error("invalid {0} {1:?}: expected HOST:PORT or off")]
    Listen(&'static str, String),
    /// A build option is malformed.
    #[error("invalid {option} {value:?}: {reason}")]
    Build {
        /// The option.
        option: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `--no-cache` or `--pin` pattern is not a valid glob.
    #[error("invalid pattern {pattern:?}: {reason}")]
    Pattern {
        /// The pattern given.
        pattern: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A supply-chain policy option is malformed.
    #[error("invalid {option} {value:?}: {reason}")]
    Supply {
        /// The option.
        option: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `--shared-store` or a `--shared-store-opt` is malformed.
    #[error("invalid shared store setting {value:?}: {reason}")]
    SharedStore {
        /// The URL or option given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// How long answers are trusted and what is never cached.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Index documents are revalidated after this.
    pub index_ttl: Duration,
    /// A 404 from every upstream is remembered this long (zero: never).
    pub negative_ttl: Duration,
    /// Request paths matching any of these globs are passed uncached.
    pub no_cache: Vec<String>,
    /// Most bytes of committed entries (`--max-size`); `None`: unlimited.
    pub max_size: Option<u64>,
    /// Entries matching these globs are never evicted.
    pub pinned: Vec<String>,
    /// Bytes per second the background scrub re-checks (`--scrub-rate`); 0: off.
    pub scrub_rate: u64,
}

/// Where and how to reach upstreams.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// The `--source` mirrors, in failover order.
    pub sources: Vec<SourceUrl>,
    /// Hosts that may be fetched by name besides the sources' hosts.
    pub transparent_hosts: Vec<Authority>,
    /// `--resolve` overrides: (host, port) → address.
    pub resolve: Vec<((String, u16), SocketAddr)>,
    /// Hosts a redirect may lead to although they resolve to a loopback,
    /// private, link-local or other special address (`--allow-redirect-host`).
    pub allow_redirect_hosts: Vec<AllowedHost>,
    /// Extra trusted CA certificates (PEM).
    pub ca_file: Option<PathBuf>,
    /// TCP (and TLS) connect timeout.
    pub connect_timeout: Duration,
    /// No header or body byte for this long fails a fetch.
    pub idle_timeout: Duration,
    /// Redirects followed per source.
    pub max_redirects: usize,
    /// Downloads into the cache at once (each outlives its client).
    pub max_fills: usize,
}

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

/// Everything the app needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// The cache directory.
    pub cache_dir: PathBuf,
    /// Upstream settings.
    pub upstream: UpstreamConfig,
    /// Listener settings.
    pub server: ServerConfig,
    /// Named upstreams mounted under `/NAME/`.
    pub mounts: Vec<Mount>,
    /// Freshness and no-cache rules.
    pub policy: Policy,
    /// The build queue.
    pub build: BuildConfig,
    /// The shared object-store tier (`--shared-store`); `None`: this node's disk only.
    pub shared_store: Option<SharedStoreConfig>,
    /// The supply-chain policy (minimum release age, deny lists); off by default.
    pub supply: SupplyConfig,
}

impl Config {
    /// A config for tests: loopback, port 0, `root` as cache, short timeouts.
    pub fn for_test(root: impl Into<PathBuf>) -> Config {
        Config {
            cache_dir: root.into(),
            upstream: UpstreamConfig {
                sources: Vec::new(),
                transparent_hosts: Vec::new(),
                resolve: Vec::new(),
                allow_redirect_hosts: Vec::new(),
                ca_file: None,
                connect_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(2),
                max_redirects: 5,
                max_fills: 64,
            },
            server: ServerConfig {
                host: "127.0.0.1".into(),
                port: 0,
                header_timeout: Duration::from_secs(5),
                client_timeout: Duration::from_secs(5),
                max_connections: 256,
                shutdown_grace: Duration::from_secs(2),
                run_as: None,
                tls: None,
                admin: None,
                public_url: None,
            },
            mounts: Vec::new(),
            policy: Policy {
                index_ttl: Duration::from_secs(300),
                negative_ttl: Duration::ZERO,
                no_cache: Vec::new(),
                max_size: None,
                pinned: Vec::new(),
                // Tests that scrub ask for it; the others' reads stay their own.
                scrub_rate: 0,
            },
            build: BuildConfig::for_test(),
            shared_store: None,
            supply: SupplyConfig::default(),
        }
    }

    /// Mounts `url` under `/name/` with `profile` (tests); repeat to add failover sources.
    pub fn with_mount(mut self, name: &str, profile: Profile, url: &str) -> Result<Config, Error> {
        let source = SourceUrl::try_new(url)?;
        match self.mounts.iter_mut().find(|m| m.name == name) {
            Some(mount) => mount.sources.push(source),
            None => self.mounts.push(Mount {
                name: name.to_string(),
                profile,
                sources: vec![source],
                files_hosts: Vec::new(),
                index_path: None,
                go_sums: Vec::new(),
            }),
        }
        Ok(self)
    }

    /// Adds a source mirror (tests).
    pub fn with_source(mut self, url: &str) -> Result<Config, Error> {
        self.upstream.sources.push(SourceUrl::try_new(url)?);
        Ok(self)
    }
}

/// The default cache directory: persistent, never under /tmp
/// (`/var/cache/package-cache` as root, else under `$XDG_CACHE_HOME` or `~/.cache`).
pub fn default_cache_dir() -> Option<PathBuf> {
    if rustix::process::geteuid().is_root() {
        return Some(PathBuf::from("/var/cache/package-cache"));
    }
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(xdg).join("package-cache"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/package-cache"))
}

/// `10G`, `512M`, `64k`, `1000`: bytes, suffixes in powers of 1024.
pub fn parse_size(raw: &str) -> Result<u64, Error> {
    let bad = || Error::Size(raw.to_string());
    let trimmed = raw.trim();
    let (digits, shift) = match trimmed.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(bad()),
            };
            (&trimmed[..i], shift)
        }
        _ => (trimmed, 0),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_shl(shift)
        .filter(|v| v >> shift == n && *v > 0)
        .ok_or_else(bad)
}

fn parse_resolve(raw: &str) -> Result<((String, u16), SocketAddr), Error> {
    let bad = || Error::Resolve(raw.to_string());
    let (host, rest) = raw.split_once(':').ok_or_else(bad)?;
    let (port, addr) = rest.split_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
    Ok(((host.to_ascii_lowercase(), port), SocketAddr::new(ip, port)))
}

impl TryFrom<Args> for Config {
    type Error = Error;

    fn try_from(args: Args) -> Result<Config, Error> {
        let mounts = mounts_from(&args)?;
        let sources: Vec<SourceUrl> = args
            .sources
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| SourceUrl::try_new(s))
            .collect::<Result<_, _>>()?;
        let transparent_hosts: Vec<Authority> = args
            .transparent_hosts
            .iter()
            .map(|h| Authority::try_new(h, false))
            .collect::<Result<_, _>>()?;
        let resolve = args
            .resolve
            .iter()
            .map(|r| parse_resolve(r))
            .collect::<Result<_, _>>()?;
        let allow_redirect_hosts = args
            .allow_redirect_hosts
            .iter()
            .filter(|h| !h.is_empty())
            .map(|h| AllowedHost::try_new(h))
            .collect::<Result<_, _>>()?;
        let cache_dir = args
            .cache
            .or_else(default_cache_dir)
            .ok_or(Error::NoCacheDir)?;
        let max_size = args.max_size.as_deref().map(parse_size).transpose()?;
        let scrub_rate = match args.scrub_rate.trim() {
            "0" | "off" => 0,
            rate => parse_size(rate)?,
        };
        for pattern in args.no_cache.iter().chain(&args.pins) {
            globset::Glob::new(pattern).map_err(|e| Error::Pattern {
                pattern: pattern.clone(),
                reason: e.kind().to_string(),
            })?;
        }
        let admin = ListenAddr::try_admin(&args.admin)?;
        let build = BuildConfig::try_from_args(&args.build)?;
        let shared_store = args
            .shared_store
            .as_deref()
            .map(|url| SharedStoreConfig::try_from_args(url, &args.shared_store_opts))
            .transpose()?;
        let supply = SupplyConfig::try_from_args(&args.supply, &mounts)?;
        if sources.is_empty() && mounts.is_empty() && transparent_hosts.is_empty() {
            return Err(Error::NoUpstream);
        }
        let secs = Duration::from_secs;
        Ok(Config {
            build,
            shared_store,
            supply,
            mounts,
            policy: Policy {
                index_ttl: secs(args.index_ttl),
                negative_ttl: secs(args.negative_ttl),
                no_cache: args.no_cache.clone(),
                max_size,
                pinned: args.pins.clone(),
                scrub_rate,
            },
            cache_dir,
            upstream: UpstreamConfig {
                sources,
                transparent_hosts,
                resolve,
                allow_redirect_hosts,
                ca_file: args.ca_file,
                connect_timeout: secs(args.connect_timeout.max(1)),
                idle_timeout: secs(args.upstream_timeout.max(1)),
                max_redirects: 5,
                max_fills: args.max_fills.max(1),
            },
            server: ServerConfig {
                host: args
                    .host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                port: args.port,
                header_timeout: secs(args.header_timeout.max(1)),
                client_timeout: secs(args.client_timeout.max(1)),
                max_connections: args.max_connections.max(1),
                shutdown_grace: secs(args.shutdown_grace),
                run_as: args.user.clone().map(|u| (u, args.group.clone())),
                tls: match (args.tls_port, &args.tls_cert, &args.tls_key) {
                    (Some(port), Some(cert), Some(key)) => Some(TlsListener {
                        port,
                        cert: cert.clone(),
                        key: key.clone(),
                    }),
                    _ => None,
                },
                admin,
                public_url: args
                    .public_url
                    .as_deref()
                    .map(PublicUrl::try_new)
                    .transpose()?,
            },
        })
    }
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
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("2T").unwrap(), 2 << 40);
        for bad in ["", "G", "10X", "-1", "0", "1.5G", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
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

    #[test]
    fn resolve_entries_parse() {
        let ((h, p), a) = parse_resolve("Mirror:80:127.0.0.1").unwrap();
        assert_eq!(
            (h.as_str(), p, a),
            ("mirror", 80, "127.0.0.1:80".parse().unwrap())
        );
        assert!(parse_resolve("mirror:80").is_err());
        assert!(parse_resolve("mirror:x:1.2.3.4").is_err());
        assert!(parse_resolve("m:80:[::1]").is_ok());
    }
}
