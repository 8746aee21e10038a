//! `pip`: a Python sdist chosen from the pypi mount's PEP 691 page and fetched
//! at the page's (proxy) link, so the proxy enforces the page's sha256. Its
//! `build-system.requires` (project names and versions only: no URL, path or
//! index option) are downloaded as wheels only (no code of theirs runs
//! outside the sandbox) through the same mount, then the sdist is unpacked
//! into the job and pip builds it there and installs it offline, with build
//! isolation fed from those wheels.

use super::requires::build_requires;
use super::{base_env, entries, sdist, Error, JobDirs, StepView};
use crate::builds::fetch::Fetcher;
use crate::builds::runtime::Runtime;
use crate::builds::step::Step;
use crate::mount::pypi::normalize_name;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// PEP 691 JSON, which every pypi mount page is available as.
const PEP_691_JSON: &str = "application/vnd.pypi.simple.v1+json";
/// Upper bound of a project page (the largest on pypi.org are a few MiB).
const MAX_PAGE: u64 = 64 * 1024 * 1024;
/// Unpacks the sdist ARGV[1] (`.tar.gz` or `.zip`, told by its first bytes)
/// into the empty directory ARGV[2], as pip would (the one top-level
/// directory stripped), so that pip builds it in place, at a path that is the
/// same for every build: directories and regular files only (and symlinks
/// that stay inside), nothing outside ARGV[2], modes 0755/0644 by the
/// member's execute bit, times from the archive.
const UNPACK_SCRIPT: &str = r#"
import os, sys, tarfile, zipfile
source, dest = sys.argv[1], os.path.realpath(sys.argv[2])
def within(path):
    path = os.path.realpath(path)
    return path == dest or path.startswith(dest + os.sep)
def strip(names):
    tops = {n.lstrip("/").split("/", 1)[0] for n in names}
    leading = len(tops) == 1 and all("/" in n.lstrip("/").rstrip("/") or n.lstrip("/").rstrip("/") in tops for n in names)
    def out(name):
        name = name.lstrip("/")
        if leading:
            name = name.split("/", 1)[1] if "/" in name else ""
        return os.path.join(dest, name)
    return out
def write(path, data, executable, mtime):
    if not within(path):
        sys.exit("unsafe member: " + path)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o755 if executable else 0o644)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
with open(source, "rb") as f:
    magic = f.read(4)
if magic[:2] == b"\x1f\x8b":
    with tarfile.open(source, "r:gz") as tar:
        members = tar.getmembers()
        out = strip([m.name for m in members])
        links = []
        for m in members:
            path = out(m.name)
            if not within(path):
                sys.exit("unsafe member: " + m.name)
            if m.isdir():
                os.makedirs(path, mode=0o755, exist_ok=True)
            elif m.isfile() or m.islnk():
                write(path, tar.extractfile(m).read(), m.mode & 0o111, m.mtime)
            elif m.issym():
                links.append((path, m.linkname))
        for path, target in links:
            if within(os.path.join(os.path.dirname(path), target)) and not os.path.lexists(path):
                os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                os.symlink(target, path)
elif magic == b"PK\x03\x04":
    with zipfile.ZipFile(source) as z:
        infos = z.infolist()
        out = strip([i.filename for i in infos])
        for i in infos:
            path = out(i.filename)
            if not within(path):
                sys.exit("unsafe member: " + i.filename)
            if i.is_dir():
                os.makedirs(path, mode=0o755, exist_ok=True)
            else:
                write(path, z.read(i), (i.external_attr >> 16) & 0o111, None)
else:
    sys.exit("not a .tar.gz or .zip sdist")
"#;

/// Removes `*.dist-info/direct_url.json` (and its RECORD line) from the
/// target dir (ARGV[1]): pip records the source's `file://` URL there, a path
/// in this job's directory, which would make every artifact differ.
const NORMALIZE_SCRIPT: &str = r#"
import os, sys
target = sys.argv[1]
for name in sorted(os.listdir(target)):
    info = os.path.join(target, name)
    if not name.endswith(".dist-info") or os.path.islink(info) or not os.path.isdir(info):
        continue
    direct = os.path.join(info, "direct_url.json")
    if not os.path.lexists(direct):
        continue
    os.remove(direct)
    record = os.path.join(info, "RECORD")
    if os.path.isfile(record) and not os.path.islink(record):
        with open(record, encoding="utf-8", newline="") as f:
            lines = f.readlines()
        with open(record, "w", encoding="utf-8", newline="") as f:
            f.writelines(l for l in lines if not l.startswith(name + "/direct_url.json,"))
