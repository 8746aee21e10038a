//! The supply-chain policy: which releases clients may see in index
//! documents and fetch — held back while younger than `--min-age`, after a
//! `--min-age-before` cutoff, or without a date (`--min-age-missing`), and
//! refused outright when a deny list names them. Owns the judgement
//! ([`Supply::judge`]), the lists and their reloading, the clock, the
//! first-seen record and the record of refusals; not the documents (the
//! filters are pure functions in `mount::filter`) nor HTTP (the proxy asks
//! and answers). Distinct from `proxy::policy`, the caching rules.

mod clock;
pub mod deny;
mod first_seen;
mod fleet;
mod record;
mod reload;
pub mod version;

pub use clock::Clock;
pub use deny::DenyList;
pub use first_seen::FirstSeen;
pub use fleet::{Fleet, LOOKUP_BOUND};
pub use record::{HeldRow, Record, Refused};

use crate::config::{
    supply::{format_instant, policed},
    Exemption, MissingDate, Mount, Profile, SupplyConfig,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// An ecosystem, as deny lists name them (OSV's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ecosystem {
    /// PyPI.
    Pypi,
    /// RubyGems.
    Rubygems,
    /// npm.
    Npm,
    /// crates.io (Cargo).
    Crates,
    /// Go modules.
    Go,
}

impl Ecosystem {
    /// The ecosystem of a mount's profile, if its releases are policed.
    pub fn of(profile: Profile) -> Option<Ecosystem> {
        Some(match profile {
            Profile::Pypi => Ecosystem::Pypi,
            Profile::Rubygems => Ecosystem::Rubygems,
            Profile::Npm => Ecosystem::Npm,
            Profile::Cargo => Ecosystem::Crates,
            Profile::Go => Ecosystem::Go,
            Profile::Gentoo | Profile::Generic => return None,
        })
    }

    /// OSV's name (`PyPI`, `crates.io`) or a profile's (`pypi`, `cargo`), any case.
    pub fn parse(raw: &str) -> Option<Ecosystem> {
        Some(match raw.to_ascii_lowercase().as_str() {
            "pypi" => Ecosystem::Pypi,
            "rubygems" | "gem" | "gems" => Ecosystem::Rubygems,
            "npm" => Ecosystem::Npm,
            "crates.io" | "crates" | "cargo" => Ecosystem::Crates,
            "go" | "golang" => Ecosystem::Go,
            _ => return None,
        })
    }

    /// OSV's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Ecosystem::Pypi => "PyPI",
            Ecosystem::Rubygems => "RubyGems",
            Ecosystem::Npm => "npm",
            Ecosystem::Crates => "crates.io",
            Ecosystem::Go => "Go",
        }
    }

    /// A project name as the ecosystem compares them: PEP 503 for PyPI,
    /// case and `-`/`_` folded for crates.io, exact elsewhere.
    pub fn normalize(self, name: &str) -> String {
        match self {
            Ecosystem::Pypi => crate::mount::pypi::normalize_name(name),
            Ecosystem::Crates => name.to_ascii_lowercase().replace('_', "-"),
            Ecosystem::Rubygems | Ecosystem::Npm | Ecosystem::Go => name.to_string(),
        }
    }
}

/// Why a release is not shown or served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// Younger than the minimum age.
    MinAge,
    /// Published after the cutoff date.
    Cutoff,
    /// No publication date, and `--min-age-missing deny`.
    NoDate,
    /// Named by a deny list.
    DenyList,
}

impl Rule {
    /// For logs, labels and the status page.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::MinAge => "min-age",
            Rule::Cutoff => "min-age-before",
            Rule::NoDate => "no-date",
            Rule::DenyList => "deny-list",
        }
    }
}

/// A release as a document lists it: a version (or one file of it) of a project.
#[derive(Clone, Copy, Debug)]
pub struct Release<'a> {
    /// The project as the document spells it.
    pub project: &'a str,
    /// The version.
    pub version: &'a str,
    /// When it was published (Unix seconds), if the upstream says.
    pub published: Option<i64>,
}

/// Why one release is held back, and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// Which rule.
    pub rule: Rule,
    /// When it becomes visible (Unix seconds); `None`: not by waiting.
    pub until: Option<i64>,
    /// The date the rule used (upstream's, or first seen here).
    pub published: Option<i64>,
    /// The deny entry's source, or the age limit, for people.
    pub detail: String,
}

