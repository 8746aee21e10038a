//! Building a `Config` from `cli::Args`: every option parsed into its typed
//! value, and the checks that span options (some upstream is given). The
//! per-area parsers (`BuildConfig::try_from_args`, `mounts_from`, ...) live
//! with their structs; what is here has no other home.

use super::mounts::mounts_from;
use super::{
    AllowedHost, Authority, BuildConfig, Config, Error, ListenAddr, Policy, PublicUrl,
    ServerConfig, SharedStoreConfig, SourceUrl, SupplyConfig, TlsListener, UpstreamConfig,
};
use crate::cli::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
