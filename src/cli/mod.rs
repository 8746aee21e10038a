//! `Args`: the command line as the user typed it, before validation.
//!
//! A drop-in for the Python package-cache 0.2 (`--source`, `--cache`, `--host`,
//! `--port`, `-v`, `--syslog`), plus what a deployment needs; every option
//! also reads an environment variable so init scripts can pass settings.
//! Without a subcommand it runs the server (0.2's command line); the
//! maintenance subcommands (`stats`, `verify`, `gc`, `purge`) work on a cache
//! directory, live or not, and exit.

mod build_queue;
mod command;
mod supply;

pub use build_queue::BuildArgs;
pub use command::{ApiArgs, BuildCmd, CacheArg, Command, InboxCmd, SharedArg};
pub use supply::SupplyArgs;

use clap::{ArgAction, Parser, ValueEnum};
use std::path::PathBuf;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// package-cache: a streaming caching proxy for package downloads.
#[derive(Debug, Parser)]
#[command(name = "package-cache", version, about, long_about = None)]
pub struct Args {
    /// A maintenance command; without one, the server runs.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Upstream mirror URL (http:// or https://); repeat to add fallbacks, tried in order.
    #[arg(
        long = "source",
        value_name = "URL",
        env = "PC_SOURCES",
        value_delimiter = ' '
    )]
    pub sources: Vec<String>,

    /// Cache directory [default: /var/cache/package-cache as root, else ~/.cache/package-cache].
    #[arg(long, value_name = "DIR", env = "PC_CACHE_DIR")]
    pub cache: Option<PathBuf>,

    /// Address to listen on (a name, an IPv4 or an IPv6 address).
    #[arg(long, default_value = "localhost", env = "PC_HOST")]
    pub host: String,

    /// Port to listen on.
    #[arg(long, default_value_t = 4000, env = "PC_PORT")]
    pub port: u16,

    /// The URL clients reach this proxy at (http://cachehost:4000), written into the index
    /// documents that need an absolute link: npm's dist.tarball, Cargo's config.json dl.
    /// Default: http:// and the listening address.
    #[arg(long, value_name = "URL", env = "PC_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// More logging: -v for debug, -vv for trace (the default, info, logs one line per request).
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,

    /// Log to the local syslog (/dev/log, facility daemon) instead of stderr.
    #[arg(long)]
    pub syslog: bool,

    /// The syslog socket (for tests and unusual systems).
    #[arg(long, value_name = "PATH", default_value = "/dev/log", hide = true)]
    pub syslog_socket: PathBuf,

    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text", env = "PC_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Also fetch for this host (HOST or HOST:PORT) when a request names it in
    /// absolute form, in its Host header, or arrives DNATed; repeatable.
    #[arg(long = "transparent-host", value_name = "HOST")]
    pub transparent_hosts: Vec<String>,

    /// Connect to ADDR for HOST:PORT instead of resolving HOST (as curl's --resolve).
    #[arg(long = "resolve", value_name = "HOST:PORT:ADDR")]
    pub resolve: Vec<String>,

    /// A host (HOST or HOST:PORT) an upstream's redirect may lead to although it
    /// resolves to a loopback, private, link-local or other special address; repeatable.
    #[arg(
        long = "allow-redirect-host",
        value_name = "HOST",
        env = "PC_ALLOW_REDIRECT_HOSTS",
        value_delimiter = ' '
    )]
    pub allow_redirect_hosts: Vec<String>,

    /// Extra PEM file of CA certificates trusted for https:// sources.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Upstream connect timeout, seconds.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub connect_timeout: u64,

    /// Upstream idle timeout, seconds: no response header or body byte for this long fails the fetch.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub upstream_timeout: u64,

    /// Client idle timeout, seconds: a client that takes no bytes for this long is dropped.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub client_timeout: u64,

    /// Seconds a client may take to send request headers (also the keep-alive idle limit).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub header_timeout: u64,

    /// Maximum downloads into the cache at once; further misses are passed through uncached.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_fills: usize,

    /// Maximum simultaneous client connections; more get 503.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_connections: usize,

    /// A named upstream mounted under /NAME/ (NAME=URL); repeat a NAME to add failover sources.
    /// The names pypi, rubygems, gentoo, npm, cargo (or crates) and go pick their profile.
    /// user:password@ in the URL is sent to that source's origin as credentials (and kept
    /// out of logs and the cache).
    #[arg(long = "mirror", value_name = "NAME=URL")]
    pub mirrors: Vec<String>,

    /// The profile of a mount (NAME=pypi|rubygems|gentoo|generic|npm|cargo|go), when its name
    /// does not say.
    #[arg(long = "profile", value_name = "NAME=PROFILE")]
    pub profiles: Vec<String>,

    /// A host that a mount's index documents link files to (NAME=URL): PyPI pages' files,
    /// npm tarballs, a Cargo registry's dl; those links are rewritten to go through the
    /// cache. Repeatable.
    #[arg(long = "files-host", value_name = "NAME=URL")]
    pub files_hosts: Vec<String>,

    /// Where a pypi mount's simple index is on its upstream (NAME=PATH), relative to the
    /// --mirror URL: +simple for devpi (http://host/root/pypi/ and PATH +simple). A
    /// --mirror URL that ends in /simple/ or /+simple/ says it by itself. Default: simple.
    #[arg(long = "index-path", value_name = "NAME=PATH")]
    pub index_paths: Vec<String>,

    /// Credentials for a mount's upstream (NAME=FILE): FILE holds a bearer token, or
    /// user:password (sent as Basic), on one line; read at start and on SIGHUP, sent to
    /// that mount's source origins only.
    #[arg(long = "mirror-auth", value_name = "NAME=FILE")]
    pub mirror_auth: Vec<String>,

    /// A go.sum (or several concatenated) for a go mount (NAME=FILE): the mount's module zips
    /// and go.mods are checked against its h1: lines before they are kept (for private
    /// modules the checksum database does not know); read at start and on SIGHUP.
    /// Repeatable.
    #[arg(
        long = "go-sum",
        value_name = "NAME=FILE",
        env = "PC_GO_SUM",
        value_delimiter = ' '
    )]
    pub go_sums: Vec<String>,

    /// Seconds an index document (simple page, /versions, /info/*, specs, layout.conf)
    /// is served before it is revalidated upstream.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub index_ttl: u64,

    /// Seconds a 404 from every upstream is remembered (0: not at all).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub negative_ttl: u64,

    /// Request paths matching this glob (e.g. '/pypi/simple/private-*') are passed
    /// through uncached. Repeatable.
    #[arg(long = "no-cache", value_name = "GLOB")]
    pub no_cache: Vec<String>,

    /// Most bytes of cached files (K, M, G, T suffixes: powers of 1024); least recently
    /// used files are evicted past it. Unlimited when not given.
    #[arg(long, value_name = "SIZE", env = "PC_MAX_SIZE")]
    pub max_size: Option<String>,

    /// Bytes per second the background scrub re-reads cached files at, checking
    /// them against the checksums recorded when they were stored (K, M, G
    /// suffixes); damaged files are quarantined and fetched again. 0 turns it off.
    #[arg(long, value_name = "SIZE", env = "PC_SCRUB_RATE", default_value = "4M")]
    pub scrub_rate: String,

    /// Cached files whose path matches this glob are never evicted. Repeatable.
    #[arg(long = "pin", value_name = "GLOB")]
    pub pins: Vec<String>,

    /// Also serve HTTPS on this port (same --host), with --tls-cert and --tls-key;
    /// SIGHUP reloads the certificate.
    #[arg(long, value_name = "PORT", requires_all = ["tls_cert", "tls_key"])]
    pub tls_port: Option<u16>,

    /// PEM certificate chain for the TLS listener.
    #[arg(long, value_name = "FILE", requires = "tls_port")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for the TLS listener.
    #[arg(long, value_name = "FILE", requires = "tls_port")]
    pub tls_key: Option<PathBuf>,

    /// Once listening, run as this user (start as root to bind port 80).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// With --user: run with this group instead of the user's own.
    #[arg(long, value_name = "NAME", requires = "user")]
    pub group: Option<String>,

    /// Admin listener for /metrics, /healthz and the status page (HOST:PORT, or off).
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = "localhost:4001",
        env = "PC_ADMIN"
    )]
    pub admin: String,

    /// Seconds to let transfers finish on SIGTERM/SIGINT before exiting.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub shutdown_grace: u64,

    /// The object store shared by a fleet's nodes (s3://BUCKET[/PREFIX]); endpoint and
    /// credentials come from the standard AWS_* environment variables.
    #[arg(long, value_name = "URL", env = "PC_SHARED_STORE")]
    pub shared_store: Option<String>,

    /// A setting of the shared store (KEY=VALUE): one of object_store's S3 options
    /// (endpoint, region, allow_http, …) or timeout, connect_timeout, idle_timeout,
    /// breaker_failures, breaker_cooldown, part_size, stale_uploads, node. Repeatable.
    #[arg(
        long = "shared-store-opt",
        value_name = "KEY=VALUE",
        requires = "shared_store"
    )]
    pub shared_store_opts: Vec<String>,

    /// The build queue's settings.
    #[command(flatten)]
    pub build: BuildArgs,

    /// The supply-chain policy (minimum release age, deny lists).
    #[command(flatten)]
    pub supply: SupplyArgs,
}
