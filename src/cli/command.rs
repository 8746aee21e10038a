//! `Command`: the subcommands. Maintenance commands (`stats`, `verify`,
//! `gc`, `purge`) work on a cache directory or the shared store and exit;
//! `build` and `inbox` are clients of the build API. None of these options
//! reach the server, which runs when no subcommand is given.

use clap::{Args as ClapArgs, Subcommand};
use std::path::PathBuf;

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
