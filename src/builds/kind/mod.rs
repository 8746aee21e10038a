//! Package types: what a `gem` or a `pip` build is. Each type decides the
//! canonical file name of a remote source and fetches it through the proxy,
//! names the build requirements to fetch (as sandbox steps, or fetched here),
//! gives the offline build commands and checks the result. Running the steps
//! is the sandbox's job; archiving the install directory is `archive`'s.
//! Adding a type is adding one module here and one arm to [`Kind`].

pub mod gem;
pub mod pip;
mod release;
mod requires;

pub use release::Release;
mod sdist;

use crate::builds::fetch::{self, Fetcher};
use crate::builds::runtime::{Family, Runtime};
use crate::builds::step::Step;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// `SOURCE_DATE_EPOCH` of every step (1980-01-01, as `archive::MTIME`), so tools
/// that honour it (wheel, gem build, compilers' `__DATE__`) stamp fixed dates.
pub const SOURCE_DATE_EPOCH: u64 = 315_532_800;

/// A package type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A RubyGems `.gem`, installed with `gem install --local` into a private
    /// directory, no documents, dependencies not installed.
    Gem,
    /// A Python sdist, built with pip (PEP 517, build isolation from
    /// pre-fetched wheels) and installed with `--target`, no dependencies.
    Pip,
}

/// The directories of one job (`work/<job-id>/`), either where they are on
/// the host (for the server's own work) or where a step sees them (below
/// the sandbox's fixed build path, see [`StepView`]).
///
/// `reqs`, `unpacked`, `install`, `home` and `tmp` belong to the build uid
/// while steps run; `source` is the source file itself, readable by the
/// build uid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobDirs {
    /// The job's directory.
    pub root: PathBuf,
    /// The source FILE (a `.gem`, an sdist `.tar.gz`/`.zip`).
    pub source: PathBuf,
    /// Build requirements, fetched before the build.
    pub reqs: PathBuf,
    /// Where an sdist is unpacked and built (in place, so the build's own
    /// paths are this job's fixed ones, never an installer's random ones).
    pub unpacked: PathBuf,
    /// Where the package is installed; the only directory archived.
    pub install: PathBuf,
    /// `HOME` of the steps.
    pub home: PathBuf,
    /// `TMPDIR` of the steps.
    pub tmp: PathBuf,
}

impl JobDirs {
    /// The standard layout under `root`: `source/<source_name>`, `reqs/`,
    /// `unpacked/`, `install/`, `home/`, `tmp/`. Only paths; nothing is created.
    pub fn new(root: &Path, source_name: &str) -> JobDirs {
        JobDirs {
            root: root.to_path_buf(),
            source: root.join("source").join(source_name),
            reqs: root.join("reqs"),
            unpacked: root.join("unpacked"),
            install: root.join("install"),
            home: root.join("home"),
            tmp: root.join("tmp"),
        }
    }

    /// The directories the build uid owns while steps run.
    pub fn handed(&self) -> [PathBuf; 5] {
        [
            self.reqs.clone(),
            self.unpacked.clone(),
            self.install.clone(),
            self.home.clone(),
            self.tmp.clone(),
        ]
    }
}

/// The world as a job's steps see it: its directories (at the sandbox's
/// fixed build path when builds are isolated) and the address at which they
/// reach the proxy (the job network's listener, the only address there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepView {
    /// The job's directories, as paths inside the steps.
    pub dirs: JobDirs,
    /// The proxy, as the steps reach it.
    pub proxy: SocketAddr,
}

