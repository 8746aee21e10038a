//! `Args`: the command line as the user typed it, before validation.
//!
//! A drop-in for the Python package-cache 0.2 (`--source`, `--cache`, `--host`,
//! `--port`, `-v`, `--syslog`), plus what a deployment needs; every option
//! also reads an environment variable so init scripts can pass settings.
//! Without a subcommand it runs the server (0.2's command line); the
//! maintenance subcommands (`stats`, `verify`, `gc`, `purge`) work on a cache
//! directory, live or not, and exit.

use clap::{ArgAction, Args as ClapArgs, Parser, Subcommand, ValueEnum};
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

/// Options of the supply-chain policy: which releases clients may see and fetch.
#[derive(Debug, Default, ClapArgs)]
pub struct SupplyArgs {
    /// Hide releases younger than this from index documents and refuse their files
    /// (7d, 36h, 90m): DURATION for every pypi, rubygems, npm, cargo and go mount, or
    /// MOUNT=DURATION for one (0 turns it off there). Repeatable.
    #[arg(long = "min-age", value_name = "[MOUNT=]DURATION")]
    pub min_age: Vec<String>,

    /// Hide releases published after DATE (2026-01-31 or an RFC 3339 time): for every
    /// mount, or MOUNT=DATE for one. Repeatable.
    #[arg(long = "min-age-before", value_name = "[MOUNT=]DATE")]
    pub min_age_before: Vec<String>,

    /// What a release without a publication date counts as: first-seen (the time this
    /// cache first saw it), deny, or allow.
    #[arg(
        long = "min-age-missing",
        value_name = "MODE",
        default_value = "first-seen"
    )]
    pub min_age_missing: String,

    /// A project (or one version: PROJECT@VERSION) the age rules do not hold back:
    /// MOUNT=PROJECT[@VERSION], or PROJECT[@VERSION] on every mount. Repeatable.
    #[arg(long = "min-age-exempt", value_name = "[MOUNT=]PROJECT[@VERSION]")]
    pub min_age_exempt: Vec<String>,

    /// A file of exemptions, one --min-age-exempt value a line (# comments); re-read
    /// when it changes and on SIGHUP. Repeatable.
    #[arg(long = "min-age-exempt-file", value_name = "FILE")]
    pub min_age_exempt_file: Vec<PathBuf>,

    /// Releases to refuse: a file or directory of OSV JSON records (such as the
    /// malicious-package advisories) and/or plain lists of `ECOSYSTEM NAME
    /// [VERSION|RANGE]` lines; re-read when it changes and on SIGHUP. Repeatable.
    #[arg(long = "deny-list", value_name = "PATH")]
    pub deny_list: Vec<PathBuf>,

    /// A file holding the time the policy takes for now (RFC 3339 or Unix seconds),
    /// re-read when it changes: for tests.
    #[arg(long = "policy-clock-file", value_name = "FILE", hide = true)]
    pub clock_file: Option<PathBuf>,
}

/// Options of the build queue and its API.
#[derive(Debug, ClapArgs)]
pub struct BuildArgs {
    /// A runtime builds can target (NAME=INTERPRETER, e.g. ruby31=/usr/bin/ruby,
    /// py311=/usr/bin/python3.11); repeatable. Without one, builds are off.
    #[arg(
        long = "runtime",
        value_name = "NAME=PATH",
        env = "PC_RUNTIMES",
        value_delimiter = ' '
    )]
    pub runtimes: Vec<String>,

    /// The build API listener (HOST:PORT, or off).
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = "localhost:4002",
        env = "PC_API"
    )]
    pub api: String,

    /// A file holding a token that writes to the API (submit, upload, cancel,
    /// load) must send as `Authorization: Bearer TOKEN`.
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,

    /// Builds running at once [default: number of cores].
    #[arg(long, value_name = "N")]
    pub build_concurrency: Option<usize>,

    /// Jobs waiting at most; more are refused with 503 and Retry-After.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub build_queue: usize,

    /// The uids builds run as (FIRST-LAST, one per concurrent build; gid = uid).
    #[arg(long, default_value = "61000-61063", value_name = "FIRST-LAST")]
    pub build_uids: String,

    /// Wall-clock limit of one build step, seconds.
    #[arg(long, default_value_t = 1800, value_name = "SECS")]
    pub build_timeout: u64,

    /// CPU-time limit of one build step, seconds.
    #[arg(long, default_value_t = 1800, value_name = "SECS")]
    pub build_cpu: u64,

    /// Address-space limit of each build process (K, M, G suffixes).
    #[arg(long, default_value = "4G", value_name = "SIZE")]
    pub build_memory: String,

    /// Largest file a build may write (K, M, G suffixes).
    #[arg(long, default_value = "1G", value_name = "SIZE")]
    pub build_file_size: String,

    /// Processes (and threads) of one build uid at most.
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub build_processes: u64,

    /// Largest source accepted (inbox, upload, or download), K/M/G suffixes.
    #[arg(long, default_value = "512M", value_name = "SIZE")]
    pub max_source: String,

    /// Bytes of inbox files one user may have waiting (K/M/G suffixes).
    #[arg(long, default_value = "1G", value_name = "SIZE")]
    pub inbox_quota: String,

    /// Inbox files (and unclaimed uploads) older than this many seconds are removed.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub inbox_stale: u64,

    /// Run builds without isolation (as the server's own user, limits and
    /// timeout only) when the sandbox cannot be set up. Only for trusted sources.
    #[arg(long)]
    pub insecure_builds: bool,
}

