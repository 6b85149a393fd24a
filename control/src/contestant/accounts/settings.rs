//! The contest settings admins change at runtime (window, freeze, pause, registration, team
//! rules), and [`ContestSettings::phase`], the one pure decision every route asks before it
//! lets a player act.
//!
//! Stored as name/value rows (`contest_config`, like CTFd's `config` table; each value is JSON),
//! over defaults from the config file. Each process caches the merged settings for
//! [`SETTINGS_TTL`] and drops its cache on its own writes, so a change made through another
//! process is seen within that TTL.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use fctf_core::config::Config;
use fctf_core::db::{Database, DbError, DbResult};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;

/// How long one process serves its cached settings before reading them again.
pub const SETTINGS_TTL: Duration = Duration::from_secs(1);

/// Who may see the scoreboard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreVisibility {
    /// Everyone, signed in or not.
    #[default]
    Public,
    /// Signed-in users only.
    Private,
    /// Admins only.
    Hidden,
}

/// Where the contest is at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContestPhase {
    /// Before `start_ms`: nothing to play yet.
    NotStarted,
    /// Between start and end, not frozen, not paused.
    Running,
    /// Running, but past `freeze_ms`: submissions count, players see the board as it was.
    Frozen,
    /// Inside the window but paused by an admin: no submissions, no instance starts.
    Paused,
    /// At or after `end_ms`.
    Ended,
}

impl ContestPhase {
    /// Whether players may submit flags, unlock hints and start instances.
    pub fn is_playable(self) -> bool {
        matches!(self, Self::Running | Self::Frozen)
    }
}

/// The contest settings in force. Field names are the keys of `/api/v1/configs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContestSettings {
    /// Start of the contest (Unix ms); `None`: started.
    pub start_ms: Option<i64>,
    /// End of the contest (Unix ms, exclusive); `None`: never ends.
    pub end_ms: Option<i64>,
    /// From this instant (Unix ms) players see the scoreboard as it was; `None`: no freeze.
    pub freeze_ms: Option<i64>,
    /// Paused by an admin.
    pub paused: bool,
    /// Whether players may still see challenges (read-only) after the end.
    pub view_after_end: bool,
    /// Instances one team may hold at once.
    pub instances_per_team: u32,
    /// Only the captain may start (and stop, extend) instances.
    pub captain_only_start: bool,
    /// Only the captain may submit flags.
    pub captain_only_submit: bool,
    /// Who sees the scoreboard.
    pub score_visibility: ScoreVisibility,
    /// Whether players may register themselves.
    pub registration_open: bool,
    /// Most registered users; 0: no cap.
    pub max_users: u32,
    /// Most members of one team.
    pub team_size: u32,
}

impl ContestSettings {
    /// The first defaults, from the config file.
    pub fn defaults(config: &Config) -> Self {
        Self {
            start_ms: None,
            end_ms: None,
            freeze_ms: None,
            paused: false,
            view_after_end: true,
            instances_per_team: config.deployment.instances_per_team,
            captain_only_start: true,
            captain_only_submit: false,
            score_visibility: ScoreVisibility::Public,
            registration_open: config.contestant.registration_open,
            max_users: config.contestant.max_users,
            team_size: config.contestant.team_size,
        }
    }

    /// The phase at `now_ms` (Unix ms). Start is inclusive, end exclusive; the window wins over
    /// pause and freeze (a paused contest still ends).
    pub fn phase(&self, now_ms: i64) -> ContestPhase {
        if self.start_ms.is_some_and(|start| now_ms < start) {
            ContestPhase::NotStarted
        } else if self.end_ms.is_some_and(|end| now_ms >= end) {
            ContestPhase::Ended
        } else if self.paused {
            ContestPhase::Paused
        } else if self.freeze_ms.is_some_and(|freeze| now_ms >= freeze) {
            ContestPhase::Frozen
        } else {
            ContestPhase::Running
        }
    }

    /// The end as the Deployment Center's `contest_ends_at_ms`.
    pub fn ends_at_ms(&self) -> Option<u64> {
        self.end_ms.and_then(|end| u64::try_from(end).ok())
    }

    /// Applies `changes` (key → JSON value) to a copy of `self`: unknown keys and values of the
    /// wrong type are refused, and so are inconsistent windows.
    pub fn with_changes(&self, changes: &BTreeMap<String, Value>) -> Result<Self, String> {
        let mut merged = match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => return Err("settings are not an object".to_owned()),
        };
        for (key, value) in changes {
            if !merged.contains_key(key) {
                return Err(format!("Unknown setting {key:?}."));
            }
            merged.insert(key.clone(), value.clone());
        }
        let next: Self = serde_json::from_value(Value::Object(merged))
            .map_err(|e| format!("Invalid setting value: {e}."))?;
        next.check()?;
        Ok(next)
    }

    /// The rules across fields.
    pub fn check(&self) -> Result<(), String> {
        if let (Some(start), Some(end)) = (self.start_ms, self.end_ms)
            && end <= start
        {
            return Err("The end must be after the start.".to_owned());
        }
        if !(1..=1000).contains(&self.instances_per_team) {
            return Err("instances_per_team must be between 1 and 1000.".to_owned());
        }
        if !(1..=1000).contains(&self.team_size) {
            return Err("team_size must be between 1 and 1000.".to_owned());
        }
        Ok(())
    }

    /// The settings as key → JSON value.
    pub fn to_map(&self) -> BTreeMap<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map.into_iter().collect(),
            _ => BTreeMap::new(),
        }
    }
}

/// The contest settings as stored, over the defaults of `config`, read now (no cache): for
/// processes other than the Contestant Service that must respect the contest window, such as
/// the Deployment Listener, which removes every instance at the contest end.
pub async fn stored_settings(db: &Database, config: &Config) -> DbResult<ContestSettings> {
    read(db, &ContestSettings::defaults(config)).await
}

