//! What a client asked to have built, validated once: `BuildRequest` is the
//! JSON as sent, `Spec` the checked value the queue works with. Owns the
//! field rules (`[A-Za-z0-9._+-]+`, no leading dot), the artifact names
//! (`NAME-VERSION[-PLATFORM]@RUNTIME.tgz`, `SHA1@RUNTIME.tgz`) and the key
//! that makes identical requests join one job. Pure: no I/O.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The body of `POST /api/v1/builds`, before validation. Unknown fields are
/// refused so that a misspelt field never silently means its default.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildRequest {
    /// `remote` (fetched through the cache) or `local` (handed in).
    pub location: String,
    /// The package type: `gem` or `pip`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Remote: the package name. Local: the SHA1 of the source file.
    pub name: String,
    /// Remote: the version. Not used for local sources.
    #[serde(default)]
    pub version: Option<String>,
    /// Remote gems only: the platform (`x86_64-linux`).
    #[serde(default)]
    pub platform: Option<String>,
    /// A runtime name the operator configured.
    pub runtime: String,
    /// Local: the random name of the file in the public inbox.
    #[serde(default)]
    pub inbox: Option<String>,
    /// Local: the id an HTTP upload (`PUT /api/v1/inbox/SHA1`) returned.
    #[serde(default)]
    pub upload: Option<String>,
}

/// Where the source comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    /// Fetched through the cache from the configured upstream.
    Remote,
    /// Handed in by a client through the inbox or an upload.
    Local,
}

impl Location {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Location::Remote => "remote",
            Location::Local => "local",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Location> {
        match s {
            "remote" => Some(Location::Remote),
            "local" => Some(Location::Local),
            _ => None,
        }
    }
}

/// Which source a job builds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "location", rename_all = "lowercase")]
pub enum Source {
    /// A named release on the upstream index.
    Remote {
        /// The package name as the index spells it.
        name: String,
        /// The version.
        version: String,
        /// A gem platform, when the gem has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        platform: Option<String>,
    },
    /// A file a client handed in, named by its content.
    Local {
        /// SHA1 of the file's bytes, lowercase hex.
        sha1: String,
    },
}

/// A validated build request: what to build, for which runtime.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// The package type (`gem`, `pip`), as `kind::Kind::parse` accepts it.
    #[serde(rename = "type")]
    pub kind: String,
    /// The runtime's name.
    pub runtime: String,
    /// The source.
    pub source: Source,
}

