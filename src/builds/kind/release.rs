//! VCAP's `PUT /load/remote/TYPE/FILE/RUNTIME` names a release by its file
//! name (`thin-1.2.11.gem`, `my-gem-1.0-x86_64-linux.gem`,
//! `python-dateutil-2.8.2.tar.gz`). Names contain dashes, so a file name is
//! never split at one dash: every dash followed by a digit is a candidate,
//! and the index decides which one names a real release.

use super::{gem, pip, Error, Kind};
use crate::builds::fetch::Fetcher;

/// A release, as separate fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// The package name.
    pub name: String,
    /// The version.
    pub version: String,
    /// A gem's platform.
    pub platform: Option<String>,
}

/// Candidate `(name, rest)` splits of `stem`: at each dash followed by a digit.
fn splits(stem: &str) -> Vec<(&str, &str)> {
    stem.char_indices()
        .filter(|&(i, c)| {
            c == '-' && i > 0 && stem[i + 1..].starts_with(|d: char| d.is_ascii_digit())
        })
        .map(|(i, _)| (&stem[..i], &stem[i + 1..]))
        .collect()
}

impl Kind {
    /// The release that `file` is the source of, asked of the index.
    pub async fn resolve_file_name(&self, fetcher: &Fetcher, file: &str) -> Result<Release, Error> {
        if !crate::builds::spec::valid_field(file) {
            return Err(Error::BadRequest(format!(
                "{file:?} is not a valid file name"
            )));
        }
        match self {
            Kind::Gem => {
                let stem = file
                    .strip_suffix(".gem")
                    .ok_or_else(|| Error::BadRequest(format!("{file:?} does not end in .gem")))?;
                for (name, rest) in splits(stem) {
                    match gem::release_in_info(fetcher, name, rest).await {
                        Ok(Some((version, platform))) => {
                            return Ok(Release {
                                name: name.to_string(),
                                version,
                                platform,
                            })
                        }
                        Ok(None) | Err(Error::NoSuchPackage { .. }) => continue,
                        Err(err) => return Err(err),
                    }
                }
                Err(Error::NoSuchPackage {
                    name: file.to_string(),
                })
            }
            Kind::Pip => {
                let stem = [".tar.gz", ".zip"]
                    .iter()
                    .find_map(|ext| file.strip_suffix(ext))
                    .ok_or_else(|| {
                        Error::BadRequest(format!("{file:?} is not a .tar.gz or .zip sdist"))
                    })?;
                for (name, version) in splits(stem) {
                    match pip::has_sdist(fetcher, name, version, file).await {
                        Ok(true) => {
                            return Ok(Release {
                                name: name.to_string(),
                                version: version.to_string(),
                                platform: None,
                            })
                        }
                        Ok(false) | Err(Error::NoSuchPackage { .. }) => continue,
                        Err(err) => return Err(err),
                    }
                }
                Err(Error::NoSuchPackage {
                    name: file.to_string(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::splits;

    #[test]
    fn every_dash_before_a_digit_is_a_candidate() {
        assert_eq!(splits("thin-1.2.11"), vec![("thin", "1.2.11")]);
        assert_eq!(
            splits("my-gem2-1.0-x86_64-linux"),
            vec![("my-gem2", "1.0-x86_64-linux")]
        );
        assert_eq!(splits("a-1-2"), vec![("a", "1-2"), ("a-1", "2")]);
        assert!(splits("-1").is_empty());
    }
}
