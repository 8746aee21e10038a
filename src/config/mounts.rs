//! Mounts: `--mirror NAME=URL`, `--profile NAME=KIND`, `--files-host
//! NAME=URL`, `--mirror-auth NAME=FILE` and `--go-sum NAME=FILE` parsed into
//! one typed `Mount` per name.

use super::{redact_userinfo, Credential, Error, GoSumFile, SourceUrl};
use crate::cli::Args;
use std::path::Path;

/// What kind of repository a mount fronts: it decides which paths are
/// mutable index documents and how artifacts are verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// A PEP 503/691 simple index (pages rewritten to route files through the cache).
    Pypi,
    /// A RubyGems server (compact and legacy index).
    Rubygems,
    /// A Gentoo distfiles mirror (GLEP 75).
    Gentoo,
    /// Every path an immutable file.
    Generic,
    /// An npm registry (packuments rewritten to route tarballs through the cache).
    Npm,
    /// A Cargo sparse registry (`config.json` rewritten to route crates through the cache).
    Cargo,
    /// A Go module proxy (GOPROXY protocol) and the checksum database it proxies.
    Go,
}

impl Profile {
    fn parse(raw: &str) -> Option<Profile> {
        match raw {
            "pypi" => Some(Profile::Pypi),
            "rubygems" => Some(Profile::Rubygems),
            "gentoo" => Some(Profile::Gentoo),
            "generic" => Some(Profile::Generic),
            "npm" => Some(Profile::Npm),
            "cargo" => Some(Profile::Cargo),
            "go" => Some(Profile::Go),
            _ => None,
        }
    }

    /// The profile a mount's name picks when no `--profile` is given:
    /// `crates` (the name users give a crates index) is Cargo too.
    fn of_name(name: &str) -> Profile {
        match name {
            "crates" => Profile::Cargo,
            _ => Profile::parse(name).unwrap_or(Profile::Generic),
        }
    }
}

/// A named upstream mounted under `/NAME/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The name: the first path segment, and its namespace in the cache.
    pub name: String,
    /// The repository kind.
    pub profile: Profile,
    /// Its sources, in failover order.
    pub sources: Vec<SourceUrl>,
    /// Hosts its index pages link files to (pypi).
    pub files_hosts: Vec<SourceUrl>,
    /// pypi: where the simple index is on the sources, relative to their URL
    /// (`/+simple` for devpi); `None` is `/simple`. Clients always see
    /// `/NAME/simple/`.
    pub index_path: Option<String>,
    /// go: the `--go-sum` files whose `h1:` lines its zips and go.mods are
    /// checked against.
    pub go_sums: Vec<GoSumFile>,
}

fn split_named<'a>(option: &'static str, raw: &'a str) -> Result<(&'a str, &'a str), Error> {
    let bad = |reason: &str| Error::Mount {
        option,
        value: raw.to_string(),
        reason: reason.to_string(),
    };
    let (name, value) = raw
        .split_once('=')
        .ok_or_else(|| bad("expected NAME=VALUE"))?;
    // The name is a path segment and a directory name.
    let valid = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if !valid {
        return Err(bad(
            "NAME must be lower-case letters, digits, '-', '_' or '.'",
        ));
    }
    Ok((name, value))
}