/// Why a request is refused; every variant is the client's fault (400).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A field breaks the character rules.
    #[error("{field}: {value:?} is not a valid value (allowed: A-Z a-z 0-9 . _ + -, 1 to 128 characters, no leading dot)")]
    BadField {
        /// The field's name.
        field: &'static str,
        /// What was sent.
        value: String,
    },
    /// `location` is neither `remote` nor `local`.
    #[error("location must be \"remote\" or \"local\", not {0:?}")]
    BadLocation(String),
    /// A field the location needs is missing.
    #[error("a {location} build needs the field {field:?}")]
    Missing {
        /// `remote` or `local`.
        location: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// A field the location does not use was sent.
    #[error("a {location} build does not take the field {field:?}")]
    Unexpected {
        /// `remote` or `local`.
        location: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A local source's name is not a SHA1.
    #[error("a local build's name is the SHA1 of the source (40 lowercase hex digits), not {0:?}")]
    BadSha1(String),
}

/// True when `s` may be a name, version, platform or runtime (defined with
/// the build options, which check `--runtime` names by the same rule).
pub use crate::config::valid_field;

/// True for 40 lowercase hex digits.
pub fn valid_sha1(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn field(name: &'static str, value: &str) -> Result<String, Error> {
    if valid_field(value) {
        Ok(value.to_string())
    } else {
        Err(Error::BadField {
            field: name,
            value: value.chars().take(200).collect(),
        })
    }
}

impl BuildRequest {
    /// Checks every field and returns the spec, plus the local handle
    /// (`inbox` entry or `upload` id) for a local source.
    pub fn validate(&self) -> Result<(Spec, Option<LocalHandle>), Error> {
        let kind = field("type", &self.kind)?;
        let runtime = field("runtime", &self.runtime)?;
        let location = Location::parse(&self.location)
            .ok_or_else(|| Error::BadLocation(self.location.chars().take(64).collect()))?;
        let (source, handle) = match location {
            Location::Remote => {
                for (name, present) in [
                    ("inbox", self.inbox.is_some()),
                    ("upload", self.upload.is_some()),
                ] {
                    if present {
                        return Err(Error::Unexpected {
                            location: "remote",
                            field: name,
                        });
                    }
                }
                let version = self.version.as_deref().ok_or(Error::Missing {
                    location: "remote",
                    field: "version",
                })?;
                let source = Source::Remote {
                    name: field("name", &self.name)?,
                    version: field("version", version)?,
                    platform: self
                        .platform
                        .as_deref()
                        .map(|p| field("platform", p))
                        .transpose()?,
                };
                (source, None)
            }
            Location::Local => {
                for (name, present) in [
                    ("version", self.version.is_some()),
                    ("platform", self.platform.is_some()),
                ] {
                    if present {
                        return Err(Error::Unexpected {
                            location: "local",
                            field: name,
                        });
                    }
                }
                if !valid_sha1(&self.name) {
                    return Err(Error::BadSha1(self.name.chars().take(64).collect()));
                }
                let handle = match (&self.inbox, &self.upload) {
                    (Some(entry), None) => LocalHandle::Inbox(field("inbox", entry)?),
                    (None, Some(id)) => LocalHandle::Upload(field("upload", id)?),
                    (None, None) => {
                        return Err(Error::Missing {
                            location: "local",
                            field: "inbox",
                        })
                    }
                    (Some(_), Some(_)) => {
                        return Err(Error::Unexpected {
                            location: "local",
                            field: "upload",
                        })
                    }
                };
                (
                    Source::Local {
                        sha1: self.name.clone(),
                    },
                    Some(handle),
                )
            }
        };
        Ok((
            Spec {
                kind,
                runtime,
                source,
            },
            handle,
        ))
    }
}

/// Where a local source waits to be taken in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalHandle {
    /// A file in the public inbox, under the client's random name.
    Inbox(String),
    /// An upload made over HTTP.
    Upload(String),
}

/// PEP 503 normalisation: runs of `-`, `_`, `.` become one `-`, lowercase.
pub fn normalize_python_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
            continue;
        }
        if sep && !out.is_empty() {
            out.push('-');
        }
        sep = false;
        out.extend(c.to_lowercase());
    }
    out
}

impl Spec {
    /// The package's part of the artifact name: `NAME-VERSION[-PLATFORM]`
    /// (pip names PEP 503-normalised, so every spelling shares one artifact)
    /// or the SHA1.
    pub fn stem(&self) -> String {
        match &self.source {
            Source::Remote {
                name,
                version,
                platform,
            } => {
                let name = if self.kind == "pip" {
                    normalize_python_name(name)
                } else {
                    name.clone()
                };
                match platform {
                    Some(platform) => format!("{name}-{version}-{platform}"),
                    None => format!("{name}-{version}"),
                }
            }
            Source::Local { sha1 } => sha1.clone(),
        }
    }

    /// The artifact's file name. Never contains `/` and never starts with a
    /// dot, because every part passed `valid_field` or `valid_sha1`.
    pub fn artifact_name(&self) -> String {
        format!("{}@{}.tgz", self.stem(), self.runtime)
    }

    /// Identical requests share this key, and so one job.
    pub fn key(&self) -> String {
        format!("{}:{}", self.kind, self.artifact_name())
    }