/// Errors of a package type. [`Error::is_client`] is true when the request or
/// the package is at fault (no such package or version, a broken source, a
/// build that installed nothing), false when the proxy, its upstream or this
/// host failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The index does not know the package.
    #[error("no such package: {name}")]
    NoSuchPackage {
        /// The name asked for.
        name: String,
    },
    /// The index knows the package but has no such release file.
    #[error("{name}: no {what} for version {version}")]
    NoSuchVersion {
        /// The name asked for.
        name: String,
        /// The version (with its platform, if any).
        version: String,
        /// What was looked for (`"gem"`, `"sdist"`).
        what: &'static str,
    },
    /// The request does not fit the type (a platform for pip, a bad name).
    #[error("{0}")]
    BadRequest(String),
    /// The source cannot be used (unreadable archive, invalid pyproject.toml).
    #[error("bad source {}: {reason}", path.display())]
    BadSource {
        /// The source file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Something the type cannot build yet.
    #[error("{0}")]
    Unsupported(String),
    /// The index answered something unusable (not JSON, a link that does not
    /// go through the cache, a file whose digest differs from the index's).
    #[error("index: {0}")]
    Index(String),
    /// The build finished but the install directory holds no package.
    #[error("the build installed nothing: {0}")]
    NotInstalled(String),
    /// Fetching through the proxy failed.
    #[error(transparent)]
    Fetch(#[from] fetch::Error),
    /// Local I/O.
    #[error("{}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the request or the package is at fault (→ 4xx / a failed build
    /// to report to its submitter) rather than the server or upstream (→ 5xx).
    pub fn is_client(&self) -> bool {
        match self {
            Error::NoSuchPackage { .. }
            | Error::NoSuchVersion { .. }
            | Error::BadRequest(_)
            | Error::BadSource { .. }
            | Error::Unsupported(_)
            | Error::NotInstalled(_) => true,
            Error::Fetch(e) => e.is_client(),
            Error::Index(_) | Error::Io { .. } => false,
        }
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl Kind {
    /// `"gem"` → [`Kind::Gem`], `"pip"` → [`Kind::Pip`].
    pub fn parse(raw: &str) -> Option<Kind> {
        match raw {
            "gem" => Some(Kind::Gem),
            "pip" => Some(Kind::Pip),
            _ => None,
        }
    }

    /// `"gem"` / `"pip"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gem => "gem",
            Kind::Pip => "pip",
        }
    }

    /// The interpreter family the type builds for.
    pub fn family(self) -> Family {
        match self {
            Kind::Gem => Family::Ruby,
            Kind::Pip => Family::Python,
        }
    }

    /// The remote source's canonical file name (e.g. thin-1.2.11.gem,
    /// thin-1.2.11-x86_64-linux.gem, six-1.16.0.tar.gz) is decided by the kind;
    /// downloads it into `dest_dir` (which must exist) through the Fetcher and
    /// returns its path. Name, version and platform are separate fields, never
    /// split out of a file name; they must match `[A-Za-z0-9._+-]+` without a
    /// leading dot. The index is consulted first, so the proxy checks the file
    /// against the digest the index lists, and the digest is checked here again.
    pub async fn fetch_remote(
        &self,
        fetcher: &Fetcher,
        name: &str,
        version: &str,
        platform: Option<&str>,
        dest_dir: &Path,
    ) -> Result<PathBuf, Error> {
        for (what, value) in [
            ("name", Some(name)),
            ("version", Some(version)),
            ("platform", platform),
        ] {
            if let Some(value) = value {
                if !valid_field(value) {
                    return Err(Error::BadRequest(format!(
                        "{what} {value:?} must match [A-Za-z0-9._+-]+ without a leading dot"
                    )));
                }
            }
        }
        match self {
            Kind::Gem => gem::fetch_remote(fetcher, name, version, platform, dest_dir).await,
            Kind::Pip => pip::fetch_remote(fetcher, name, version, platform, dest_dir).await,
        }
    }

    /// Blocking. The file name a local source gets in `source/`: `SHA1.gem` for
    /// a gem (`gem install` takes an argument for a file only when it ends in
    /// `.gem`), `SHA1.tar.gz` or `SHA1.zip` for an sdist, by its first bytes (pip
    /// picks its unpacker by the extension). A file that is not of that format
    /// is [`Error::BadSource`]. `sha1` must be 40 lower-case hex digits.
    pub fn local_source_name(&self, sha1: &str, source: &Path) -> Result<String, Error> {
        if sha1.len() != 40 || !sha1.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::BadRequest(format!(
                "{sha1:?} is not a sha1 in lower-case hex"
            )));
        }
        let mut head = [0u8; 262];
        let mut file = std::fs::File::open(source).map_err(Error::io(source))?;
        let mut len = 0;
        while len < head.len() {
            match std::io::Read::read(&mut file, &mut head[len..]).map_err(Error::io(source))? {
                0 => break,
                n => len += n,
            }
        }
        let head = &head[..len];
        let extension = match self {
            // A .gem is a plain (ustar) tar.
            Kind::Gem if head.get(257..262) == Some(b"ustar") => "gem",
            Kind::Pip if head.starts_with(&[0x1f, 0x8b]) => "tar.gz",
            Kind::Pip if head.starts_with(b"PK\x03\x04") => "zip",
            _ => {
                return Err(Error::BadSource {
                    path: source.to_path_buf(),
                    reason: match self {
                        Kind::Gem => "not a .gem (tar) file".into(),
                        Kind::Pip => "not a .tar.gz or .zip sdist".into(),
                    },
                })
            }
        };
        Ok(format!("{sha1}.{extension}"))
    }

    /// Steps of the fetching stage after the source is there (network: true,
    /// the job's network: the proxy and nothing else), e.g. pip download of
    /// build-system.requires (only binary wheels) into reqs/ via the proxy's
    /// pypi mount. May be empty. Requirements that name anything but a
    /// project on the index (a URL, a path, an index option) are refused as
    /// [`Error::BadSource`].
    ///
    /// Reads the source at `dirs` (the host's paths; bounded, one member of
    /// the archive, off the async runtime) and may download into `dirs.reqs`
    /// itself, as the server: call it while `reqs/` is still the server's,
    /// before handing it to the build uid. The steps are written for `view`
    /// and run with the build uid's directories handed over.
    pub async fn fetch_steps(
        &self,
        rt: &Runtime,
        fetcher: &Fetcher,
        dirs: &JobDirs,
        view: &StepView,
    ) -> Result<Vec<Step>, Error> {
        self.check_family(rt)?;
        match self {
            Kind::Gem => gem::fetch_steps(fetcher, dirs).await,
            Kind::Pip => pip::fetch_steps(rt, fetcher, dirs, view).await,
        }
    }

    /// Blocking. Refuses a local source whose build requirements could not
    /// be fetched (see [`Kind::fetch_steps`]) before it is queued, with the
    /// same [`Error::BadSource`].
    pub fn check_source(&self, source: &Path) -> Result<(), Error> {
        match self {
            Kind::Gem => Ok(()),
            Kind::Pip => pip::check_source(source),
        }
    }

    /// The build steps (network: false) for `dirs` as the steps see them,
    /// run in order until one fails. gem: `gem install --local --no-document
    /// --ignore-dependencies --install-dir install/`; pip: the sdist unpacked
    /// into `unpacked/`, `pip install --no-deps --no-index --find-links reqs/
    /// --target install/ unpacked/` (built in place, build isolation from
    /// reqs/ only), then a step that drops the job-specific `direct_url.json`.
    pub fn build_steps(&self, rt: &Runtime, dirs: &JobDirs) -> Vec<Step> {
        match self {
            Kind::Gem => gem::build_steps(rt, dirs),
            Kind::Pip => pip::build_steps(rt, dirs),
        }
    }

    /// Blocking. Checks the install dir holds an installed package (else
    /// [`Error::NotInstalled`], a build failure with a clear message). Never
    /// follows symlinks the build may have left.
    pub fn verify_install(&self, dirs: &JobDirs) -> Result<(), Error> {
        match self {
            Kind::Gem => gem::verify_install(dirs),
            Kind::Pip => pip::verify_install(dirs),
        }
    }

    fn check_family(&self, rt: &Runtime) -> Result<(), Error> {
        if rt.family == self.family() {
            Ok(())
        } else {
            Err(Error::BadRequest(format!(
                "runtime {} is {}, {} packages need {}",
                rt.name,
                rt.family.as_str(),
                self.as_str(),
                self.family().as_str()
            )))
        }
    }
}

