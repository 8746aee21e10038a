//! `gem`: a RubyGems `.gem` fetched through the rubygems mount (`/info/NAME`
//! first, so the proxy checks the file against the compact index), installed
//! offline with the runtime's own RubyGems into `install/`: no documents, no
//! dependencies. Gems whose extensions are built with rake get a `rake` gem
//! fetched through the mount too, used instead of whatever the runtime has.

use super::{base_env, entries, Error, JobDirs};
use crate::builds::fetch::Fetcher;
use crate::builds::runtime::Runtime;
use crate::builds::step::Step;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Upper bound of an `/info/NAME` document (rubygems.org's largest are ~1 MiB).
const MAX_INFO: u64 = 16 * 1024 * 1024;
/// Upper bounds of a gem's `metadata.gz`, compressed and expanded.
const MAX_METADATA: u64 = 4 * 1024 * 1024;
const MAX_METADATA_EXPANDED: u64 = 16 * 1024 * 1024;
/// A `.gem` is a tar of three or four members; more is not a gem.
const MAX_GEM_MEMBERS: usize = 16;

/// Installs the source gem with the runtime's RubyGems: ARGV is REQS INSTALL
/// SOURCE. A `rake-*.gem` in REQS (fetched for Rakefile extensions) is
/// unpacked there and named in `ENV["rake"]`, which RubyGems' RakeBuilder
/// runs instead of looking for an installed rake.
///
/// RubyGems builds an extension with a `siteconf<date>-<pid>-<random>.rb`
/// and a `.gem.<date>-<pid>-<random>` directory and writes those names into
/// the extension's Makefile and `gem_make.out`, which are installed: here
/// temporary names are numbered instead (`siteconf0.rb`, `.gem.0`; the
/// exclusive create still picks the next number on a clash), so that two
/// builds install the same files.
const INSTALL_SCRIPT: &str = r##"
require "tmpdir"
class << Dir::Tmpname
  def create(basename, tmpdir = nil, max_try: nil, **opts)
    origdir = tmpdir
    tmpdir ||= self.tmpdir
    prefix, suffix = basename
    prefix = String.try_convert(prefix) or raise ArgumentError, "unexpected prefix: #{prefix.inspect}"
    prefix = prefix.delete(Dir::Tmpname::UNUSABLE_CHARS)
    suffix &&= (String.try_convert(suffix) or raise ArgumentError, "unexpected suffix: #{suffix.inspect}")
    suffix &&= suffix.delete(Dir::Tmpname::UNUSABLE_CHARS)
    n = 0
    begin
      path = File.join(tmpdir, "#{prefix}#{n}#{suffix}")
      yield(path, n, opts, origdir)
    rescue Errno::EEXIST
      n += 1
      retry if !max_try or n < max_try
      raise "cannot make a temporary name from #{basename.inspect} in #{tmpdir}"
    end
    path
  end
end
reqs, install, source = ARGV
rake = Dir.glob(File.join(reqs, "rake-*.gem")).max
if rake
  require "fileutils"
  require "rubygems/package"
  require "shellwords"
  package = Gem::Package.new(rake)
  dir = File.join(reqs, "rake")
  package.extract_files(dir)
  exe = File.join(dir, package.spec.bindir, "rake")
  ENV["rake"] = [Gem.ruby, "-I", File.join(dir, "lib"), exe].shelljoin
end
require "rubygems/gem_runner"
begin
  Gem::GemRunner.new.run(["install", "--local", "--no-document", "--ignore-dependencies",
                          "--install-dir", install, "--bindir", File.join(install, "bin"), source])
rescue Gem::SystemExitException => e
  exit e.exit_code
end
"##;

pub(super) async fn fetch_remote(
    fetcher: &Fetcher,
    name: &str,
    version: &str,
    platform: Option<&str>,
    dest_dir: &Path,
) -> Result<PathBuf, Error> {
    let mount = fetcher.rubygems_mount()?;
    // `ruby` is the platform of a gem without one: no suffix in its file name.
    let token = match platform.filter(|p| *p != "ruby") {
        Some(platform) => format!("{version}-{platform}"),
        None => version.to_string(),
    };
    let info = info(fetcher, mount, name).await?;
    if !listed(&info, &token) {
        return Err(Error::NoSuchVersion {
            name: name.to_string(),
            version: token,
            what: "gem",
        });
    }
    let file_name = format!("{name}-{token}.gem");
    fetch_gem(fetcher, mount, name, &info, &file_name, dest_dir).await
}

/// Whether `/info/NAME` lists `token` (`VERSION[-PLATFORM]`) as a release;
/// then its version and platform. A version never holds a dash, so the
/// first dash of a listed token starts its platform.
pub(super) async fn release_in_info(
    fetcher: &Fetcher,
    name: &str,
    token: &str,
) -> Result<Option<(String, Option<String>)>, Error> {
    let mount = fetcher.rubygems_mount()?;
    let info = info(fetcher, mount, name).await?;
    if !listed(&info, token) {
        return Ok(None);
    }
    Ok(Some(match token.split_once('-') {
        Some((version, platform)) => (version.to_string(), Some(platform.to_string())),
        None => (token.to_string(), None),
    }))
}

pub(super) async fn fetch_steps(fetcher: &Fetcher, dirs: &JobDirs) -> Result<Vec<Step>, Error> {
    let source = dirs.source.clone();
    let extensions = tokio::task::spawn_blocking(move || extensions(&source))
        .await
        .map_err(|e| Error::Io {
            path: dirs.source.clone(),
            source: std::io::Error::other(e),
        })??;
    if extensions.iter().any(|e| built_with_rake(e)) {
        fetch_rake(fetcher, &dirs.reqs).await?;
    }
    // Everything is fetched here, by the server: no step needs the network.
    Ok(Vec::new())
}

pub(super) fn build_steps(rt: &Runtime, dirs: &JobDirs) -> Vec<Step> {
    let args: Vec<OsString> = vec![
        "-e".into(),
        INSTALL_SCRIPT.into(),
        "--".into(),
        dirs.reqs.clone().into(),
        dirs.install.clone().into(),
        dirs.source.clone().into(),
    ];
    vec![Step {
        program: rt.interpreter.clone(),
        args,
        env: base_env(rt, dirs),
        cwd: dirs.tmp.clone(),
        network: false,
        job: None,
    }]
}

pub(super) fn verify_install(dirs: &JobDirs) -> Result<(), Error> {
    let specs = dirs.install.join("specifications");
    let gems = dirs.install.join("gems");
    let missing = || {
        Error::NotInstalled(format!(
            "no gem in {} (specifications/NAME.gemspec with gems/NAME/)",
            dirs.install.display()
        ))
    };
    if !is_real_dir(&specs) || !is_real_dir(&gems) {
        return Err(missing());
    }
    let installed = entries(&gems)?;
    for (name, is_dir) in entries(&specs)? {
        let Some(stem) = name.strip_suffix(".gemspec") else {
            continue;
        };
        let spec_is_file = std::fs::symlink_metadata(specs.join(&name))
            .map(|m| m.is_file())
            .unwrap_or(false);
        if !is_dir && spec_is_file && installed.iter().any(|(n, d)| n == stem && *d) {
            return Ok(());
        }
    }
    Err(missing())
}

fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .map(|m| m.is_dir())
        .unwrap_or(false)
}

