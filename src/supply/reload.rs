//! Keeping the lists and the test clock current: every second the deny
//! lists, the exempt files and the clock file are looked at (sizes and
//! modification times, off the runtime), and re-read when they changed; a
//! SIGHUP re-reads them at once. A list that cannot be read keeps the one
//! in force (a deny list never disappears by accident).

use super::deny::{files_under, DenyList};
use super::{Lists, Supply};
use crate::config::{Exemption, SupplyConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

const POLL: Duration = Duration::from_secs(1);

/// Reads every list `config` names (blocking). Unreadable paths are errors;
/// bad lines are logged and skipped.
pub(super) fn read_lists(config: &SupplyConfig) -> std::io::Result<Lists> {
    let (deny, skipped) = DenyList::read(&config.deny_lists)?;
    for s in &skipped {
        tracing::warn!(at = %s.at, reason = %s.reason, "deny list entry skipped");
    }
    let mut exempt = config.exempt.clone();
    for file in &config.exempt_files {
        let text = std::fs::read_to_string(file)?;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            match Exemption::try_parse(line) {
                Ok(e) => exempt.push(e),
                Err(reason) => {
                    tracing::warn!(at = %format!("{}:{}", file.display(), n + 1), %reason, "exemption skipped")
                }
            }
        }
    }
    Ok(Lists { deny, exempt })
}

/// What the watched files look like: path, size and mtime of each.
pub(super) type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// The files whose changes reload the lists, and the clock's file.
pub(super) fn watched(config: &SupplyConfig) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut lists: Vec<PathBuf> = config.deny_lists.clone();
    lists.extend(config.exempt_files.iter().cloned());
    (lists, config.clock_file.iter().cloned().collect())
}

/// The fingerprint of `paths` (blocking).
pub(super) fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    for path in paths {
        match files_under(path) {
            Ok(files) => {
                for file in files {
                    let meta = std::fs::metadata(&file).ok();
                    out.push((
                        file,
                        meta.as_ref().map_or(0, |m| m.len()),
                        meta.and_then(|m| m.modified().ok()),
                    ));
                }
            }
            Err(_) => out.push((path.clone(), u64::MAX, None)),
        }
    }
    out
}

/// Installs the SIGHUP handler at once (call on the runtime, at start-up),
/// so that a SIGHUP sent as soon as the server listens reloads rather than kills.
pub(super) fn hangups() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup())
        .inspect_err(|err| tracing::warn!(error = %err, "no SIGHUP handler; policy lists reload on change only"))
        .ok()
}

/// Watches until `stop` fires; `hup` (from [`hangups`]) forces a reload.
pub(super) async fn run(
    supply: Arc<Supply>,
    mut hup: Option<tokio::signal::unix::Signal>,
    stop: CancellationToken,
) {
    let (lists, clock) = watched(&supply.config);
    // As they were when the lists in force were read.
    let (mut lists_print, mut clock_print) = supply.opened.clone();
    loop {
        let forced = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(POLL) => false,
            got = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => got.is_some(),
        };
        let (paths, clock_paths) = (lists.clone(), clock.clone());
        let Ok((now_lists, now_clock)) =
            tokio::task::spawn_blocking(move || (fingerprint(&paths), fingerprint(&clock_paths)))
                .await
        else {
            continue;
        };
        if forced || now_clock != clock_print {
            clock_print = now_clock;
            let s = supply.clone();
            match tokio::task::spawn_blocking(move || s.clock.reload()).await {
                Ok(Ok(true)) => {
                    tracing::info!(now = %crate::config::supply::format_instant(supply.now()), "policy clock moved")
                }
                Ok(Ok(false)) => {}
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "policy clock file not read; keeping its time")
                }
                Err(_) => {}
            }
        }
        if forced || now_lists != lists_print {
            lists_print = now_lists;
            let config = supply.config.clone();
            match tokio::task::spawn_blocking(move || read_lists(&config)).await {
                Ok(Ok(new)) => {
                    tracing::info!(
                        deny_entries = new.deny.len(),
                        exemptions = new.exempt.len(),
                        "policy lists reloaded"
                    );
                    supply.replace_lists(new);
                }
                Ok(Err(err)) => {
                    tracing::error!(error = %err, "policy lists not reloaded; keeping the ones in force")
                }
                Err(_) => {}
            }
        }
    }
}
