//! `Target`: which upstream a request points at. Absolute-form requests
//! (forward proxy), DNATed connections and allow-listed `Host`s name a host
//! (a mount's upstream host names that mount); everything else goes to the
//! `--source` mirrors whatever its `Host` says.
//! Only hosts the operator allowed are ever fetched: never an open proxy.

use crate::config::{Authority, Mount, SourceUrl};
pub use crate::mount::MountUpstream;
use http::Uri;
use std::net::SocketAddr;
use std::sync::Arc;

/// Addresses of the client connection, put in request extensions by the server.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    /// The client.
    pub peer: SocketAddr,
    /// Our listening address as the client reached it.
    pub local: SocketAddr,
    /// `SO_ORIGINAL_DST`, when the kernel knows one (a DNAT rule applied).
    pub orig_dst: Option<SocketAddr>,
}

impl ConnInfo {
    /// The original destination, when the connection was redirected to us.
    pub fn redirected_from(&self) -> Option<SocketAddr> {
        self.orig_dst.filter(|dst| *dst != self.local)
    }
}

/// Which hosts may be fetched by name.
#[derive(Clone, Debug, Default)]
pub struct HostRules {
    /// The `--source` mirrors (their hosts are allowed; their paths map to the shared namespace).
    pub sources: Vec<SourceUrl>,
    /// Extra allowed hosts (`--transparent-host`).
    pub transparent: Vec<Authority>,
    /// Named upstreams mounted under `/NAME/` (`--mirror`).
    pub mounts: Vec<Arc<Mount>>,
}

impl HostRules {
    fn allowed(&self, authority: &Authority) -> bool {
        self.transparent.contains(authority)
            || self.sources.iter().any(|s| s.authority == *authority)
    }
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The shared namespace of the `--source` mirrors.
    Mirrors {
        /// Raw path (percent-encoding kept), relative to the sources' prefixes.
        path: String,
        /// Raw query, if any.
        query: Option<String>,
    },
    /// A `--mirror` mount. Its profile decides, later, which upstream
    /// (`upstream`) and path a request goes to.
    Mount {
        /// The mount.
        mount: Arc<Mount>,
        /// Which of its upstreams.
        upstream: MountUpstream,
        /// Raw path on that upstream (after the mount's `/NAME` and, for a
        /// files host, its `/files/AUTHORITY`).
        path: String,
        /// Raw query.
        query: Option<String>,
    },
    /// One allowed host, over plain HTTP.
    Host {
        /// The host.
        authority: Authority,
        /// Raw path.
        path: String,
        /// Raw query.
        query: Option<String>,
    },
}

impl Target {
    /// The raw path.
    pub fn path(&self) -> &str {
        match self {
            Target::Mirrors { path, .. }
            | Target::Host { path, .. }
            | Target::Mount { path, .. } => path,
        }
    }

    /// The raw query.
    pub fn query(&self) -> Option<&str> {
        match self {
            Target::Mirrors { query, .. }
            | Target::Host { query, .. }
            | Target::Mount { query, .. } => query.as_deref(),
        }
    }

    /// Raw path plus `?query`, as the upstream must receive it.
    pub fn path_and_query(&self) -> String {
        match self.query() {
            Some(q) => format!("{}?{q}", self.path()),
            None => self.path().to_string(),
        }
    }
}

