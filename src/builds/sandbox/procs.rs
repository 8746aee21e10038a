//! Finding and killing every live process of a build uid, by scanning
//! `/proc`: the last word before a uid goes back to the pool. Blocking; owns
//! no state. Zombies are not counted: they run nothing and their parent
//! (possibly outside our reach) reaps them.

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
use std::time::{Duration, Instant};

/// How often the scan repeats while processes remain.
const POLL: Duration = Duration::from_millis(20);

/// The live (not zombie) processes with `uid` as real, effective, saved or
/// filesystem uid.
pub fn of_uid(uid: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| belongs_to(pid, uid))
        .collect()
}

/// Whether `pid` is alive and runs under `uid` (false once it is gone).
fn belongs_to(pid: i32, uid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let field = |name: &str| status.lines().find_map(|line| line.strip_prefix(name));
    let zombie =
        field("State:").is_some_and(|s| matches!(s.trim_start().chars().next(), Some('Z' | 'X')));
    let ids = field("Uid:").unwrap_or_default();
    !zombie && ids.split_whitespace().any(|id| id.parse() == Ok(uid))
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
        for pid in &left {
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
        std::thread::sleep(POLL);
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
    }
}
