//! The supply-chain policy's settings: `--min-age`, `--min-age-before`,
//! `--min-age-missing`, `--min-age-exempt[-file]`, `--deny-list` and the
//! test clock, parsed and checked against the mounts. The lists behind the
//! file options are read (and re-read) by `supply`, not here.

use super::{Error, Mount, Profile};
use crate::cli::SupplyArgs;
use chrono::{DateTime, NaiveDate};
use std::path::PathBuf;
use std::time::Duration;

/// What a release without a publication date counts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissingDate {
    /// Published when this cache first saw it (persisted).
    FirstSeen,
    /// Never shown.
    Deny,
    /// Always shown (as old as can be).
    Allow,
}

impl MissingDate {
    /// The option's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MissingDate::FirstSeen => "first-seen",
            MissingDate::Deny => "deny",
            MissingDate::Allow => "allow",
        }
    }
}

/// A project, or one version of it, that the age rules do not hold back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exemption {
    /// The mount it applies to; `None`: every mount.
    pub mount: Option<String>,
    /// The project as the user wrote it (matched by each ecosystem's rules).
    pub project: String,
    /// One version only; `None`: every version.
    pub version: Option<String>,
}

impl Exemption {
    /// Parses `[MOUNT=]PROJECT[@VERSION]`. A leading `@` belongs to an npm
    /// scope (`@scope/name@1.0.0`), never to a version.
    pub fn try_parse(raw: &str) -> Result<Exemption, String> {
        let raw = raw.trim();
        let (mount, rest) = match raw.split_once('=') {
            Some((mount, rest)) => (Some(mount.trim().to_string()), rest.trim()),
            None => (None, raw),
        };
        let (project, version) = match rest[1.min(rest.len())..].rfind('@') {
            Some(at) => {
                let at = at + 1.min(rest.len());
                (&rest[..at], Some(rest[at + 1..].to_string()))
            }
            None => (rest, None),
        };
        if project.is_empty() || project.contains(char::is_whitespace) {
            return Err("expected [MOUNT=]PROJECT[@VERSION]".into());
        }
        if mount.as_deref().is_some_and(str::is_empty) || version.as_deref() == Some("") {
            return Err("expected [MOUNT=]PROJECT[@VERSION]".into());
        }
        Ok(Exemption {
            mount,
            project: project.to_string(),
            version,
        })
    }
}

/// The validated policy settings. [`SupplyConfig::is_off`] when nothing was asked.
#[derive(Clone, Debug, Default)]
pub struct SupplyConfig {
    /// `--min-age DURATION`: every mount that has no value of its own.
    pub min_age: Option<Duration>,
    /// `--min-age MOUNT=DURATION`.
    pub min_age_by_mount: Vec<(String, Duration)>,
    /// `--min-age-before DATE` (Unix seconds): every mount without its own.
    pub before: Option<i64>,
    /// `--min-age-before MOUNT=DATE`.
    pub before_by_mount: Vec<(String, i64)>,
    /// `--min-age-missing`.
    pub missing: Option<MissingDate>,
    /// `--min-age-exempt` values.
    pub exempt: Vec<Exemption>,
    /// `--min-age-exempt-file` paths.
    pub exempt_files: Vec<PathBuf>,
    /// `--deny-list` paths.
    pub deny_lists: Vec<PathBuf>,
    /// The hidden test clock.
    pub clock_file: Option<PathBuf>,
}

impl SupplyConfig {
    /// Whether no policy was asked for: documents and files are then served
    /// exactly as without this feature.
    pub fn is_off(&self) -> bool {
        self.min_age.is_none()
            && self.min_age_by_mount.is_empty()
            && self.before.is_none()
            && self.before_by_mount.is_empty()
            && self.deny_lists.is_empty()
    }

    /// What a missing date counts as (default: first-seen).
    pub fn missing(&self) -> MissingDate {
        self.missing.unwrap_or(MissingDate::FirstSeen)
    }

