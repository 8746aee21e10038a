//! Finding and killing every live process of a build uid, by scanning
//! `/proc`: the last word before a uid goes back to the pool. Blocking; owns
//! no state. Zombies are not counted: they run nothing and their parent
//! (possibly outside our reach) reaps them.

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{Duration, Instant};

/// How often the scan repeats while processes remain.
const POLL: Duration = Duration::from_millis(20);

/// The live (not zombie) processes with `uid` as real, effective, saved or
/// filesystem uid.
pub fn of_uid(uid: u32) -> Vec<i32> {
    of_uids(&(uid..uid + 1)).into_values().flatten().collect()
}

/// The live processes of every uid in `uids` (one scan of `/proc`), by uid.
fn of_uids(uids: &Range<u32>) -> BTreeMap<u32, Vec<i32>> {
    let mut found: BTreeMap<u32, Vec<i32>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for pid in entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        if let Some(uid) = owner_in(pid, uids) {
            found.entry(uid).or_default().push(pid);
        }
    }
    found
}

/// Whether `pid` is alive and runs under `uid` (false once it is gone).
fn belongs_to(pid: i32, uid: u32) -> bool {
    owner_in(pid, &(uid..uid + 1)).is_some()
}

/// The uid in `uids` that live process `pid` runs under, if any.
fn owner_in(pid: i32, uids: &Range<u32>) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| status.lines().find_map(|line| line.strip_prefix(name));
    let zombie =
        field("State:").is_some_and(|s| matches!(s.trim_start().chars().next(), Some('Z' | 'X')));
    if zombie {
        return None;
    }
    field("Uid:")?
        .split_whitespace()
        .filter_map(|id| id.parse::<u32>().ok())
        .find(|id| uids.contains(id))
}

/// At start-up, before any uid of `uids` is handed out: kills every process
/// of every one of them (left by a server that died with builds running)
/// until none is left or `bound` has passed; returns the uids that still
/// have processes then, which must not be used.
pub fn kill_range(uids: Range<u32>, bound: Duration) -> Vec<u32> {
    let deadline = Instant::now() + bound;
    loop {
        let left = of_uids(&uids);
        if left.is_empty() || Instant::now() >= deadline {
            return left.into_keys().collect();
        }
        for (uid, pids) in &left {
            kill_pids(*uid, pids);
        }
        std::thread::sleep(POLL);
    }
}

/// Kills every process of `uid` with SIGKILL until none is left or `bound`
/// has passed; returns the pids still alive then (empty: the uid is clear).
/// Each kill goes through a pidfd opened and re-checked first, so a pid
/// reused meanwhile by another user's process is never signalled.
pub fn kill_all(uid: u32, bound: Duration) -> Vec<i32> {
    let deadline = Instant::now() + bound;
    loop {
        let left = of_uid(uid);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        kill_pids(uid, &left);
        std::thread::sleep(POLL);
    }
}

/// SIGKILL to each of `pids` that still runs under `uid`, through a pidfd
/// opened and re-checked first.
fn kill_pids(uid: u32, pids: &[i32]) {
    for pid in pids {
        let Some(pid_t) = Pid::from_raw(*pid) else {
            continue;
        };
        if let Ok(pidfd) = pidfd_open(pid_t, PidfdFlags::empty()) {
            // The pidfd pins this process: if it still has the uid, it is ours.
            if belongs_to(*pid, uid) {
                let _ = pidfd_send_signal(&pidfd, Signal::KILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_process_under_its_own_uid_only() {
        let me = std::process::id() as i32;
        let uid = rustix::process::getuid().as_raw();
        assert!(of_uid(uid).contains(&me));
        assert!(!of_uid(uid.wrapping_add(12345)).contains(&me));
        let around = uid.saturating_sub(2)..uid.saturating_add(3);
        assert!(of_uids(&around)[&uid].contains(&me));
    }
}
