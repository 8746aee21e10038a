//! Where a URL named by an index document (an npm `dist.tarball`, a Cargo
//! download) lives among a mount's upstreams: one of its sources, under that
//! source's prefix, or one of its files hosts. Anything else is a place the
//! operator did not allow, and is never fetched through the mount.

use super::MountUpstream;
use crate::config::{Authority, Mount, SourceUrl};
use url::Url;

/// The first path segment under which a mount serves files of its files hosts
/// (`/NAME/_files/AUTHORITY/PATH`). npm names cannot start with `_`, so no
/// package's path can take this shape.
pub const FILES_SEGMENT: &str = "_files";

/// Which upstream of `mount` serves `link`, and the path (with query) to ask
/// it for. The path keeps the link's encoding. `None` for other schemes, hosts
/// or ports, and for paths outside a source's prefix.
pub fn locate(mount: &Mount, link: &Url) -> Option<(MountUpstream, String)> {
    let https = match link.scheme() {
        "http" => false,
        "https" => true,
        _ => return None,
    };
    if !link.username().is_empty() || link.password().is_some() {
        return None;
    }
    let host = link.host_str()?;
    let authority = match link.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let authority = Authority::try_new(&authority, https).ok()?;
    let under = |source: &SourceUrl| -> Option<String> {
        if source.https != https || source.authority != authority {
            return None;
        }
        let rest = link.path().strip_prefix(source.prefix.as_str())?;
        if !rest.starts_with('/') {
            return None;
        }
        Some(match link.query() {
            Some(query) => format!("{rest}?{query}"),
            None => rest.to_string(),
        })
    };
    if let Some(path) = mount.sources.iter().find_map(under) {
        return Some((MountUpstream::Sources, path));
    }
    mount
        .files_hosts
        .iter()
        .enumerate()
        .find_map(|(i, files)| Some((MountUpstream::Files(i), under(files)?)))
}

/// The path on `mount` (after `/NAME`) that serves `link` through the cache:
/// the source path itself for its sources, `/_files/AUTHORITY/PATH` for its
/// files hosts. `None` where [`locate`] finds no upstream.
pub fn mount_path(mount: &Mount, link: &Url) -> Option<String> {
    match locate(mount, link)? {
        (MountUpstream::Sources, path) => Some(path),
        (MountUpstream::Files(i), path) => Some(format!(
            "/{FILES_SEGMENT}/{}{path}",
            mount.files_hosts[i].authority.as_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Profile;

    fn mount() -> Mount {
        Mount {
            name: "npm".into(),
            profile: Profile::Npm,
            sources: vec![
                SourceUrl::try_new("https://registry.example/npm").unwrap(),
                SourceUrl::try_new("http://mirror.example:8080/").unwrap(),
            ],
            files_hosts: vec![SourceUrl::try_new("https://cdn.example/").unwrap()],
            index_path: None,
            go_sums: Vec::new(),
        }
    }

    fn url(s: &str) -> Url {
        Url::parse(s).expect("valid url")
    }

    #[test]
    fn sources_and_files_hosts_are_found() {
        let m = mount();
        assert_eq!(
            locate(&m, &url("https://registry.example/npm/a/-/a-1.0.0.tgz")),
            Some((MountUpstream::Sources, "/a/-/a-1.0.0.tgz".into()))
        );
        assert_eq!(
            locate(&m, &url("https://REGISTRY.example:443/npm/a?x=1")),
            Some((MountUpstream::Sources, "/a?x=1".into()))
        );
        assert_eq!(
            locate(&m, &url("http://mirror.example:8080/b/-/b-2.tgz")),
            Some((MountUpstream::Sources, "/b/-/b-2.tgz".into()))
        );
        assert_eq!(
            mount_path(&m, &url("https://cdn.example/t/c-1.tgz")),
            Some("/_files/cdn.example/t/c-1.tgz".into())
        );
    }

    #[test]
    fn anything_else_is_refused() {
        let m = mount();
        for bad in [
            "http://registry.example/npm/a",
            "https://registry.example/npmx/a",
            "https://registry.example/other/a",
            "https://registry.example:8443/npm/a",
            "https://user:pw@registry.example/npm/a",
            "http://mirror.example/b",
            "https://evil.example/t/c-1.tgz",
            "ftp://cdn.example/t/c-1.tgz",
            "file:///etc/passwd",
        ] {
            assert_eq!(locate(&m, &url(bad)), None, "{bad}");
        }
    }
}
