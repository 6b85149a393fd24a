//! What the extractors need to know about a signed-in user, read from the database and cached in
//! the process for [`PRINCIPAL_TTL`]. Writes in this process drop the entry at once; a change
//! through another process (a newer login there, a ban) takes effect here within the TTL.

use std::sync::Arc;
use std::time::Duration;

use fctf_core::db::{Database, DbError, DbResult};
use sqlx::Row;

/// How long a process trusts its cached copy of a user.
pub const PRINCIPAL_TTL: Duration = Duration::from_secs(2);

/// A user as the extractors see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user_id: i64,
    pub name: String,
    pub team_id: Option<i64>,
    pub is_admin: bool,
    pub is_captain: bool,
    pub banned: bool,
    pub team_banned: bool,
    pub verified: bool,
    pub session_uuid: String,
}

/// Why a known user may not act.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Banned,
    TeamBanned,
    Unverified,
}

impl Principal {
    /// The rules every authenticated request passes (admins pass them all): banned users and
    /// members of banned teams are refused, and so are unverified users, as in the original.
    pub fn refusal(&self) -> Option<Refusal> {
        if self.is_admin {
            None
        } else if self.banned {
            Some(Refusal::Banned)
        } else if self.team_banned {
            Some(Refusal::TeamBanned)
        } else if !self.verified {
            Some(Refusal::Unverified)
        } else {
            None
        }
    }
}

/// The per-process cache of principals.
#[derive(Debug)]
pub struct Principals {
    cache: moka::sync::Cache<i64, Arc<Principal>>,
}

impl Default for Principals {
    fn default() -> Self {
        Self::new()
    }
}

impl Principals {
    pub fn new() -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(PRINCIPAL_TTL)
                .build(),
        }
    }

    /// The user `user_id`, from the cache or the database; `None` when it does not exist.
    pub async fn get(&self, db: &Database, user_id: i64) -> DbResult<Option<Arc<Principal>>> {
        if let Some(hit) = self.cache.get(&user_id) {
            return Ok(Some(hit));
        }
        let Some(principal) = load(db, user_id).await? else {
            return Ok(None);
        };
        let principal = Arc::new(principal);
        self.cache.insert(user_id, principal.clone());
        Ok(Some(principal))
    }

    pub fn forget(&self, user_id: i64) {
        self.cache.invalidate(&user_id);
    }
}

async fn load(db: &Database, user_id: i64) -> DbResult<Option<Principal>> {
    let row = sqlx::query(
        "SELECT u.id, u.name, u.team_id, u.type, u.banned, u.verified, u.session_uuid, \
         t.captain_id, t.banned AS team_banned \
         FROM users u LEFT JOIN teams t ON t.id = u.team_id WHERE u.id = ?",
    )
    .bind(user_id)
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else { return Ok(None) };
    let get = |e: sqlx::Error| DbError::from(e);
    let team_id: Option<i64> = row.try_get("team_id").map_err(get)?;
    let captain_id: Option<i64> = row.try_get("captain_id").map_err(get)?;
    let team_banned: Option<i64> = row.try_get("team_banned").map_err(get)?;
    let kind: String = row.try_get("type").map_err(get)?;
    Ok(Some(Principal {
        user_id,
        name: row.try_get("name").map_err(get)?,
        team_id,
        is_admin: kind == "admin",
        is_captain: team_id.is_some() && captain_id == Some(user_id),
        banned: row.try_get::<i64, _>("banned").map_err(get)? != 0,
        team_banned: team_banned.unwrap_or(0) != 0,
        verified: row.try_get::<i64, _>("verified").map_err(get)? != 0,
        session_uuid: row.try_get("session_uuid").map_err(get)?,
    }))
}
