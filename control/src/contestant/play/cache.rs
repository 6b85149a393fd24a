//! In-process copies of what every flag submission reads and what rarely changes: each
//! challenge's row with its compiled flags ([`Challenges`]), and each team's solved challenges
//! ([`Solved`]). The submission path reads them instead of the database; everything else reads
//! the database as before.
//!
//! # Staleness, and why it is acceptable
//!
//! - **Challenges and flags** are kept [`CHALLENGE_TTL`] (2 s). An admin's edit through this
//!   process (challenge create, update, delete, import; flag create, update, delete) drops every
//!   copy at once, so here the old flag is refused and a hidden challenge is closed from the next
//!   request on. Through another process, the change is seen here within the TTL. What that can
//!   cost, and what it cannot:
//!   - a *correct* verdict is never taken on a copy: the solve re-reads the challenge row
//!     (inside its transaction, under the row lock on MariaDB) and its flags (just before), and
//!     writes nothing when they differ from the copy; the flag is then judged again on the fresh
//!     rows ([`super::records::record_solve`]); so an old flag or a hidden challenge never scores,
//!     in any process;
//!   - a challenge with an attempt limit or a cooldown is decided on fresh rows too (under its
//!     lock), so a wrong verdict that costs a try is never taken on a copy;
//!   - the one effect left: for at most the TTL after an admin changed a flag or un-hid a
//!     challenge through *another* process, a wrong flag to a challenge without limits is judged
//!     on the old copy here (the new flag may be answered "incorrect" and recorded as such, and
//!     a just-unhidden challenge answered 404). The player submits again.
//! - **Solved sets** are kept [`SOLVED_TTL`] (30 s). A solve recorded by this process is added at
//!   once, and a challenge deleted through this process drops every set. A copy can only lack a
//!   solve made through another process in the last [`SOLVED_TTL`] (solve rows are never deleted
//!   except with their challenge, whose id is never reused), and that only ever makes this process
//!   do more work, never a wrong decision: a correct flag still meets the database's unique key
//!   on (challenge, team) and is answered "already solved"; a wrong one is recorded as a wrong
//!   submission of a solved challenge (harmless; limited challenges re-read under their lock);
//!   a prerequisite solved elsewhere is re-read before a challenge is refused as locked.
//!
//! Contest start, end, pause and freeze are not here: they are checked against the clock on
//! every request.
//!
//! Config fields that would replace the constants: `[contestant].challenge_cache_ms` (default
//! 2000) and `[contestant].solved_cache_secs` (default 30).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use fctf_core::db::{Database, DbResult};

use super::flags::Matcher;
use super::records::{self, Challenge, FlagRow};

/// How long a process judges wrong flags on its copy of a challenge and its flags.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(2);

/// How long a process keeps its copy of a team's solved challenges.
pub const SOLVED_TTL: Duration = Duration::from_secs(30);

/// Most teams whose solved sets are kept (the least recently used go first).
pub const MAX_SOLVED_TEAMS: u64 = 100_000;

/// A challenge as the submission path needs it: the row and its flags, compiled.
#[derive(Debug)]
pub struct Playable {
    /// The challenge row.
    pub challenge: Challenge,
    /// Its flag rows, as read.
    pub rows: Vec<FlagRow>,
    /// The same flags, ready to match.
    pub flags: Vec<Matcher>,
}

impl Playable {
    /// Builds the copy from the rows.
    pub fn new(challenge: Challenge, rows: Vec<FlagRow>) -> Self {
        let flags = rows
            .iter()
            .filter_map(FlagRow::rule)
            .map(Matcher::new)
            .collect();
        Self {
            challenge,
            rows,
            flags,
        }
    }

    /// True when `challenge` and `flags` (fresh rows) are those this copy was made from, but
    /// for the live value, which every solve of a dynamic challenge moves.
    pub fn same_rows(&self, challenge: &Challenge, flags: &[FlagRow]) -> bool {
        let mut mine = self.challenge.clone();
        mine.value = challenge.value;
        mine == *challenge && self.rows == flags
    }

    /// True when `provided` matches a stored flag (team flags are checked by the caller).
    pub fn matches(&self, provided: &str) -> bool {
        self.flags.iter().any(|m| m.matches(provided))
    }
}

/// One cached challenge.
#[derive(Debug)]
struct Entry {
    loaded: Instant,
    playable: Arc<Playable>,
}