pub(super) fn mounts_from(args: &Args) -> Result<Vec<Mount>, Error> {
    let mut mounts: Vec<Mount> = Vec::new();
    for raw in &args.mirrors {
        let (name, url) = split_named("--mirror", raw).map_err(redacted)?;
        let source = SourceUrl::try_new(url)?;
        match mounts.iter_mut().find(|m| m.name == name) {
            Some(mount) => mount.sources.push(source),
            None => mounts.push(Mount {
                name: name.to_string(),
                profile: Profile::of_name(name),
                sources: vec![source],
                files_hosts: Vec::new(),
                index_path: None,
                go_sums: Vec::new(),
            }),
        }
    }
    let unknown = |option: &'static str, raw: &str| Error::Mount {
        option,
        value: raw.to_string(),
        reason: "no --mirror has that NAME".to_string(),
    };
    for raw in &args.profiles {
        let (name, value) = split_named("--profile", raw)?;
        let profile = Profile::parse(value).ok_or_else(|| Error::Mount {
            option: "--profile",
            value: raw.clone(),
            reason: "PROFILE must be pypi, rubygems, gentoo, generic, npm, cargo or go".to_string(),
        })?;
        let mount = mounts
            .iter_mut()
            .find(|m| m.name == name)
            .ok_or_else(|| unknown("--profile", raw))?;
        mount.profile = profile;
    }
    for raw in &args.files_hosts {
        let (name, url) = split_named("--files-host", raw).map_err(redacted)?;
        let source = SourceUrl::try_new(url)?;
        let mount = mounts
            .iter_mut()
            .find(|m| m.name == name)
            .ok_or_else(|| redacted(unknown("--files-host", raw)))?;
        mount.files_hosts.push(source);
    }
    for mount in mounts.iter_mut().filter(|m| m.profile == Profile::Pypi) {
        mount.index_path = index_in_urls(mount)?;
    }
    for raw in &args.index_paths {
        let (name, path) = split_named("--index-path", raw)?;
        let mount = mounts
            .iter_mut()
            .find(|m| m.name == name)
            .ok_or_else(|| unknown("--index-path", raw))?;
        let bad = |reason: &str| Error::Mount {
            option: "--index-path",
            value: raw.clone(),
            reason: reason.to_string(),
        };
        if mount.profile != Profile::Pypi {
            return Err(bad("only a pypi mount has a simple index"));
        }
        let path = normal_index_path(path).ok_or_else(|| bad("PATH must be a plain path"))?;
        // A path that starts with the mirror URL's own path is read from the
        // host's root (the URL as devpi shows it); otherwise from the URL.
        let prefix = &mount.sources[0].prefix;
        let relative = match path.strip_prefix(prefix.as_str()) {
            Some(rest)
                if !prefix.is_empty()
                    && (rest.is_empty() || rest.starts_with('/'))
                    && mount.sources.iter().all(|s| s.prefix == *prefix) =>
            {
                rest.to_string()
            }
            _ => path,
        };
        mount.index_path = Some(relative);
    }
    for raw in &args.mirror_auth {
        let (name, file) = split_named("--mirror-auth", raw)?;
        let mount = mounts
            .iter_mut()
            .find(|m| m.name == name)
            .ok_or_else(|| unknown("--mirror-auth", raw))?;
        let credential = Credential::load(name, Path::new(file)).map_err(|e| Error::Mount {
            option: "--mirror-auth",
            value: raw.clone(),
            reason: e.to_string(),
        })?;
        for source in &mut mount.sources {
            source.credential = Some(credential.clone());
        }
    }
    for raw in &args.go_sums {
        let (name, file) = split_named("--go-sum", raw)?;
        let mount = mounts
            .iter_mut()
            .find(|m| m.name == name)
            .ok_or_else(|| unknown("--go-sum", raw))?;
        let bad = |reason: String| Error::Mount {
            option: "--go-sum",
            value: raw.clone(),
            reason,
        };
        if mount.profile != Profile::Go {
            return Err(bad(format!(
                "only a go mount takes a go.sum (mount {name} is not one; --profile {name}=go)"
            )));
        }
        let sums = GoSumFile::load(name, Path::new(file)).map_err(|e| bad(e.to_string()))?;
        mount.go_sums.push(sums);
    }
    for mount in &mut mounts {
        // A files host on a source's own origin is that upstream too.
        for files in &mut mount.files_hosts {
            if files.credential.is_none() {
                files.credential = mount
                    .sources
                    .iter()
                    .find(|s| s.same_origin(files))
                    .and_then(|s| s.credential.clone());
            }
        }
    }
    Ok(mounts)
}