    /// From the command line, checked against `mounts`.
    pub fn try_from_args(args: &SupplyArgs, mounts: &[Mount]) -> Result<SupplyConfig, Error> {
        let bad = |option: &'static str, value: &str, reason: &str| Error::Supply {
            option,
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let mount_named = |option: &'static str, raw: &str, name: &str| -> Result<(), Error> {
            match mounts.iter().find(|m| m.name == name) {
                Some(m) if policed(m.profile) => Ok(()),
                Some(_) => Err(bad(
                    option,
                    raw,
                    "the policy applies to pypi, rubygems, npm, cargo and go mounts only",
                )),
                None => Err(bad(option, raw, "no --mirror has that NAME")),
            }
        };
        let mut config = SupplyConfig {
            exempt_files: args.min_age_exempt_file.clone(),
            deny_lists: args.deny_list.clone(),
            clock_file: args.clock_file.clone(),
            ..SupplyConfig::default()
        };
        for raw in &args.min_age {
            let (mount, value) = split_mount(raw);
            let age = parse_age(value)
                .ok_or_else(|| bad("--min-age", raw, "expected a duration such as 7d or 36h"))?;
            match mount {
                Some(name) => {
                    mount_named("--min-age", raw, name)?;
                    config.min_age_by_mount.push((name.to_string(), age));
                }
                None => config.min_age = Some(age),
            }
        }
        for raw in &args.min_age_before {
            let (mount, value) = split_mount(raw);
            let date = parse_instant(value).ok_or_else(|| {
                bad(
                    "--min-age-before",
                    raw,
                    "expected a date (2026-01-31) or an RFC 3339 time",
                )
            })?;
            match mount {
                Some(name) => {
                    mount_named("--min-age-before", raw, name)?;
                    config.before_by_mount.push((name.to_string(), date));
                }
                None => config.before = Some(date),
            }
        }
        config.missing = Some(match args.min_age_missing.as_str() {
            "first-seen" => MissingDate::FirstSeen,
            "deny" => MissingDate::Deny,
            "allow" => MissingDate::Allow,
            other => {
                return Err(bad(
                    "--min-age-missing",
                    other,
                    "expected first-seen, deny or allow",
                ))
            }
        });
        for raw in &args.min_age_exempt {
            let exemption = Exemption::try_parse(raw)
                .map_err(|reason| bad("--min-age-exempt", raw, &reason))?;
            if let Some(name) = &exemption.mount {
                mount_named("--min-age-exempt", raw, name)?;
            }
            config.exempt.push(exemption);
        }
        Ok(config)
    }
}

/// Whether mounts of `profile` are under the policy (they publish releases).
pub fn policed(profile: Profile) -> bool {
    matches!(
        profile,
        Profile::Pypi | Profile::Rubygems | Profile::Npm | Profile::Cargo | Profile::Go
    )
}

/// `MOUNT=VALUE` or `VALUE`.
fn split_mount(raw: &str) -> (Option<&str>, &str) {
    match raw.split_once('=') {
        Some((mount, value)) => (Some(mount.trim()), value.trim()),
        None => (None, raw.trim()),
    }
}

/// `7d`, `36h`, `90m`, `1w`, `0` (humantime's units).
fn parse_age(raw: &str) -> Option<Duration> {
    if raw == "0" {
        return Some(Duration::ZERO);
    }
    humantime::parse_duration(raw).ok()
}

/// An instant as registries write them: RFC 3339 (fractional seconds and
/// offsets allowed), a bare date (midnight UTC), or Unix seconds; as Unix
/// seconds. `None` for anything else.
pub fn parse_instant(raw: &str) -> Option<i64> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.timestamp());
    }
    // RubyGems and some mirrors write a space or no zone: read it as UTC.
    let no_zone = raw.trim_end_matches('Z').replace(' ', "T");
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(&no_zone, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc().timestamp());
    }
    if let Ok(d) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp());
    }
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        return raw.parse().ok();
    }
    None
}

/// Unix seconds as an RFC 3339 UTC time (`2026-01-31T00:00:00Z`).
pub fn format_instant(secs: i64) -> String {
    DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| secs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exemptions_parse_with_scopes_and_versions() {
        let e = |mount: Option<&str>, project: &str, version: Option<&str>| Exemption {
            mount: mount.map(Into::into),
            project: project.into(),
            version: version.map(Into::into),
        };
        assert_eq!(
            Exemption::try_parse("pypi=six").unwrap(),
            e(Some("pypi"), "six", None)
        );
        assert_eq!(
            Exemption::try_parse("six@1.17.0").unwrap(),
            e(None, "six", Some("1.17.0"))
        );
        assert_eq!(
            Exemption::try_parse("npm=@scope/pkg@2.0.0").unwrap(),
            e(Some("npm"), "@scope/pkg", Some("2.0.0"))
        );
        assert_eq!(
            Exemption::try_parse("@scope/pkg").unwrap(),
            e(None, "@scope/pkg", None)
        );
        assert_eq!(
            Exemption::try_parse("go=example.com/m@v1.2.3").unwrap(),
            e(Some("go"), "example.com/m", Some("v1.2.3"))
        );
        for bad in ["", "=six", "pypi=", "six@", "a b"] {
            assert!(Exemption::try_parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn instants_parse_as_registries_write_them() {
        assert_eq!(parse_instant("1970-01-02"), Some(86_400));
        assert_eq!(parse_instant("1970-01-01T00:01:00Z"), Some(60));
        assert_eq!(parse_instant("1970-01-01T00:01:00.123456Z"), Some(60));
        assert_eq!(parse_instant("1970-01-01T01:01:00+01:00"), Some(60));
        assert_eq!(parse_instant("1970-01-01 00:01:00"), Some(60));
        assert_eq!(parse_instant("86400"), Some(86_400));
        for bad in ["", "yesterday", "2026-13-01", "-5"] {
            assert_eq!(parse_instant(bad), None, "{bad}");
        }
        assert_eq!(format_instant(86_400), "1970-01-02T00:00:00Z");
    }

    #[test]
    fn ages_take_humantime_units() {
        assert_eq!(parse_age("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("36h"), Some(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_age("0"), Some(Duration::ZERO));
        assert_eq!(parse_age("soon"), None);
    }
}