    /// `remote` or `local`.
    pub fn location(&self) -> Location {
        match self.source {
            Source::Remote { .. } => Location::Remote,
            Source::Local { .. } => Location::Local,
        }
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.artifact_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(name: &str, version: &str) -> BuildRequest {
        BuildRequest {
            location: "remote".into(),
            kind: "gem".into(),
            name: name.into(),
            version: Some(version.into()),
            platform: None,
            runtime: "ruby31".into(),
            inbox: None,
            upload: None,
        }
    }

    #[test]
    fn fields_follow_the_character_rules() {
        for ok in ["thin", "1.2.11", "x86_64-linux", "a+b", "A_b-c.d"] {
            assert!(valid_field(ok), "{ok}");
        }
        let long = "a".repeat(129);
        for bad in [
            "", ".", "..", ".hidden", "a/b", "a b", "a\0", "ä", "a@b", &long,
        ] {
            assert!(!valid_field(bad), "{bad:?}");
        }
    }

    #[test]
    fn remote_names_keep_dashes_and_platforms_apart() {
        let mut req = remote("my-gem", "1.0.0");
        req.platform = Some("x86_64-linux".into());
        let (spec, handle) = req.validate().unwrap();
        assert_eq!(handle, None);
        assert_eq!(spec.artifact_name(), "my-gem-1.0.0-x86_64-linux@ruby31.tgz");
        assert_eq!(
            spec.source,
            Source::Remote {
                name: "my-gem".into(),
                version: "1.0.0".into(),
                platform: Some("x86_64-linux".into())
            }
        );
    }

    #[test]
    fn pip_names_are_normalised_in_the_artifact() {
        let mut req = remote("Flit_Core", "3.9.0");
        req.kind = "pip".into();
        req.runtime = "py311".into();
        let (spec, _) = req.validate().unwrap();
        assert_eq!(spec.artifact_name(), "flit-core-3.9.0@py311.tgz");
        assert_eq!(normalize_python_name("a.B__c--d"), "a-b-c-d");
    }

    #[test]
    fn bad_requests_say_which_field() {
        assert!(matches!(
            remote("../etc", "1").validate(),
            Err(Error::BadField { field: "name", .. })
        ));
        assert!(matches!(
            remote("thin", ".1").validate(),
            Err(Error::BadField {
                field: "version",
                ..
            })
        ));
        let mut req = remote("thin", "1");
        req.version = None;
        assert!(matches!(req.validate(), Err(Error::Missing { .. })));
        let mut req = remote("thin", "1");
        req.location = "nearby".into();
        assert!(matches!(req.validate(), Err(Error::BadLocation(_))));
        let mut req = remote("thin", "1");
        req.inbox = Some("x".into());
        assert!(matches!(req.validate(), Err(Error::Unexpected { .. })));
    }

    #[test]
    fn local_sources_are_named_by_sha1() {
        let sha1 = "0123456789abcdef0123456789abcdef01234567";
        let req = BuildRequest {
            location: "local".into(),
            kind: "gem".into(),
            name: sha1.into(),
            version: None,
            platform: None,
            runtime: "ruby31".into(),
            inbox: Some("r4nd0m".into()),
            upload: None,
        };
        let (spec, handle) = req.validate().unwrap();
        assert_eq!(spec.artifact_name(), format!("{sha1}@ruby31.tgz"));
        assert_eq!(handle, Some(LocalHandle::Inbox("r4nd0m".into())));
        let mut bad = req.clone();
        bad.name = sha1.to_uppercase();
        assert!(matches!(bad.validate(), Err(Error::BadSha1(_))));
        let mut bad = req.clone();
        bad.inbox = None;
        assert!(matches!(bad.validate(), Err(Error::Missing { .. })));
        let mut bad = req;
        bad.version = Some("1".into());
        assert!(matches!(bad.validate(), Err(Error::Unexpected { .. })));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<BuildRequest>(
            r#"{"location":"remote","type":"gem","name":"a","version":"1","runtime":"r","extra":1}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