/// A pypi mount's sources may be given as the simple index's own URL
/// (`…/simple/`, devpi's `…/+simple/`), as pip's `--index-url` is: that last
/// segment leaves each source's prefix and becomes the mount's index path.
/// Sources that disagree are an error.
fn index_in_urls(mount: &mut Mount) -> Result<Option<String>, Error> {
    let mut found: Option<Option<String>> = None;
    for source in &mut mount.sources {
        let (base, last) = source.prefix.rsplit_once('/').unwrap_or(("", ""));
        let index = match last {
            "simple" => {
                source.prefix = base.to_string();
                None
            }
            "+simple" => {
                source.prefix = base.to_string();
                Some("/+simple".to_string())
            }
            _ => None,
        };
        match &found {
            Some(other) if *other != index => {
                return Err(Error::Mount {
                    option: "--mirror",
                    value: mount.name.clone(),
                    reason: "the sources of a pypi mount must have their simple index at the same \
                             path (give them as base URLs and use --index-path)"
                        .to_string(),
                })
            }
            _ => found = Some(index),
        }
    }
    Ok(found.flatten())
}

/// `PATH` as `/a/b` (no trailing slash; `` for the root), or `None` when it
/// holds a query, a fragment, `.` or `..` segments.
fn normal_index_path(raw: &str) -> Option<String> {
    if raw.contains(['?', '#', '\\']) {
        return None;
    }
    let segments: Vec<&str> = raw.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return None;
    }
    Some(segments.iter().map(|s| format!("/{s}")).collect())
}