"#;

pub(super) async fn fetch_remote(
    fetcher: &Fetcher,
    name: &str,
    version: &str,
    platform: Option<&str>,
    dest_dir: &Path,
) -> Result<PathBuf, Error> {
    if let Some(platform) = platform {
        return Err(Error::BadRequest(format!(
            "pip packages have no platform (got {platform:?})"
        )));
    }
    let mount = fetcher.pypi_mount()?;
    let page = project_page(fetcher, name).await?;
    let Some(file) = choose_sdist(&page, name, version) else {
        return Err(Error::NoSuchVersion {
            name: name.to_string(),
            version: version.to_string(),
            what: "sdist",
        });
    };
    let path = proxy_path(mount, &file.url).ok_or_else(|| {
        Error::Index(format!(
            "{}: link {:?} does not go through the cache (is its files host configured?)",
            file.filename, file.url
        ))
    })?;
    let dest = dest_dir.join(&file.filename);
    let got = fetcher.download(&path, &dest, fetcher.max_source()).await?;
    if let Some(expected) = &file.sha256 {
        if got.sha256 != *expected {
            let _ = tokio::fs::remove_file(&dest).await;
            return Err(Error::Index(format!(
                "{} has sha256 {}, the index lists {expected}",
                file.filename, got.sha256
            )));
        }
    }
    Ok(dest)
}

