//! The team action log: what a team's members did (flag submissions, hint unlocks, instance
//! starts, stops and extensions), for the team itself and for admins: `GET /api/v1/actions`.
//!
//! A flag submission writes its entry in the submission's own transaction (one commit for both:
//! the submission is recorded with its entry or not at all). Other actions append theirs best
//! effort: an entry that cannot be written is logged, never turned into an error for an action
//! that already happened.

use crate::contestant::accounts::Query;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use fctf_core::db::Database;
use serde::Deserialize;
use serde_json::json;
use sqlx::Row;

use super::{db_error, iso8601, now_ms, ok};
use crate::contestant::AppState;
use crate::contestant::accounts::Caller;
use crate::error::{ApiError, ApiResult};

/// What a member did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    SubmitCorrect,
    SubmitIncorrect,
    UnlockHint,
    InstanceStart,
    InstanceStop,
    InstanceExtend,
}

impl Action {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SubmitCorrect => "submit_correct",
            Self::SubmitIncorrect => "submit_incorrect",
            Self::UnlockHint => "unlock_hint",
            Self::InstanceStart => "instance_start",
            Self::InstanceStop => "instance_stop",
            Self::InstanceExtend => "instance_extend",
        }
    }
}

/// The insert of one entry, to run alone or inside another transaction (a flag submission
/// writes its entry in its own transaction: one commit for both rows).
pub(crate) fn insert<'q>(
    team: i64,
    user: i64,
    action: Action,
    challenge: Option<i64>,
    detail: Option<String>,
    at_ms: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(
        "INSERT INTO team_actions (team_id, user_id, action, challenge_id, detail, created_ms) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(team)
    .bind(user)
    .bind(action.as_str())
    .bind(challenge)
    .bind(detail.map(|d| d.chars().take(255).collect::<String>()))
    .bind(at_ms)
}

/// Appends an entry (best effort).
pub async fn record(
    db: &Database,
    team: i64,
    user: i64,
    action: Action,
    challenge: Option<i64>,
    detail: Option<String>,
) {
    let result = insert(team, user, action, challenge, detail, now_ms())
        .execute(db.pool())
        .await;
    if let Err(error) = result {
        tracing::warn!(%error, team, action = action.as_str(), "team action not logged");
    }
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    team_id: Option<i64>,
}

/// `GET /api/v1/actions`: the caller's team's log (admins: `?team_id=`), newest first.
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    let team = if caller.is_admin {
        q.team_id.or(caller.team_id)
    } else {
        caller.team_id
    }
    .ok_or_else(|| ApiError::forbidden("You have no team."))?;
    let rows = sqlx::query(
        "SELECT a.id, a.user_id, u.name AS user_name, a.action, a.challenge_id, a.detail, \
         a.created_ms FROM team_actions a LEFT JOIN users u ON u.id = a.user_id \
         WHERE a.team_id = ? ORDER BY a.id DESC LIMIT 500",
    )
    .bind(team)
    .fetch_all(state.db.pool())
    .await
    .map_err(|e| db_error(e.into()))?;
    let data = rows
        .iter()
        .map(|r| {
            Ok(json!({
                "id": r.try_get::<i64, _>("id")?,
                "user_id": r.try_get::<i64, _>("user_id")?,
                "user_name": r.try_get::<Option<String>, _>("user_name")?,
                "action": r.try_get::<String, _>("action")?,
                "challenge_id": r.try_get::<Option<i64>, _>("challenge_id")?,
                "detail": r.try_get::<Option<String>, _>("detail")?,
                "date": iso8601(r.try_get::<i64, _>("created_ms")?),
            }))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(|e| db_error(e.into()))?;
    Ok(ok(data))
}

/// The action-log route.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/actions", get(list))
}
