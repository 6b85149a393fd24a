//! The operating-system side of the `local` runtime: who is alive (from `/proc`, so a zombie
//! or a recycled pid is never taken for a live instance) and signals to whole process groups
//! (through `nix`, no `unsafe`).

use std::fs;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::time::{Instant, sleep};

/// How often a stopping group is checked.
const STOP_POLL: Duration = Duration::from_millis(20);

/// How long a group may take to vanish after SIGKILL before the stop is reported as failed.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// The fields of `/proc/<pid>/stat` the runtime needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ProcStat {
    /// `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    /// Process group id.
    pub pgrp: i32,
    /// Start time in clock ticks after boot: with the pid, the identity of a process (a pid is
    /// recycled, the pair is not).
    pub start_ticks: u64,
}

impl ProcStat {
    fn is_running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses one `/proc/<pid>/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so the fields are counted from the last `)`.
pub(super) fn parse_stat(line: &str) -> Option<ProcStat> {
    let rest = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) pgrp(5) ... starttime(22).
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// The stat of process `pid`, or `None` when there is no such process.
pub(super) fn proc_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// True while process `pid` is the one started at `start_ticks` and has not exited (a zombie
/// has exited).
pub(super) fn leader_alive(pid: i32, start_ticks: Option<u64>) -> bool {
    proc_stat(pid).is_some_and(|s| s.is_running() && start_ticks.is_none_or(|t| t == s.start_ticks))
}

/// True while group `pgid` may still hold processes of the instance whose leader is `pid`
/// started at `start_ticks`: the leader is still that process (alive or zombie), or no process
/// has the leader's pid any more. If another process now has that pid, the kernel would not have
/// recycled it while the group existed, so the group is gone and must not be signalled.
pub(super) fn group_is_ours(pid: i32, start_ticks: Option<u64>) -> bool {
    match proc_stat(pid) {
        Some(stat) => start_ticks.is_none_or(|t| t == stat.start_ticks),
        None => true,
    }
}

/// True while a process of group `pgid` is running (zombies waiting for a parent that never
/// reaps them do not count: they hold no resources but a pid).
pub(super) fn group_running(pgid: i32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        // Without /proc, ask the kernel (counts zombies too).
        return killpg(Pid::from_raw(pgid), None).is_ok();
    };
    entries.flatten().any(|entry| {
        entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
            .and_then(proc_stat)
            .is_some_and(|s| s.pgrp == pgid && s.is_running())
    })
}

/// Sends `signal` to every process of group `pgid`. A group that is already gone is fine.
pub(super) fn signal_group(pgid: i32, signal: Signal) -> Result<(), Errno> {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Ends group `pgid`: SIGTERM, up to `grace` for it to exit, then SIGKILL. Returns once no
/// process of the group runs; `Err` when some survived [`KILL_WAIT`] after SIGKILL or could not
/// be signalled.
pub(super) async fn stop_group(pgid: i32, grace: Duration) -> Result<(), String> {
    if pgid <= 1 {
        return Err(format!("refusing to signal process group {pgid}"));
    }
    if !group_running(pgid) {
        return Ok(());
    }
    signal_group(pgid, Signal::SIGTERM).map_err(|e| format!("SIGTERM to group {pgid}: {e}"))?;
    if wait_gone(pgid, grace).await {
        return Ok(());
    }
    signal_group(pgid, Signal::SIGKILL).map_err(|e| format!("SIGKILL to group {pgid}: {e}"))?;
    if wait_gone(pgid, KILL_WAIT).await {
        Ok(())
    } else {
        Err(format!("process group {pgid} survived SIGKILL"))
    }
}

async fn wait_gone(pgid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if !group_running(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(STOP_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 50";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                state: 'S',
                pgrp: 4242,
                start_ticks: 987_654
            })
        );
        assert_eq!(parse_stat("4242 (x) Z"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        let stat = proc_stat(pid).expect("own stat");
        assert!(leader_alive(pid, Some(stat.start_ticks)));
        assert!(!leader_alive(pid, Some(stat.start_ticks + 1)));
        assert!(group_is_ours(pid, Some(stat.start_ticks)));
        assert!(!group_is_ours(pid, Some(stat.start_ticks + 1)));
    }
}