/// The PEP 691 JSON page of project `name`, through the proxy.
async fn project_page(fetcher: &Fetcher, name: &str) -> Result<serde_json::Value, Error> {
    let mount = fetcher.pypi_mount()?;
    let project = normalize_name(name);
    let page = match fetcher
        .get_bytes(
            &format!("/{mount}/simple/{project}/"),
            Some(PEP_691_JSON),
            MAX_PAGE,
        )
        .await
    {
        Ok(page) => page,
        Err(e) if e.is_not_found() => {
            return Err(Error::NoSuchPackage {
                name: name.to_string(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    serde_json::from_slice(&page)
        .map_err(|e| Error::Index(format!("/{mount}/simple/{project}/ is not JSON: {e}")))
}

/// Whether the index page of `name` lists `file` as the sdist of `version`.
pub(super) async fn has_sdist(
    fetcher: &Fetcher,
    name: &str,
    version: &str,
    file: &str,
) -> Result<bool, Error> {
    let page = match project_page(fetcher, name).await {
        Ok(page) => page,
        Err(Error::NoSuchPackage { .. }) => return Ok(false),
        Err(e) => return Err(e),
    };
    Ok(choose_sdist(&page, name, version).is_some_and(|chosen| chosen.filename == file))
}

/// Blocking. The build requirements of the sdist at `source`, refused (as
/// [`Error::BadSource`]) when one names anything but a project on the index.
fn requirements_of(source: &Path) -> Result<Vec<String>, Error> {
    let pyproject = sdist::pyproject(source)?;
    build_requires(pyproject.as_deref()).map_err(|reason| Error::BadSource {
        path: source.to_path_buf(),
        reason,
    })
}

/// Blocking. See `Kind::check_source`.
pub(super) fn check_source(source: &Path) -> Result<(), Error> {
    requirements_of(source).map(drop)
}

pub(super) async fn fetch_steps(
    rt: &Runtime,
    fetcher: &Fetcher,
    dirs: &JobDirs,
    view: &StepView,
) -> Result<Vec<Step>, Error> {
    let source = dirs.source.clone();
    let requirements = tokio::task::spawn_blocking(move || requirements_of(&source))
        .await
        .map_err(|e| Error::Io {
            path: dirs.source.clone(),
            source: std::io::Error::other(e),
        })??;
    let mount = fetcher.pypi_mount()?;
    let index = format!("http://{}/{mount}/simple/", view.proxy);
    let mut args: Vec<OsString> = vec![
        "-m".into(),
        "pip".into(),
        "download".into(),
        "--only-binary=:all:".into(),
        "--dest".into(),
        view.dirs.reqs.clone().into(),
        "--index-url".into(),
        index.into(),
        "--no-cache-dir".into(),
        "--disable-pip-version-check".into(),
        "--no-input".into(),
        // The requirements come from the sdist: never options.
        "--".into(),
    ];
    args.extend(requirements.into_iter().map(OsString::from));
    Ok(vec![Step {
        program: rt.interpreter.clone(),
        args,
        env: pip_env(rt, &view.dirs),
        cwd: view.dirs.tmp.clone(),
        network: true,
        job: None,
    }])
}

pub(super) fn build_steps(rt: &Runtime, dirs: &JobDirs) -> Vec<Step> {
    let unpack: Vec<OsString> = vec![
        "-I".into(),
        "-c".into(),
        UNPACK_SCRIPT.into(),
        dirs.source.clone().into(),
        dirs.unpacked.clone().into(),
    ];
    // A directory, not the archive: pip (21.3 and later) builds it in place
    // rather than in a temporary directory of a random name.
    let install: Vec<OsString> = vec![
        "-m".into(),
        "pip".into(),
        "install".into(),
        "--no-deps".into(),
        "--no-index".into(),
        "--find-links".into(),
        dirs.reqs.clone().into(),
        "--target".into(),
        dirs.install.clone().into(),
        "--no-compile".into(),
        "--no-cache-dir".into(),
        "--disable-pip-version-check".into(),
        "--no-input".into(),
        dirs.unpacked.clone().into(),
    ];
    let normalize: Vec<OsString> = vec![
        "-I".into(),
        "-c".into(),
        NORMALIZE_SCRIPT.into(),
        dirs.install.clone().into(),
    ];
    [unpack, install, normalize]
        .into_iter()
        .map(|args| Step {
            program: rt.interpreter.clone(),
            args,
            env: pip_env(rt, dirs),
            cwd: dirs.tmp.clone(),
            network: false,
            job: None,
        })
        .collect()
}

pub(super) fn verify_install(dirs: &JobDirs) -> Result<(), Error> {
    let found = entries(&dirs.install)?.into_iter().any(|(name, is_dir)| {
        is_dir
            && name.ends_with(".dist-info")
            && std::fs::symlink_metadata(dirs.install.join(&name).join("METADATA"))
                .map(|m| m.is_file())
                .unwrap_or(false)
    });
    if found {
        Ok(())
    } else {
        Err(Error::NotInstalled(format!(
            "no *.dist-info with METADATA in {}",
            dirs.install.display()
        )))
    }
}

/// pip's environment: no configuration files (`PIP_CONFIG_FILE=/dev/null`
/// disables them all, /etc/pip.conf included), no prompts, no bytecode.
fn pip_env(rt: &Runtime, dirs: &JobDirs) -> Vec<(OsString, OsString)> {
    let mut env = base_env(rt, dirs);
    env.extend([
        ("PIP_CONFIG_FILE".into(), "/dev/null".into()),
        ("PIP_NO_INPUT".into(), "1".into()),
        ("PIP_ROOT_USER_ACTION".into(), "ignore".into()),
        ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
    ]);
    env
}

/// A release file on a project page.
#[derive(Debug, PartialEq, Eq)]
struct PageFile {
    filename: String,
    url: String,
    sha256: Option<String>,
}

/// The sdist of `version` on a PEP 691 page: a `.tar.gz` (else a `.zip`) whose
/// name is `PROJECT-VERSION.EXT` with PROJECT normalising (PEP 503) to `name`'s
/// normal form — legacy spellings like `zope.interface-5.0.tar.gz` included —
/// and VERSION exactly `version` (which begins with a digit). The file name is never split at a dash: the
/// version is stripped from its end and the rest compared whole.
fn choose_sdist(page: &serde_json::Value, name: &str, version: &str) -> Option<PageFile> {
    let project = normalize_name(name);
    // PEP 440 versions begin with a digit; this also keeps a name's dashed
    // tail (`python` + `dateutil-2.8.2`) from passing for a version.
    if !version.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let files = page.get("files")?.as_array()?;
    let mut best: Option<(bool, PageFile)> = None;
    for file in files {
        let (Some(filename), Some(url)) = (
            file.get("filename").and_then(|f| f.as_str()),
            file.get("url").and_then(|u| u.as_str()),
        ) else {
            continue;
        };
        let (stem, tar) = if let Some(stem) = filename.strip_suffix(".tar.gz") {
            (stem, true)
        } else if let Some(stem) = filename.strip_suffix(".zip") {
            (stem, false)
        } else {
            continue;
        };
        let Some(prefix) = stem
            .strip_suffix(version)
            .and_then(|rest| rest.strip_suffix('-'))
        else {
            continue;
        };
        if normalize_name(prefix) != project || !super::valid_field(filename) {
            continue;
        }
        if best.as_ref().is_some_and(|(is_tar, _)| *is_tar || !tar) {
            continue;
        }
        let sha256 = file
            .get("hashes")
            .and_then(|h| h.get("sha256"))
            .and_then(|h| h.as_str())
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_ascii_lowercase);
        best = Some((
            tar,
            PageFile {
                filename: filename.to_string(),
                url: url.to_string(),
                sha256,
            },
        ));
    }
    best.map(|(_, file)| file)
}

/// The proxy path of a page link: the mount rewrites links it can serve to
/// root-relative `/MOUNT/...` paths; anything else does not go through the cache.
fn proxy_path(mount: &str, url: &str) -> Option<String> {
    let path = url.split('#').next().unwrap_or(url);
    let inside = path
        .strip_prefix('/')?
        .strip_prefix(mount)?
        .strip_prefix('/')?;
    (!inside.is_empty() && !path.starts_with("//")).then(|| path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page() -> serde_json::Value {
        let sha = "A".repeat(64);
        json!({"files": [
            {"filename": "six-1.16.0-py2.py3-none-any.whl", "url": "/pypi/files/h/six-1.16.0-py2.py3-none-any.whl", "hashes": {}},
            {"filename": "six-1.16.0.zip", "url": "/pypi/files/h/six-1.16.0.zip", "hashes": {}},
            {"filename": "six-1.16.0.tar.gz", "url": "/pypi/files/h/six-1.16.0.tar.gz#sha256=x", "hashes": {"sha256": sha}},
            {"filename": "six-1.16.0.1.tar.gz", "url": "/pypi/files/h/six-1.16.0.1.tar.gz", "hashes": {}},
            {"filename": "Zope.Interface-5.0.tar.gz", "url": "/pypi/z.tar.gz", "hashes": {}},
            {"filename": "python-dateutil-2.8.2.tar.gz", "url": "/pypi/d.tar.gz", "hashes": {}},
            {"filename": "flit_core-3.9.0.zip", "url": "/pypi/f.zip"},
            {"filename": "sixer-1.16.0.tar.gz", "url": "/pypi/sixer.tar.gz", "hashes": {}},
        ]})
    }

    #[test]
    fn the_sdist_is_chosen_by_whole_name_and_version() {
        let six = choose_sdist(&page(), "six", "1.16.0").unwrap();
        assert_eq!(six.filename, "six-1.16.0.tar.gz", "tar.gz before zip");
        assert_eq!(six.sha256, Some("a".repeat(64)));
        assert_eq!(
            choose_sdist(&page(), "Six", "1.16.0.1").unwrap().filename,
            "six-1.16.0.1.tar.gz"
        );
        assert_eq!(
            choose_sdist(&page(), "zope-interface", "5.0")
                .unwrap()
                .filename,
            "Zope.Interface-5.0.tar.gz"
        );
        assert_eq!(
            choose_sdist(&page(), "python_dateutil", "2.8.2")
                .unwrap()
                .filename,
            "python-dateutil-2.8.2.tar.gz"
        );
        assert_eq!(
            choose_sdist(&page(), "flit-core", "3.9.0")
                .unwrap()
                .filename,
            "flit_core-3.9.0.zip"
        );
        assert_eq!(choose_sdist(&page(), "six", "1.16"), None);
        assert_eq!(choose_sdist(&page(), "six", "0-1.16.0"), None);
        assert_eq!(choose_sdist(&page(), "python", "dateutil-2.8.2"), None);
        assert_eq!(choose_sdist(&json!({}), "six", "1.16.0"), None);
    }

    #[test]
    fn only_links_through_the_mount_are_followed() {
        assert_eq!(
            proxy_path("pypi", "/pypi/files/h:1/p/six.tar.gz#sha256=ab").as_deref(),
            Some("/pypi/files/h:1/p/six.tar.gz")
        );
        for bad in [
            "https://files.example/p/six.tar.gz",
            "//pypi/x",
            "/other/x",
            "/pypi/",
            "/pypix/a",
            "../../p/six.tar.gz",
        ] {
            assert_eq!(proxy_path("pypi", bad), None, "{bad}");
        }
    }
}