/// `err` quoting its value without a password: error messages are printed.
fn redacted(err: Error) -> Error {
    match err {
        Error::Mount {
            option,
            value,
            reason,
        } => Error::Mount {
            option,
            value: redact_userinfo(&value),
            reason,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn args(extra: &[&str]) -> Result<Config, Error> {
        use clap::Parser;
        let mut argv = vec!["package-cache", "--cache", "/tmp/x"];
        argv.extend_from_slice(extra);
        Config::try_from(Args::parse_from(argv))
    }

    #[test]
    fn mounts_collect_sources_profiles_and_files_hosts() {
        let c = args(&[
            "--mirror",
            "pypi=http://a.example/",
            "--mirror",
            "pypi=http://b.example/",
            "--files-host",
            "pypi=https://files.example",
            "--mirror",
            "gems=http://g.example/",
            "--profile",
            "gems=rubygems",
            "--mirror",
            "tarballs=http://t.example/",
        ])
        .unwrap();
        let names: Vec<_> = c
            .mounts
            .iter()
            .map(|m| (m.name.as_str(), m.profile))
            .collect();
        assert_eq!(
            names,
            [
                ("pypi", Profile::Pypi),
                ("gems", Profile::Rubygems),
                ("tarballs", Profile::Generic)
            ]
        );
        assert_eq!(c.mounts[0].sources.len(), 2);
        let more = args(&[
            "--mirror",
            "npm=http://n.example/",
            "--mirror",
            "crates=http://c.example/",
            "--mirror",
            "go=http://g.example/",
            "--mirror",
            "private=http://p.example/",
            "--profile",
            "private=cargo",
            "--mirror",
            "cargo=http://k.example/",
        ])
        .unwrap();
        let profiles: Vec<_> = more.mounts.iter().map(|m| m.profile).collect();
        assert_eq!(
            profiles,
            [
                Profile::Npm,
                Profile::Cargo,
                Profile::Go,
                Profile::Cargo,
                Profile::Cargo
            ]
        );
        assert!(c.mounts[0].files_hosts[0].https);
        for bad in [
            &["--mirror", "Pypi=http://a/"][..],
            &["--mirror", ".x=http://a/"],
            &["--mirror", "nourl"],
            &["--mirror", "x=ftp://a/"],
            &["--profile", "x=pypi"],
            &["--mirror", "x=http://a/", "--profile", "x=maven"],
            &["--files-host", "nomount=http://f/"],
            &["--no-cache", "a[b"],
        ] {
            assert!(args(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn index_paths_come_from_the_url_or_the_option() {
        let index = |extra: &[&str]| {
            let c = args(extra).unwrap();
            let m = &c.mounts[0];
            (m.sources[0].prefix.clone(), m.index_path.clone())
        };
        assert_eq!(index(&["--mirror", "pypi=http://a/"]), ("".into(), None));
        assert_eq!(
            index(&["--mirror", "pypi=http://a/simple/"]),
            ("".into(), None)
        );
        assert_eq!(
            index(&["--mirror", "pypi=http://a/root/pypi/+simple/"]),
            ("/root/pypi".into(), Some("/+simple".into()))
        );
        assert_eq!(
            index(&["--mirror", "pypi=http://a/api/pypi/remote/simple"]),
            ("/api/pypi/remote".into(), None)
        );
        // Only a pypi mount's URL says where its index is.
        assert_eq!(
            index(&["--mirror", "gentoo=http://a/x/simple/"]),
            ("/x/simple".into(), None)
        );
        assert_eq!(
            index(&[
                "--mirror",
                "pypi=http://a/root/pypi/",
                "--index-path",
                "pypi=+simple/"
            ]),
            ("/root/pypi".into(), Some("/+simple".into()))
        );
        assert_eq!(
            index(&[
                "--mirror",
                "pypi=http://a/root/pypi",
                "--index-path",
                "pypi=/root/pypi/+simple/"
            ]),
            ("/root/pypi".into(), Some("/+simple".into())),
            "a path from the host's root"
        );
        assert_eq!(
            index(&[
                "--mirror",
                "pypi=http://a/",
                "--index-path",
                "pypi=/root/pypi/+simple"
            ]),
            ("".into(), Some("/root/pypi/+simple".into()))
        );
        for bad in [
            &[
                "--mirror",
                "pypi=http://a/simple/",
                "--mirror",
                "pypi=http://b/+simple/",
            ][..],
            &["--mirror", "pypi=http://a/", "--index-path", "pypi=../x"],
            &["--mirror", "pypi=http://a/", "--index-path", "pypi=/x?y"],
            &["--mirror", "gems=http://a/", "--index-path", "gems=/x"],
            &["--index-path", "pypi=/x"],
        ] {
            assert!(args(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn credentials_go_to_a_mounts_sources_and_same_origin_files_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "tok\n").unwrap();
        let auth = format!("private={}", token.display());
        let c = args(&[
            "--mirror",
            "private=http://a.example/simple/",
            "--mirror",
            "private=http://b.example/",
            "--profile",
            "private=pypi",
            "--files-host",
            "private=http://a.example/files/",
            "--files-host",
            "private=http://files.example/",
            "--mirror-auth",
            &auth,
            "--mirror",
            "open=http://u:pw@c.example/",
        ])
        .unwrap();
        let m = &c.mounts[0];
        assert!(m.sources.iter().all(|s| s.credential.is_some()));
        assert_eq!(m.files_hosts[0].credential, m.sources[0].credential);
        assert!(m.files_hosts[1].credential.is_none(), "another origin");
        assert_eq!(c.mounts[1].sources[0].url_for("/x"), "http://c.example/x");
        assert_eq!(c.credentials().len(), 1, "only file-backed ones reload");
        let err = args(&["--mirror", "Bad=http://u:hunter2@h/"]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(args(&["--mirror-auth", &auth]).is_err(), "no such mount");
        let missing = format!("private={}", dir.path().join("none").display());
        assert!(args(&["--mirror", "private=http://a/", "--mirror-auth", &missing]).is_err());
    }

    #[test]
    fn go_sums_go_to_go_mounts_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("go.sum");
        std::fs::write(&file, "").unwrap();
        let on = |name: &str| format!("{name}={}", file.display());
        let c = args(&[
            "--mirror",
            "private=http://a/",
            "--profile",
            "private=go",
            "--go-sum",
            &on("private"),
            "--go-sum",
            &on("private"),
        ])
        .unwrap();
        assert_eq!(c.mounts[0].go_sums.len(), 2);
        assert_eq!(c.go_sum_files().len(), 2, "each reloads");
        let err = args(&["--mirror", "npm=http://a/", "--go-sum", &on("npm")]).unwrap_err();
        assert!(err.to_string().contains("only a go mount"), "{err}");
    }
}