impl Hold {
    /// A sentence saying why, and when it becomes available.
    pub fn describe(&self) -> String {
        let published = self
            .published
            .map(|p| format!("published {}", format_instant(p)))
            .unwrap_or_else(|| "no publication date".into());
        match self.rule {
            Rule::DenyList => format!("it is on a deny list ({}); it will not become available", self.detail),
            Rule::NoDate => "its upstream gives no publication date and --min-age-missing is deny; it will not become available".to_string(),
            Rule::Cutoff => format!(
                "{published}, after the cutoff {}; it will not become available",
                self.detail
            ),
            Rule::MinAge => format!(
                "{published}, younger than the minimum age {}; available from {}",
                self.detail,
                self.until.map(format_instant).unwrap_or_default()
            ),
        }
    }
}

/// The outcome of judging one release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Shown and served.
    Allow,
    /// Hidden from documents, its files refused.
    Hold(Hold),
}

/// The lists that change while running.
#[derive(Debug, Default)]
pub struct Lists {
    /// The deny lists, merged.
    pub deny: DenyList,
    /// `--min-age-exempt` and the exempt files' entries.
    pub exempt: Vec<Exemption>,
}

/// The policy of one running proxy. Share behind an `Arc`.
#[derive(Debug)]
pub struct Supply {
    config: SupplyConfig,
    lists: RwLock<Arc<Lists>>,
    generation: AtomicU64,
    clock: Clock,
    first_seen: Arc<FirstSeen>,
    /// The watched files as they were when the lists were first read.
    opened: (reload::Fingerprint, reload::Fingerprint),
    /// Refusals and what is held back, for the log and the status page.
    pub record: Record,
}

impl Supply {
    /// Reads the lists, the clock file and the first-seen record at
    /// `first_seen` (blocking: call at start-up off the runtime), sharing
    /// first-seen times with `fleet` when given. Fails on a list or clock
    /// file that cannot be read at all.
    pub fn open(
        config: &SupplyConfig,
        first_seen: &std::path::Path,
        fleet: Option<Fleet>,
    ) -> Result<Supply, String> {
        let clock = match &config.clock_file {
            Some(file) => Clock::from_file(file)?,
            None => Clock::system(),
        };
        let mut first_seen = FirstSeen::open(first_seen)
            .map_err(|e| format!("reading the first-seen record: {e}"))?;
        if let Some(fleet) = fleet {
            first_seen = first_seen.with_fleet(fleet);
        }
        let (list_files, clock_files) = reload::watched(config);
        let opened = (
            reload::fingerprint(&list_files),
            reload::fingerprint(&clock_files),
        );
        let lists = reload::read_lists(config).map_err(|e| e.to_string())?;
        Ok(Supply {
            opened,
            config: config.clone(),
            lists: RwLock::new(Arc::new(lists)),
            generation: AtomicU64::new(1),
            clock,
            first_seen: Arc::new(first_seen),
            record: Record::default(),
        })
    }

    /// A policy that holds nothing (no options given).
    pub fn off() -> Supply {
        Supply {
            config: SupplyConfig::default(),
            lists: RwLock::new(Arc::default()),
            generation: AtomicU64::new(0),
            clock: Clock::system(),
            first_seen: Arc::new(FirstSeen::in_memory()),
            opened: Default::default(),
            record: Record::default(),
        }
    }

    /// Whether any policy was configured.
    pub fn is_on(&self) -> bool {
        !self.config.is_off()
    }

    /// Whether `mount`'s documents and files go through the policy.
    pub fn applies(&self, mount: &Mount) -> bool {
        self.is_on()
            && policed(mount.profile)
            && (self.age_rules(mount) || !self.config.deny_lists.is_empty())
    }

    /// Whether the age rules need publication dates on `mount`.
    pub fn age_rules(&self, mount: &Mount) -> bool {
        self.min_age(mount).is_some() || self.cutoff(mount).is_some()
    }

    fn min_age(&self, mount: &Mount) -> Option<Duration> {
        let own = self
            .config
            .min_age_by_mount
            .iter()
            .find(|(m, _)| *m == mount.name);
        own.map(|(_, d)| *d)
            .or(self.config.min_age)
            .filter(|d| !d.is_zero())
    }

    fn cutoff(&self, mount: &Mount) -> Option<i64> {
        let own = self
            .config
            .before_by_mount
            .iter()
            .find(|(m, _)| *m == mount.name);
        own.map(|(_, d)| *d).or(self.config.before)
    }