/// Maintenance commands: each works on a cache directory (also while a server
/// serves from it) and exits.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Count entries and bytes per namespace, documents, metadata and temporary files.
    Stats {
        /// Which cache.
        #[command(flatten)]
        cache: CacheArg,
        /// The shared store's bucket instead of the cache directory.
        #[command(flatten)]
        shared: SharedArg,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every entry with a recorded sha256; move mismatches (body and
    /// metadata) to .package-cache/quarantine/. Exits 1 if any mismatched.
    Verify {
        /// Which cache.
        #[command(flatten)]
        cache: CacheArg,
        /// The shared store's bucket instead (re-hash every referenced body;
        /// remove the references of damaged ones).
        #[command(flatten)]
        shared: SharedArg,
    },
    /// Remove metadata that belongs to no body, damaged documents, empty
    /// directories, and (when no server runs) leftover temporary files.
    Gc {
        /// Which cache.
        #[command(flatten)]
        cache: CacheArg,
        /// List what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Collect the shared store's bucket (--shared-store) instead: bodies no
        /// reference names, older than --grace.
        #[arg(long, requires = "shared_store")]
        shared: bool,
        /// The shared store.
        #[command(flatten)]
        store: SharedArg,
        /// With --shared: remove least recently used references until the
        /// referenced bodies fit in SIZE (500G, 2T).
        #[arg(long, value_name = "SIZE", requires = "shared")]
        max_size: Option<String>,
        /// With --shared: bodies younger than this are never removed (uploads
        /// not yet published).
        #[arg(
            long,
            value_name = "DURATION",
            default_value = "1h",
            requires = "shared"
        )]
        grace: String,
    },
    /// Remove the entries (and index documents) whose request path matches a
    /// glob: '/distfiles/foo-*', '/pypi/**', or HOST/PATH for named hosts.
    Purge {
        /// Which cache.
        #[command(flatten)]
        cache: CacheArg,
        /// The shared store's bucket instead (removes references; their
        /// bodies go with gc --shared).
        #[command(flatten)]
        shared: SharedArg,
        /// Glob on the request path (`*` stays within one segment, `**` spans segments).
        #[arg(value_name = "PATTERN")]
        pattern: String,
        /// List what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Ask the build API for a package built for a runtime; prints the
    /// artifact's name (with --wait, once it is built).
    Build(BuildCmd),
    /// Hand a local source in through the inbox and ask for it to be built.
    #[command(subcommand)]
    Inbox(InboxCmd),
}

impl Command {
    /// The cache directory option given to the subcommand.
    pub fn cache(&self) -> Option<&PathBuf> {
        match self {
            Command::Stats { cache, .. }
            | Command::Verify { cache, .. }
            | Command::Gc { cache, .. }
            | Command::Purge { cache, .. } => cache.cache.as_ref(),
            Command::Inbox(InboxCmd::Add { cache, .. }) => cache.cache.as_ref(),
            Command::Build(_) => None,
        }
    }
}

/// Where the build API is, and its token.
#[derive(Debug, ClapArgs)]
pub struct ApiArgs {
    /// The build API's URL.
    #[arg(
        long = "api",
        value_name = "URL",
        default_value = "http://localhost:4002",
        env = "PC_API_URL"
    )]
    pub url: String,
    /// A file holding the API's write token.
    #[arg(long, value_name = "FILE", env = "PC_API_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Wait until the build ends, showing its progress.
    #[arg(long)]
    pub wait: bool,
}

/// `package-cache build`.
#[derive(Debug, ClapArgs)]
pub struct BuildCmd {
    /// The package type: gem or pip.
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: String,
    /// The runtime to build for.
    #[arg(long)]
    pub runtime: String,
    /// The package name (remote builds).
    #[arg(long, required_unless_present = "local")]
    pub name: Option<String>,
    /// The version (remote builds).
    #[arg(long, required_unless_present = "local")]
    pub version: Option<String>,
    /// A gem's platform (remote builds).
    #[arg(long)]
    pub platform: Option<String>,
    /// Build this local file instead, uploaded over HTTP.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["name", "version", "platform"])]
    pub local: Option<PathBuf>,
    /// The API.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `package-cache inbox …`.
#[derive(Debug, Subcommand)]
pub enum InboxCmd {
    /// Hash FILE, copy it into the inbox under a random name, ask for it to
    /// be built, and print the artifact's name.
    Add {
        /// The source file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The package type: gem or pip.
        #[arg(long = "type", value_name = "TYPE")]
        kind: String,
        /// The runtime to build for.
        #[arg(long)]
        runtime: String,
        /// The server's cache directory (the inbox is inside it).
        #[command(flatten)]
        cache: CacheArg,
        /// The API.
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// The `--shared-store URL` of a maintenance command: it then works on the
/// bucket, not on the cache directory.
#[derive(Debug, ClapArgs)]
pub struct SharedArg {
    /// The shared store's bucket (s3://BUCKET[/PREFIX]); endpoint and
    /// credentials from the AWS_* environment variables.
    #[arg(long = "shared-store", value_name = "URL")]
    pub shared_store: Option<String>,
    /// A setting of the shared store (KEY=VALUE), as the server takes it.
    #[arg(
        long = "shared-store-opt",
        value_name = "KEY=VALUE",
        requires = "shared_store"
    )]
    pub shared_store_opts: Vec<String>,
}

/// The `--cache DIR` of a maintenance command.
#[derive(Debug, ClapArgs)]
pub struct CacheArg {
    /// Cache directory [default: the server's: /var/cache/package-cache as root, else ~/.cache/package-cache].
    #[arg(long, value_name = "DIR", env = "PC_CACHE_DIR")]
    pub cache: Option<PathBuf>,
}
