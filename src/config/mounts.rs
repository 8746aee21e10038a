//! Mounts: `--mirror NAME=URL`, `--profile NAME=KIND` and `--files-host
//! NAME=URL` parsed into one typed `Mount` per name.

use super::{Error, SourceUrl};
use crate::cli::Args;

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
        let (name, url) = split_named("--mirror", raw)?;
        let source = SourceUrl::try_new(url)?;
        match mounts.iter_mut().find(|m| m.name == name) {
            Some(mount) => mount.sources.push(source),
            None => mounts.push(Mount {
                name: name.to_string(),
                profile: Profile::of_name(name),
                sources: vec![source],
                files_hosts: Vec::new(),
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
        let (name, url) = split_named("--files-host", raw)?;
        let source = SourceUrl::try_new(url)?;
        let mount = mounts
            .iter_mut()
            .find(|m| m.name == name)
            .ok_or_else(|| unknown("--files-host", raw))?;
        mount.files_hosts.push(source);
    }
    Ok(mounts)
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
}