/// `[A-Za-z0-9._+-]+`, no leading dot, at most 200 bytes.
fn valid_field(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 200
        && !value.starts_with('.')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
}

/// The environment every step starts from: a private HOME and TMPDIR, a
/// minimal PATH (the interpreter's directory first), a UTF-8 locale and a
/// fixed SOURCE_DATE_EPOCH.
fn base_env(rt: &Runtime, dirs: &JobDirs) -> Vec<(OsString, OsString)> {
    let mut path = OsString::new();
    if let Some(dir) = rt.interpreter.parent() {
        if dir != Path::new("/usr/bin") && dir != Path::new("/bin") {
            path.push(dir);
            path.push(":");
        }
    }
    path.push("/usr/bin:/bin");
    vec![
        ("HOME".into(), dirs.home.clone().into()),
        ("TMPDIR".into(), dirs.tmp.clone().into()),
        ("PATH".into(), path),
        ("LANG".into(), "C.UTF-8".into()),
        (
            "SOURCE_DATE_EPOCH".into(),
            SOURCE_DATE_EPOCH.to_string().into(),
        ),
    ]
}

/// Entries of `dir` (not following symlinks) as (name, is a real directory).
fn entries(dir: &Path) -> Result<Vec<(String, bool)>, Error> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let is_dir = entry.file_type().map_err(Error::io(dir))?.is_dir();
        out.push((entry.file_name().to_string_lossy().into_owned(), is_dir));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for kind in [Kind::Gem, Kind::Pip] {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("npm"), None);
        assert_eq!(Kind::Gem.family(), Family::Ruby);
        assert_eq!(Kind::Pip.family(), Family::Python);
    }

    #[test]
    fn fields_are_checked() {
        for ok in ["six", "1.16.0", "x86_64-linux", "a+b", "A_b-C.1"] {
            assert!(valid_field(ok), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "a b", "ä", "..", &"a".repeat(201)] {
            assert!(!valid_field(bad), "{bad}");
        }
    }

    #[test]
    fn standard_layout() {
        let dirs = JobDirs::new(Path::new("/w/job"), "six-1.16.0.tar.gz");
        assert_eq!(dirs.source, Path::new("/w/job/source/six-1.16.0.tar.gz"));
        assert_eq!(dirs.install, Path::new("/w/job/install"));
    }
}