/// `/info/NAME` through the proxy; 404 means no such gem.
async fn info(fetcher: &Fetcher, mount: &str, name: &str) -> Result<String, Error> {
    match fetcher
        .get_bytes(&format!("/{mount}/info/{name}"), None, MAX_INFO)
        .await
    {
        Ok(body) => Ok(String::from_utf8_lossy(&body).into_owned()),
        Err(e) if e.is_not_found() => Err(Error::NoSuchPackage {
            name: name.to_string(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Downloads `/gems/FILE` (after `/info/NAME` was fetched, so the proxy checks
/// it) and checks it against the `/info` checksum here too.
async fn fetch_gem(
    fetcher: &Fetcher,
    mount: &str,
    name: &str,
    info: &str,
    file_name: &str,
    dest_dir: &Path,
) -> Result<PathBuf, Error> {
    let dest = dest_dir.join(file_name);
    let got = fetcher
        .download(
            &format!("/{mount}/gems/{file_name}"),
            &dest,
            fetcher.max_source(),
        )
        .await?;
    if let Some(expected) = crate::mount::rubygems::checksum_for(name, info, file_name) {
        if got.sha256 != expected {
            let _ = tokio::fs::remove_file(&dest).await;
            return Err(Error::Index(format!(
                "{file_name} has sha256 {}, /info/{name} lists {expected}",
                got.sha256
            )));
        }
    }
    Ok(dest)
}

/// Whether an `/info` line's `VERSION[-PLATFORM]` field is exactly `token`.
fn listed(info: &str, token: &str) -> bool {
    info.lines()
        .filter_map(|line| line.split_once(' ').map(|(field, _)| field))
        .any(|field| field == token)
}

/// The newest release without a platform in an `/info` document (versions
/// with letters are prereleases).
fn newest_release(info: &str) -> Option<&str> {
    info.lines()
        .filter_map(|line| line.split_once(' ').map(|(field, _)| field))
        .filter_map(|field| {
            let segments: Option<Vec<u64>> = field.split('.').map(|s| s.parse().ok()).collect();
            Some((segments?, field))
        })
        .max()
        .map(|(_, field)| field)
}

/// Whether RubyGems builds this extension with rake (its builder choice in
/// `Gem::Ext::Builder#builder_for`: extconf, configure, then rakefile/mkrf_conf).
fn built_with_rake(extension: &str) -> bool {
    let lower = extension.to_ascii_lowercase();
    !extension.contains("extconf")
        && !extension.contains("configure")
        && (lower.contains("rakefile") || lower.contains("mkrf_conf"))
}

/// Fetches the newest `rake` release into `reqs` (`reqs/rake-VERSION.gem`).
async fn fetch_rake(fetcher: &Fetcher, reqs: &Path) -> Result<(), Error> {
    let mount = fetcher.rubygems_mount()?;
    let unsupported = |why: &str| {
        Error::Unsupported(format!(
            "this gem's extension is built with rake, and {why}"
        ))
    };
    let info = match info(fetcher, mount, "rake").await {
        Err(Error::NoSuchPackage { .. }) => {
            return Err(unsupported("the rubygems mount has no rake gem"))
        }
        other => other?,
    };
    let Some(version) = newest_release(&info) else {
        return Err(unsupported("the rubygems mount lists no rake release"));
    };
    fetch_gem(
        fetcher,
        mount,
        "rake",
        &info,
        &format!("rake-{version}.gem"),
        reqs,
    )
    .await?;
    Ok(())
}

/// Blocking. The `extensions` of a `.gem`'s specification: reads only the
/// `metadata.gz` member (bounded) of the untrusted archive.
fn extensions(gem: &Path) -> Result<Vec<String>, Error> {
    let bad = |reason: String| Error::BadSource {
        path: gem.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(gem).map_err(Error::io(gem))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a gem (tar): {e}")))?;
    for entry in entries.take(MAX_GEM_MEMBERS) {
        let entry = entry.map_err(|e| bad(format!("not a gem (tar): {e}")))?;
        if entry.path_bytes().as_ref() != b"metadata.gz" {
            continue;
        }
        if !entry.header().entry_type().is_file() || entry.size() > MAX_METADATA {
            return Err(bad("metadata.gz is not a small regular file".into()));
        }
        let mut yaml = String::new();
        flate2::read::GzDecoder::new(entry)
            .take(MAX_METADATA_EXPANDED)
            .read_to_string(&mut yaml)
            .map_err(|e| bad(format!("metadata.gz: {e}")))?;
        return Ok(yaml_list(&yaml, "extensions"));
    }
    Err(bad("no metadata.gz: not a gem".into()))
}

/// A top-level list of strings in a gemspec's YAML, as Psych writes it
/// (`key:` then `- item` lines, or `key: []`).
fn yaml_list(yaml: &str, key: &str) -> Vec<String> {
    let mut lines = yaml.lines().skip_while(|line| {
        line.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(':'))
            .is_none_or(|rest| !rest.trim().is_empty())
    });
    if lines.next().is_none() {
        return Vec::new();
    }
    lines
        .map_while(|line| line.strip_prefix("- "))
        .map(|item| {
            let item = item.trim();
            item.strip_prefix('"')
                .and_then(|i| i.strip_suffix('"'))
                .or_else(|| item.strip_prefix('\'').and_then(|i| i.strip_suffix('\'')))
                .unwrap_or(item)
                .to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "---\n\
        1.0.0 |checksum:aaaa\n\
        1.0.0-x86_64-linux |checksum:bbbb\n\
        1.1.0.rc1 |checksum:cccc\n\
        13.0.6 |checksum:dddd\n\
        2.0.0-java dep:>= 1|checksum:eeee\n";

    #[test]
    fn versions_match_whole_fields() {
        assert!(listed(INFO, "1.0.0"));
        assert!(listed(INFO, "1.0.0-x86_64-linux"));
        assert!(listed(INFO, "2.0.0-java"));
        assert!(
            !listed(INFO, "2.0.0"),
            "a platform gem is not the plain one"
        );
        assert!(!listed(INFO, "1.0"));
        assert!(!listed(INFO, "x86_64-linux"));
        assert!(!listed(INFO, "---"));
    }

    #[test]
    fn newest_release_skips_prereleases_and_platforms() {
        assert_eq!(newest_release(INFO), Some("13.0.6"));
        assert_eq!(newest_release("---\n1.0.0.pre |\n"), None);
    }

    #[test]
    fn rake_extensions_as_rubygems_chooses_builders() {
        assert!(built_with_rake("ext/foo/Rakefile"));
        assert!(built_with_rake("ext/mkrf_conf.rb"));
        assert!(!built_with_rake("ext/foo/extconf.rb"));
        assert!(!built_with_rake("ext/rakefile/extconf.rb"));
        assert!(!built_with_rake("ext/configure"));
        assert!(!built_with_rake("ext/CMakeLists.txt"));
    }

    #[test]
    fn yaml_lists_as_psych_writes_them() {
        let yaml = "--- !ruby/object:Gem::Specification\nname: x\nextensions:\n- ext/x/extconf.rb\n- \"ext/y/Rakefile\"\nextra_rdoc_files: []\n";
        assert_eq!(
            yaml_list(yaml, "extensions"),
            vec!["ext/x/extconf.rb", "ext/y/Rakefile"]
        );
        assert!(yaml_list("extensions: []\nfiles:\n- a\n", "extensions").is_empty());
        assert!(yaml_list("name: x\n", "extensions").is_empty());
        assert!(yaml_list("extensions_x:\n- a\n", "extensions").is_empty());
    }
}