    /// Changes each time the lists are reloaded, or the fleet's first-seen
    /// times move local ones: views made before are stale.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire) + self.first_seen.adopted()
    }

    /// Now, by the policy's clock.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The lists in force.
    pub fn lists(&self) -> Arc<Lists> {
        self.lists.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many releases have a first-seen time.
    pub fn first_seen_count(&self) -> usize {
        self.first_seen.len()
    }

    /// The first-seen key of `release` when judging it needs a first-seen
    /// time this node does not have and a fleet may: look it up with
    /// [`Supply::resolve`] before judging. `None` without a shared store.
    pub fn unresolved(
        &self,
        mount: &Mount,
        lists: &Lists,
        release: &Release<'_>,
    ) -> Option<String> {
        self.first_seen.fleet()?;
        let ecosystem = Ecosystem::of(mount.profile)?;
        let needs = release.published.is_none()
            && self.config.missing() == MissingDate::FirstSeen
            && self.age_rules(mount)
            && lists
                .deny
                .denies(ecosystem, release.project, release.version)
                .is_none()
            && !exempt(mount, ecosystem, &lists.exempt, release);
        let key = first_seen::key(
            &mount.name,
            &ecosystem.normalize(release.project),
            release.version,
        )?;
        (needs && self.first_seen.known(&key).is_none()).then_some(key)
    }

    /// Whether first-seen times are shared with a fleet.
    pub fn shares_first_seen(&self) -> bool {
        self.first_seen.fleet().is_some()
    }

    /// Learns the fleet's first-seen times of `keys` (from
    /// [`Supply::unresolved`]), within [`LOOKUP_BOUND`]; without a shared
    /// store, or for keys it has no time for, nothing changes.
    pub async fn resolve(&self, keys: Vec<String>) {
        if let Some(fleet) = self.first_seen.fleet() {
            fleet.resolve(&self.first_seen, keys).await;
        }
    }

    /// Judges `release` of a document of `mount` at `now`. A release with no
    /// date gets one here under `--min-age-missing first-seen` (recorded).
    pub fn judge(&self, mount: &Mount, lists: &Lists, release: &Release<'_>, now: i64) -> Verdict {
        let Some(ecosystem) = Ecosystem::of(mount.profile) else {
            return Verdict::Allow;
        };
        if let Some(entry) = lists
            .deny
            .denies(ecosystem, release.project, release.version)
        {
            return Verdict::Hold(Hold {
                rule: Rule::DenyList,
                until: None,
                published: release.published,
                detail: entry.source.clone(),
            });
        }
        let (min_age, cutoff) = (self.min_age(mount), self.cutoff(mount));
        if min_age.is_none() && cutoff.is_none() {
            return Verdict::Allow;
        }
        if exempt(mount, ecosystem, &lists.exempt, release) {
            return Verdict::Allow;
        }
        let published = match (release.published, self.config.missing()) {
            (Some(p), _) => p,
            (None, MissingDate::Allow) => return Verdict::Allow,
            (None, MissingDate::Deny) => {
                return Verdict::Hold(Hold {
                    rule: Rule::NoDate,
                    until: None,
                    published: None,
                    detail: String::new(),
                })
            }
            (None, MissingDate::FirstSeen) => self.first_seen.get_or_record(
                &mount.name,
                &ecosystem.normalize(release.project),
                release.version,
                now,
            ),
        };
        if let Some(cutoff) = cutoff {
            if published > cutoff {
                return Verdict::Hold(Hold {
                    rule: Rule::Cutoff,
                    until: None,
                    published: Some(published),
                    detail: format_instant(cutoff),
                });
            }
        }
        if let Some(age) = min_age {
            let until = published.saturating_add(age.as_secs() as i64);
            if until > now {
                return Verdict::Hold(Hold {
                    rule: Rule::MinAge,
                    until: Some(until),
                    published: Some(published),
                    detail: humantime::format_duration(age).to_string(),
                });
            }
        }
        Verdict::Allow
    }

    /// Starts the background work: the first-seen writer and the reloader
    /// (file changes, SIGHUP). Both end when `stop` fires.
    pub fn spawn(
        self: &Arc<Self>,
        tasks: &tokio_util::task::TaskTracker,
        stop: tokio_util::sync::CancellationToken,
    ) {
        if !self.is_on() {
            return;
        }
        tasks.spawn(self.first_seen.clone().run(stop.clone()));
        tasks.spawn(reload::run(self.clone(), reload::hangups(), stop));
    }

    fn replace_lists(&self, lists: Lists) {
        *self.lists.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(lists);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Whether an exemption covers `release` on `mount`.
fn exempt(mount: &Mount, ecosystem: Ecosystem, list: &[Exemption], release: &Release<'_>) -> bool {
    let project = ecosystem.normalize(release.project);
    list.iter().any(|e| {
        e.mount.as_deref().is_none_or(|m| m == mount.name)
            && ecosystem.normalize(&e.project) == project
            && e.version
                .as_deref()
                .is_none_or(|v| version::same(ecosystem, v, release.version))
    })
}

#[cfg(test)]
mod tests;
