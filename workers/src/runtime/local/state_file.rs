//! One small JSON file per instance in the runtime's state directory: what a restarted process
//! needs to find its children again (pid, group, start time) and to know what became of them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use serde::{Deserialize, Serialize};

/// How an instance ended, once it did. Written when the runtime sees the end, so a restarted
/// runtime reports the same end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub(super) enum Outcome {
    /// The process exited (`succeeded`: exit status 0).
    Exited { succeeded: bool },
    /// Killed at the end of its lifetime.
    LifetimeOver,
    /// Did not accept connections within the ready timeout; killed.
    NeverReady,
    /// Gone while no runtime watched it (the exit status is lost).
    Vanished,
}

/// The file's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InstanceFile {
    pub team: TeamId,
    pub challenge: ChallengeId,
    pub instance: InstanceId,
    /// The process the runtime started; also its group id (it leads its own group).
    pub pid: i32,
    pub pgid: i32,
    /// `/proc/<pid>/stat` start time, so a recycled pid is never adopted.
    pub start_ticks: Option<u64>,
    /// Where the instance listens.
    pub host: String,
    pub port: u16,
    /// When the process was spawned (Unix milliseconds).
    pub created_at_ms: u64,
    /// The `started_at_ms` the deploy was given (the job's enqueue time).
    pub started_at_ms: u64,
    pub lifetime_secs: u64,
    /// Kill time (Unix milliseconds): spawn time plus lifetime plus the deadline margin, moved by
    /// `set_deadline` (an extension).
    pub deadline_ms: u64,
    /// Set once the instance ended.
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// When `outcome` was set (Unix milliseconds).
    #[serde(default)]
    pub ended_at_ms: Option<u64>,
}

/// Path of an instance's state file.
pub(super) fn path(dir: &Path, instance: InstanceId) -> PathBuf {
    dir.join(format!("{instance}.json"))
}

/// Path of an instance's output file.
pub(super) fn log_path(dir: &Path, instance: InstanceId) -> PathBuf {
    dir.join(format!("{instance}.log"))
}

/// The working directory of an instance (created at deploy, deleted at remove), so a challenge
/// program never sees the platform's own files.
pub(super) fn work_dir(dir: &Path, instance: InstanceId) -> PathBuf {
    dir.join("work").join(instance.to_string())
}

/// Writes `file` atomically (temporary file, then rename): a crash leaves the old or the new
/// content, never half of one.
pub(super) fn write(dir: &Path, file: &InstanceFile) -> io::Result<()> {
    let target = path(dir, file.instance);
    let temp = dir.join(format!(".{}.json.tmp", file.instance));
    let bytes = serde_json::to_vec_pretty(file).map_err(io::Error::other)?;
    fs::write(&temp, bytes)?;
    fs::rename(&temp, &target)
}

/// Reads every state file of `dir`. Files that do not parse are returned as errors with their
/// path so the caller can report them; they are never guessed at.
pub(super) fn read_all(dir: &Path) -> io::Result<Vec<Result<InstanceFile, PathBuf>>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let is_state = path.extension().is_some_and(|e| e == "json")
            && !entry.file_name().to_string_lossy().starts_with('.');
        if !is_state {
            continue;
        }
        let parsed = fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<InstanceFile>(&bytes).ok());
        files.push(parsed.ok_or(path));
    }
    Ok(files)
}

/// Deletes an instance's files (state, output, working directory). Missing ones are fine.
pub(super) fn delete(dir: &Path, instance: InstanceId) -> io::Result<()> {
    for file in [path(dir, instance), log_path(dir, instance)] {
        match fs::remove_file(&file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    match fs::remove_dir_all(work_dir(dir, instance)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
