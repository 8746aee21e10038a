//! The judgement: deny lists, ages, cutoffs, missing dates and exemptions.

use super::*;
use crate::config::SourceUrl;

const DAY: i64 = 86_400;
const NOW: i64 = 1_767_225_600; // 2026-01-01

fn mount(name: &str, profile: Profile) -> Mount {
    Mount {
        name: name.into(),
        profile,
        sources: vec![SourceUrl::try_new("http://index.example/").unwrap()],
        files_hosts: Vec::new(),
        index_path: None,
        go_sums: Vec::new(),
    }
}

fn supply(config: SupplyConfig, dir: &std::path::Path) -> Supply {
    Supply::open(&config, &dir.join("policy/first-seen"), None).unwrap()
}

fn release<'a>(project: &'a str, version: &'a str, published: Option<i64>) -> Release<'a> {
    Release {
        project,
        version,
        published,
    }
}

#[test]
fn min_age_holds_young_releases_until_they_are_old_enough() {
    let dir = tempfile::tempdir().unwrap();
    let s = supply(
        SupplyConfig {
            min_age: Some(Duration::from_secs(7 * DAY as u64)),
            min_age_by_mount: vec![("internal".into(), Duration::ZERO)],
            ..SupplyConfig::default()
        },
        dir.path(),
    );
    let pypi = mount("pypi", Profile::Pypi);
    let lists = s.lists();
    assert!(s.applies(&pypi));
    assert_eq!(
        s.judge(
            &pypi,
            &lists,
            &release("six", "1.16.0", Some(NOW - 30 * DAY)),
            NOW
        ),
        Verdict::Allow
    );
    let Verdict::Hold(hold) = s.judge(
        &pypi,
        &lists,
        &release("six", "1.17.0", Some(NOW - DAY)),
        NOW,
    ) else {
        panic!("a day-old release is held");
    };
    assert_eq!((hold.rule, hold.until), (Rule::MinAge, Some(NOW + 6 * DAY)));
    assert!(
        hold.describe()
            .contains("available from 2026-01-07T00:00:00Z"),
        "{}",
        hold.describe()
    );
    assert_eq!(
        s.judge(
            &pypi,
            &lists,
            &release("six", "1.17.0", Some(NOW - DAY)),
            NOW + 6 * DAY
        ),
        Verdict::Allow,
        "the clock passed"
    );
    let internal = mount("internal", Profile::Pypi);
    assert!(!s.applies(&internal), "0 turns the age off there");
    assert!(!s.applies(&mount("gentoo", Profile::Gentoo)));
}

#[test]
fn missing_dates_follow_the_chosen_mode() {
    let dir = tempfile::tempdir().unwrap();
    let base = SupplyConfig {
        min_age: Some(Duration::from_secs(3 * DAY as u64)),
        ..SupplyConfig::default()
    };
    let gems = mount("rubygems", Profile::Rubygems);
    let undated = release("crtiny", "1.0.0", None);
    let first = supply(base.clone(), dir.path());
    let lists = first.lists();
    let Verdict::Hold(hold) = first.judge(&gems, &lists, &undated, NOW) else {
        panic!("first seen now: too young");
    };
    assert_eq!(hold.until, Some(NOW + 3 * DAY));
    // Seen again later: the first sighting counts.
    assert_eq!(
        first.judge(&gems, &lists, &undated, NOW + 3 * DAY),
        Verdict::Allow
    );
    for (mode, expected) in [(MissingDate::Allow, true), (MissingDate::Deny, false)] {
        let s = supply(
            SupplyConfig {
                missing: Some(mode),
                ..base.clone()
            },
            dir.path(),
        );
        let v = s.judge(&gems, &s.lists(), &undated, NOW + 100 * DAY);
        assert_eq!(v == Verdict::Allow, expected, "{mode:?}");
    }
}

#[test]
fn cutoffs_deny_lists_and_exemptions() {
    let dir = tempfile::tempdir().unwrap();
    let deny = dir.path().join("deny.txt");
    std::fs::write(&deny, "pypi six 1.16.0\nnpm left-pad *\n").unwrap();
    let exempt = dir.path().join("exempt");
    std::fs::write(
        &exempt,
        "# break glass\npypi=idna\nnpm=@scope/fresh@2.0.0\n",
    )
    .unwrap();
    let s = supply(
        SupplyConfig {
            min_age: Some(Duration::from_secs(7 * DAY as u64)),
            before: Some(NOW - 10 * DAY),
            deny_lists: vec![deny],
            exempt_files: vec![exempt],
            ..SupplyConfig::default()
        },
        dir.path(),
    );
    let (pypi, npm) = (mount("pypi", Profile::Pypi), mount("npm", Profile::Npm));
    let lists = s.lists();
    let held = |m: &Mount, r: Release<'_>| match s.judge(m, &lists, &r, NOW) {
        Verdict::Hold(h) => Some(h.rule),
        Verdict::Allow => None,
    };
    assert_eq!(
        held(&pypi, release("Six", "1.16.0", Some(0))),
        Some(Rule::DenyList)
    );
    assert_eq!(held(&pypi, release("six", "1.15.0", Some(0))), None);
    assert_eq!(
        held(&pypi, release("six", "1.15.0", Some(NOW - 8 * DAY))),
        Some(Rule::Cutoff)
    );
    // Exempt from the age rules, never from a deny list.
    assert_eq!(held(&pypi, release("IDNA", "3.7", Some(NOW))), None);
    assert_eq!(
        held(&npm, release("@scope/fresh", "2.0.0", Some(NOW))),
        None
    );
    assert_eq!(
        held(&npm, release("@scope/fresh", "2.0.1", Some(NOW))),
        Some(Rule::Cutoff)
    );
    assert_eq!(
        held(&npm, release("left-pad", "1.0.0", Some(0))),
        Some(Rule::DenyList)
    );
}

#[tokio::test]
async fn lists_reload_when_their_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let deny = dir.path().join("deny.txt");
    std::fs::write(&deny, "pypi six 1.16.0\n").unwrap();
    let s = Arc::new(supply(
        SupplyConfig {
            deny_lists: vec![deny.clone()],
            ..SupplyConfig::default()
        },
        dir.path(),
    ));
    let tasks = tokio_util::task::TaskTracker::new();
    let stop = tokio_util::sync::CancellationToken::new();
    s.spawn(&tasks, stop.clone());
    let pypi = mount("pypi", Profile::Pypi);
    let generation = s.generation();
    // A different size, so the change shows whatever the mtime granularity.
    std::fs::write(&deny, "pypi six 1.16.0\npypi six 1.17.0\n").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.generation() == generation {
        assert!(std::time::Instant::now() < deadline, "reloaded within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = s.judge(&pypi, &s.lists(), &release("six", "1.17.0", Some(0)), NOW);
    assert!(matches!(
        v,
        Verdict::Hold(Hold {
            rule: Rule::DenyList,
            ..
        })
    ));
    // A list that disappears keeps the one in force.
    std::fs::remove_file(&deny).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(s
        .lists()
        .deny
        .denies(Ecosystem::Pypi, "six", "1.17.0")
        .is_some());
    stop.cancel();
    tasks.close();
    tasks.wait().await;
}
