//! `Config`: the validated, typed settings the app runs with.
//!
//! Built from `cli::Args` with `TryFrom` (every user error is reported here,
//! before anything starts) or with `Config::for_test` in tests.

mod build;
mod credential;
mod error;
mod from_args;
mod go_sum;
mod mounts;
mod server;
mod shared;
mod source;
pub mod supply;
mod upstream;

pub use build::{valid_field, BuildConfig};
pub use credential::Credential;
pub use error::Error;
pub use from_args::{default_cache_dir, parse_size};
pub use go_sum::{GoSumFile, Loaded as GoSumLoaded, MAX_GO_SUM};
pub use mounts::{Mount, Profile};
pub use server::{ListenAddr, PublicUrl, ServerConfig, TlsListener};
pub use shared::SharedStoreConfig;
pub use source::{Authority, SourceUrl};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
pub use supply::{Exemption, MissingDate, SupplyConfig};
pub use upstream::{redact_userinfo, AllowedHost};

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
