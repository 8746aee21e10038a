//! `SupplyArgs`: the server's supply-chain policy options (minimum release
//! age, exemptions, deny lists), flattened into `Args`. A group of its own
//! because `config::supply` reads it whole.

use clap::Args as ClapArgs;
use std::path::PathBuf;

/// Options of the supply-chain policy: which releases clients may see and fetch.
#[derive(Debug, Default, ClapArgs)]
pub struct SupplyArgs {
    /// Hide releases younger than this from index documents and refuse their files
    /// (7d, 36h, 90m): DURATION for every pypi, rubygems, npm, cargo and go mount, or
    /// MOUNT=DURATION for one (0 turns it off there). Repeatable.
    #[arg(long = "min-age", value_name = "[MOUNT=]DURATION")]
    pub min_age: Vec<String>,

    /// Hide releases published after DATE (2026-01-31 or an RFC 3339 time): for every
    /// mount, or MOUNT=DATE for one. Repeatable.
    #[arg(long = "min-age-before", value_name = "[MOUNT=]DATE")]
    pub min_age_before: Vec<String>,

    /// What a release without a publication date counts as: first-seen (the time this
    /// cache first saw it), deny, or allow.
    #[arg(
        long = "min-age-missing",
        value_name = "MODE",
        default_value = "first-seen"
    )]
    pub min_age_missing: String,

    /// A project (or one version: PROJECT@VERSION) the age rules do not hold back:
    /// MOUNT=PROJECT[@VERSION], or PROJECT[@VERSION] on every mount. Repeatable.
    #[arg(long = "min-age-exempt", value_name = "[MOUNT=]PROJECT[@VERSION]")]
    pub min_age_exempt: Vec<String>,

    /// A file of exemptions, one --min-age-exempt value a line (# comments); re-read
    /// when it changes and on SIGHUP. Repeatable.
    #[arg(long = "min-age-exempt-file", value_name = "FILE")]
    pub min_age_exempt_file: Vec<PathBuf>,

    /// Releases to refuse: a file or directory of OSV JSON records (such as the
    /// malicious-package advisories) and/or plain lists of `ECOSYSTEM NAME
    /// [VERSION|RANGE]` lines; re-read when it changes and on SIGHUP. Repeatable.
    #[arg(long = "deny-list", value_name = "PATH")]
    pub deny_list: Vec<PathBuf>,

    /// A file holding the time the policy takes for now (RFC 3339 or Unix seconds),
    /// re-read when it changes: for tests.
    #[arg(long = "policy-clock-file", value_name = "FILE", hide = true)]
    pub clock_file: Option<PathBuf>,
}