/// The challenges with their flags, per process (see the module docs).
#[derive(Debug, Default)]
pub struct Challenges {
    entries: RwLock<HashMap<i64, Entry>>,
    /// Bumped by [`Challenges::invalidate`]: a read that began before it does not store what it
    /// read (it may be older than the edit).
    generation: AtomicU64,
}

impl Challenges {
    /// The challenge `id` with its flags: the copy when younger than [`CHALLENGE_TTL`], else
    /// read (`None`: no such challenge; absence is not cached).
    pub async fn get(&self, db: &Database, id: i64) -> DbResult<Option<Arc<Playable>>> {
        if let Some(hit) = self.fresh(id) {
            return Ok(Some(hit));
        }
        self.reload(db, id).await
    }

    /// Reads challenge `id` and its flags from the database, and keeps the copy.
    pub async fn reload(&self, db: &Database, id: i64) -> DbResult<Option<Arc<Playable>>> {
        let generation = self.generation.load(Ordering::Acquire);
        let Some(challenge) = records::challenge(db, id).await? else {
            return Ok(None);
        };
        let flags = records::flags(db, Some(id)).await?;
        let playable = Arc::new(Playable::new(challenge, flags));
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if self.generation.load(Ordering::Acquire) == generation {
            entries.insert(
                id,
                Entry {
                    loaded: Instant::now(),
                    playable: playable.clone(),
                },
            );
        }
        Ok(Some(playable))
    }

    fn fresh(&self, id: i64) -> Option<Arc<Playable>> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(&id)
            .filter(|e| e.loaded.elapsed() < CHALLENGE_TTL)
            .map(|e| e.playable.clone())
    }

    /// Drops every copy (after any admin edit of challenges or flags in this process): the next
    /// submission reads the database.
    pub fn invalidate(&self) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }
}

/// Each team's solved challenges, per process (see the module docs).
#[derive(Debug)]
pub struct Solved {
    sets: moka::sync::Cache<i64, Arc<Mutex<HashSet<i64>>>>,
}

impl Default for Solved {
    fn default() -> Self {
        Self {
            sets: moka::sync::Cache::builder()
                .max_capacity(MAX_SOLVED_TEAMS)
                .time_to_live(SOLVED_TTL)
                .build(),
        }
    }
}

impl Solved {
    /// `f` of the challenges `team` solved (the copy, or read when there is none).
    pub async fn with<R>(
        &self,
        db: &Database,
        team: i64,
        f: impl FnOnce(&HashSet<i64>) -> R,
    ) -> DbResult<R> {
        if let Some(set) = self.sets.get(&team) {
            return Ok(f(&set.lock().unwrap_or_else(PoisonError::into_inner)));
        }
        Ok(f(&self.reload(db, team).await?))
    }

    /// Reads the team's solves from the database, and keeps the copy.
    pub async fn reload(&self, db: &Database, team: i64) -> DbResult<HashSet<i64>> {
        let set = records::solved_by(db, team).await?;
        self.sets.insert(team, Arc::new(Mutex::new(set.clone())));
        Ok(set)
    }

    /// Adds a solve this process just recorded to the team's copy (when there is one).
    pub fn add(&self, team: i64, challenge: i64) {
        if let Some(set) = self.sets.get(&team) {
            set.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(challenge);
        }
    }

    /// Drops every copy (after a challenge, and with it its solves, was deleted).
    pub fn invalidate(&self) {
        self.sets.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contestant::play::challenges::blank;

    #[test]
    fn a_copy_matches_its_rows_whatever_the_live_value() {
        let mut challenge = blank();
        challenge.id = 7;
        challenge.value = 500;
        let flag = FlagRow {
            id: 1,
            challenge_id: 7,
            kind: "static".to_owned(),
            content: "flag{x}".to_owned(),
            data: String::new(),
        };
        let copy = Playable::new(challenge.clone(), vec![flag.clone()]);
        assert!(copy.matches("flag{x}"));
        assert!(!copy.matches("flag{y}"));
        let mut decayed = challenge.clone();
        decayed.value = 450;
        assert!(copy.same_rows(&decayed, std::slice::from_ref(&flag)));
        let mut hidden = challenge.clone();
        hidden.state = "hidden".to_owned();
        assert!(!copy.same_rows(&hidden, std::slice::from_ref(&flag)));
        let mut edited = flag.clone();
        edited.content = "flag{z}".to_owned();
        assert!(!copy.same_rows(&challenge, &[edited]));
        assert!(!copy.same_rows(&challenge, &[]));
    }
}