/// The settings of one process: the stored rows over the defaults, cached.
#[derive(Debug)]
pub(crate) struct SettingsCache {
    defaults: ContestSettings,
    cached: RwLock<(Instant, Arc<ContestSettings>)>,
}

impl SettingsCache {
    /// Reads the stored settings once (so a process never starts without them).
    pub(crate) async fn load(db: &Database, defaults: ContestSettings) -> DbResult<Self> {
        let current = read(db, &defaults).await?;
        Ok(Self {
            defaults,
            cached: RwLock::new((Instant::now(), Arc::new(current))),
        })
    }

    /// The settings in force: cached for [`SETTINGS_TTL`]; when the database cannot be read the
    /// last known settings stay in force (logged).
    pub(crate) async fn get(&self, db: &Database) -> Arc<ContestSettings> {
        let (at, current) = {
            let guard = self
                .cached
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (guard.0, guard.1.clone())
        };
        if at.elapsed() < SETTINGS_TTL {
            return current;
        }
        match read(db, &self.defaults).await {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                self.put(fresh.clone());
                fresh
            }
            Err(error) => {
                tracing::warn!(%error, "contest settings unreadable; the last known stay in force");
                current
            }
        }
    }

    fn put(&self, settings: Arc<ContestSettings>) {
        let mut guard = self
            .cached
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = (Instant::now(), settings);
    }

    /// Validates and stores `changes`, then serves the result at once in this process.
    pub(crate) async fn update(
        &self,
        db: &Database,
        changes: &BTreeMap<String, Value>,
    ) -> Result<Arc<ContestSettings>, UpdateError> {
        let current = read(db, &self.defaults).await?;
        let next = current
            .with_changes(changes)
            .map_err(UpdateError::Invalid)?;
        let mut tx = db.pool().begin().await.map_err(DbError::from)?;
        for key in changes.keys() {
            let value = next.to_map().remove(key).unwrap_or(Value::Null).to_string();
            sqlx::query("DELETE FROM contest_config WHERE name = ?")
                .bind(key.clone())
                .execute(&mut *tx)
                .await
                .map_err(DbError::from)?;
            sqlx::query("INSERT INTO contest_config (name, value) VALUES (?, ?)")
                .bind(key.clone())
                .bind(value)
                .execute(&mut *tx)
                .await
                .map_err(DbError::from)?;
        }
        tx.commit().await.map_err(DbError::from)?;
        let next = Arc::new(next);
        self.put(next.clone());
        Ok(next)
    }
}

/// Why settings could not be changed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpdateError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The stored rows over `defaults`. A stored value that no longer fits (a renamed key, a value
/// of the wrong type) is ignored with a warning rather than locking everyone out.
async fn read(db: &Database, defaults: &ContestSettings) -> DbResult<ContestSettings> {
    let rows = sqlx::query("SELECT name, value FROM contest_config")
        .fetch_all(db.pool())
        .await?;
    let mut settings = defaults.clone();
    for row in rows {
        let name: String = row.try_get("name").map_err(DbError::from)?;
        let value: String = row.try_get("value").map_err(DbError::from)?;
        let Ok(value) = serde_json::from_str::<Value>(&value) else {
            tracing::warn!(name, "stored contest setting is not JSON; ignored");
            continue;
        };
        let change = BTreeMap::from([(name.clone(), value)]);
        match settings.with_changes(&change) {
            Ok(next) => settings = next,
            Err(error) => tracing::warn!(name, error, "stored contest setting ignored"),
        }
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ContestSettings {
        ContestSettings::defaults(&Config::default())
    }

    #[test]
    fn phase_follows_the_window_freeze_and_pause() {
        let mut s = settings();
        assert_eq!(s.phase(0), ContestPhase::Running);
        s.start_ms = Some(1000);
        s.end_ms = Some(2000);
        s.freeze_ms = Some(1500);
        assert_eq!(s.phase(999), ContestPhase::NotStarted);
        assert_eq!(s.phase(1000), ContestPhase::Running);
        assert_eq!(s.phase(1499), ContestPhase::Running);
        assert_eq!(s.phase(1500), ContestPhase::Frozen);
        assert_eq!(s.phase(1999), ContestPhase::Frozen);
        assert_eq!(s.phase(2000), ContestPhase::Ended);
        s.paused = true;
        assert_eq!(s.phase(1200), ContestPhase::Paused);
        assert_eq!(s.phase(2000), ContestPhase::Ended);
        assert_eq!(s.phase(10), ContestPhase::NotStarted);
        assert!(ContestPhase::Frozen.is_playable());
        assert!(!ContestPhase::Paused.is_playable());
    }

    #[test]
    fn changes_are_typed_and_checked() {
        let s = settings();
        assert!(s.captain_only_start && !s.captain_only_submit);
        let ok = s
            .with_changes(&BTreeMap::from([
                ("paused".to_owned(), Value::Bool(true)),
                ("score_visibility".to_owned(), Value::from("hidden")),
            ]))
            .unwrap();
        assert!(ok.paused);
        assert_eq!(ok.score_visibility, ScoreVisibility::Hidden);
        assert!(
            s.with_changes(&BTreeMap::from([("nope".to_owned(), Value::Bool(true))]))
                .is_err()
        );
        assert!(
            s.with_changes(&BTreeMap::from([("paused".to_owned(), Value::from(3))]))
                .is_err()
        );
        assert!(
            s.with_changes(&BTreeMap::from([
                ("start_ms".to_owned(), Value::from(5)),
                ("end_ms".to_owned(), Value::from(5)),
            ]))
            .is_err()
        );
    }
}