/// Why a request names no allowed upstream.
#[derive(Debug, PartialEq, Eq)]
pub enum TargetError {
    /// The named host is not allowed.
    Forbidden {
        /// The host as the client named it.
        host: String,
    },
    /// The request target cannot be understood.
    Malformed(&'static str),
}

/// Resolves a request to its target. `host_header` is the raw `Host` value.
pub fn parse(
    uri: &Uri,
    host_header: Option<&str>,
    conn: Option<&ConnInfo>,
    rules: &HostRules,
) -> Result<Target, TargetError> {
    let path = uri.path().to_string();
    let query = uri.query().map(str::to_string);
    if let Some(scheme) = uri.scheme_str() {
        // Absolute form: a forward-proxy request (`http_proxy=`).
        if scheme != "http" {
            return Err(TargetError::Malformed("only http:// URLs can be proxied"));
        }
        let raw = uri
            .authority()
            .map(|a| a.as_str())
            .ok_or(TargetError::Malformed("no host in URL"))?;
        return for_host(raw, path, query, rules);
    }
    if !path.starts_with('/') {
        return Err(TargetError::Malformed("request target must be a path"));
    }
    let redirected = conn.and_then(ConnInfo::redirected_from);
    if redirected.is_some() {
        let raw = host_header.ok_or(TargetError::Malformed("redirected request without Host"))?;
        return for_host(raw, path, query, rules);
    }
    if let Some(raw) = host_header {
        if let Ok(authority) = Authority::try_new(raw, false) {
            if rules.allowed(&authority) {
                return Ok(in_namespace(authority, path, query, rules));
            }
        }
    }
    if let Some(target) = mounted(&path, &query, rules) {
        return Ok(target);
    }
    Ok(Target::Mirrors { path, query })
}

/// `/NAME` or `/NAME/...` for a configured mount.
fn mounted(path: &str, query: &Option<String>, rules: &HostRules) -> Option<Target> {
    let rest = path.strip_prefix('/')?;
    let (name, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let mount = rules.mounts.iter().find(|m| m.name == name)?;
    Some(Target::Mount {
        mount: mount.clone(),
        upstream: MountUpstream::Sources,
        path: tail.to_string(),
        query: query.clone(),
    })
}

fn for_host(
    raw: &str,
    path: String,
    query: Option<String>,
    rules: &HostRules,
) -> Result<Target, TargetError> {
    let authority =
        Authority::try_new(raw, false).map_err(|_| TargetError::Malformed("bad host"))?;
    if rules.allowed(&authority) {
        return Ok(in_namespace(authority, path, query, rules));
    }
    // A mount's upstream, asked for by name (`http_proxy=`, or DNAT): that
    // mount's cache, as if the client had asked for its path on the mount.
    if let Some(target) = on_mount(&authority, &path, &query, rules) {
        return Ok(target);
    }
    Err(TargetError::Forbidden {
        host: authority.as_str().to_string(),
    })
}

/// The mount whose source or files host is `authority` (over plain HTTP)
/// with `path` under its prefix, and the path on the mount that names it.
fn on_mount(
    authority: &Authority,
    path: &str,
    query: &Option<String>,
    rules: &HostRules,
) -> Option<Target> {
    let link = url::Url::parse(&format!("http://{}{path}", authority.as_str())).ok()?;
    rules.mounts.iter().find_map(|mount| {
        let on_mount = crate::mount::forward_path(mount, &link)?;
        Some(Target::Mount {
            mount: mount.clone(),
            upstream: MountUpstream::Sources,
            path: on_mount,
            query: query.clone(),
        })
    })
}

/// A source's host with a path under its prefix joins the mirrors' namespace,
/// so a DNATed request and a direct one share the entry.
fn in_namespace(
    authority: Authority,
    path: String,
    query: Option<String>,
    rules: &HostRules,
) -> Target {
    for source in &rules.sources {
        if source.authority != authority {
            continue;
        }
        if let Some(rest) = path.strip_prefix(source.prefix.as_str()) {
            if rest.starts_with('/') {
                return Target::Mirrors {
                    path: rest.to_string(),
                    query,
                };
            }
        }
    }
    Target::Host {
        authority,
        path,
        query,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> HostRules {
        HostRules {
            sources: vec![SourceUrl::try_new("http://mirror.example/gentoo").unwrap()],
            transparent: vec![Authority::try_new("files.example", false).unwrap()],
            mounts: Vec::new(),
        }
    }

    fn conn(dnat: bool) -> ConnInfo {
        let local: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let dst: SocketAddr = "10.0.0.5:80".parse().unwrap();
        ConnInfo {
            peer: "127.0.0.1:5555".parse().unwrap(),
            local,
            orig_dst: Some(if dnat { dst } else { local }),
        }
    }

    #[test]
    fn origin_form_goes_to_mirrors_whatever_the_host() {
        let t = parse(
            &"/distfiles/a".parse().unwrap(),
            Some("anything:4000"),
            Some(&conn(false)),
            &rules(),
        )
        .unwrap();
        assert_eq!(
            t,
            Target::Mirrors {
                path: "/distfiles/a".into(),
                query: None
            }
        );
    }

    #[test]
    fn absolute_form_needs_an_allowed_host() {
        let r = rules();
        let t = parse(
            &"http://files.example/x?y=1".parse().unwrap(),
            None,
            None,
            &r,
        )
        .unwrap();
        assert!(matches!(t, Target::Host { ref path, .. } if path == "/x"));
        assert_eq!(t.path_and_query(), "/x?y=1");
        let t = parse(
            &"http://mirror.example/gentoo/distfiles/a".parse().unwrap(),
            None,
            None,
            &r,
        )
        .unwrap();
        assert_eq!(
            t,
            Target::Mirrors {
                path: "/distfiles/a".into(),
                query: None
            }
        );
        let t = parse(
            &"http://mirror.example/other".parse().unwrap(),
            None,
            None,
            &r,
        )
        .unwrap();
        assert!(matches!(t, Target::Host { .. }));
        assert_eq!(
            parse(&"http://evil.example/x".parse().unwrap(), None, None, &r),
            Err(TargetError::Forbidden {
                host: "evil.example".into()
            })
        );
        assert!(parse(&"https://files.example/x".parse().unwrap(), None, None, &r).is_err());
    }

    #[test]
    fn absolute_form_for_a_mounts_upstream_is_that_mount() {
        use crate::config::Profile;
        let mut r = rules();
        r.mounts.push(Arc::new(Mount {
            name: "npm".into(),
            profile: Profile::Npm,
            sources: vec![SourceUrl::try_new("http://registry.example/npm").unwrap()],
            files_hosts: vec![SourceUrl::try_new("http://cdn.example:8080/").unwrap()],
            index_path: None,
            go_sums: Vec::new(),
        }));
        let on = |uri: &str| match parse(&uri.parse().unwrap(), None, None, &r) {
            Ok(Target::Mount {
                mount, path, query, ..
            }) => Ok((mount.name.clone(), path, query)),
            Ok(other) => panic!("{uri}: {other:?}"),
            Err(err) => Err(err),
        };
        assert_eq!(
            on("http://registry.example/npm/a/-/a-1.0.0.tgz?x=1"),
            Ok(("npm".into(), "/a/-/a-1.0.0.tgz".into(), Some("x=1".into())))
        );
        assert_eq!(
            on("http://cdn.example:8080/t/a-1.tgz"),
            Ok((
                "npm".into(),
                "/_files/cdn.example:8080/t/a-1.tgz".into(),
                None
            ))
        );
        for other in [
            "http://registry.example/other",
            "http://cdn.example/t/a-1.tgz",
            "http://evil.example/npm/a",
        ] {
            assert!(
                matches!(on(other), Err(TargetError::Forbidden { .. })),
                "{other}"
            );
        }
    }

    #[test]
    fn a_source_host_in_the_host_header_maps_into_the_mirrors() {
        let t = parse(
            &"/gentoo/distfiles/a".parse().unwrap(),
            Some("mirror.example"),
            Some(&conn(false)),
            &rules(),
        )
        .unwrap();
        assert_eq!(
            t,
            Target::Mirrors {
                path: "/distfiles/a".into(),
                query: None
            },
            "prefix not doubled"
        );
    }

    #[test]
    fn dnat_uses_the_host_header_only_when_allowed() {
        let r = rules();
        let t = parse(
            &"/x".parse().unwrap(),
            Some("files.example"),
            Some(&conn(true)),
            &r,
        )
        .unwrap();
        assert!(matches!(t, Target::Host { .. }));
        assert!(matches!(
            parse(
                &"/x".parse().unwrap(),
                Some("evil.example"),
                Some(&conn(true)),
                &r
            ),
            Err(TargetError::Forbidden { .. })
        ));
        assert!(parse(&"/x".parse().unwrap(), None, Some(&conn(true)), &r).is_err());
        let t = parse(
            &"/x".parse().unwrap(),
            Some("files.example"),
            Some(&conn(false)),
            &r,
        )
        .unwrap();
        assert!(
            matches!(t, Target::Host { .. }),
            "allow-listed Host without DNAT"
        );
    }
}
