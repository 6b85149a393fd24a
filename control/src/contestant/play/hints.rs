//! Hints and unlocks (CTFd's `/api/v1/hints` and `/api/v1/unlocks`). A hint's cost is charged
//! once per team, as a negative award, under a state-store lock per (team, hint), with the
//! database's unique key on (team, type, target) as the last guard: the unlock row and the
//! award are written in one transaction, so a refused unlock charges nothing.

use crate::contestant::accounts::{Path, Query};
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use super::challenges::{delete_row, open_challenge};
use super::records::Table;
use super::{Body, Locked, db_error, lock_or, may_act, now_ms, ok, parse_id, settings, unlock};
use crate::contestant::AppState;
use crate::contestant::accounts::{AdminCaller, Caller};
use crate::error::{ApiError, ApiResult};
use fctf_core::db::DbError;

/// A stored hint.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Hint {
    id: i64,
    challenge_id: i64,
    title: String,
    content: String,
    cost: i64,
}

async fn hint(state: &AppState, id: i64) -> ApiResult<Hint> {
    let row = sqlx::query("SELECT id, challenge_id, title, content, cost FROM hints WHERE id = ?")
        .bind(id)
        .fetch_optional(state.db.pool())
        .await
        .map_err(|e| db_error(e.into()))?
        .ok_or_else(|| ApiError::not_found("No such hint."))?;
    let get = |row: &sqlx::any::AnyRow| -> Result<Hint, sqlx::Error> {
        Ok(Hint {
            id: row.try_get("id")?,
            challenge_id: row.try_get("challenge_id")?,
            title: row.try_get("title")?,
            content: row.try_get("content")?,
            cost: row.try_get("cost")?,
        })
    };
    get(&row).map_err(|e| db_error(e.into()))
}

async fn unlocked(state: &AppState, team: i64, hint: i64) -> ApiResult<bool> {
    let row =
        sqlx::query("SELECT id FROM unlocks WHERE team_id = ? AND type = 'hints' AND target = ?")
            .bind(team)
            .bind(hint)
            .fetch_optional(state.db.pool())
            .await
            .map_err(|e| db_error(e.into()))?;
    Ok(row.is_some())
}

fn full(h: &Hint) -> Value {
    json!({"id": h.id, "type": "standard", "challenge": h.challenge_id, "challenge_id": h.challenge_id,
           "title": h.title, "content": h.content, "html": h.content, "cost": h.cost, "view": "unlocked"})
}

/// `GET /api/v1/hints/{id}`: the content once unlocked (or free), else the locked view.
async fn get_hint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let h = hint(&state, parse_id(&id)?).await?;
    if caller.is_admin {
        return Ok(ok(full(&h)));
    }
    super::may_view(&settings(&state).await, now_ms())?;
    open_challenge(&state, &caller, h.challenge_id).await?;
    let open = h.cost == 0
        || match caller.team_id {
            Some(team) => unlocked(&state, team, h.id).await?,
            None => false,
        };
    if open {
        Ok(ok(full(&h)))
    } else {
        Ok(ok(
            json!({"id": h.id, "type": "standard", "challenge": h.challenge_id,
                     "challenge_id": h.challenge_id, "title": h.title, "cost": h.cost,
                     "view": "locked"}),
        ))
    }
}

/// CTFd's unlock body.
#[derive(Debug, Deserialize)]
struct UnlockBody {
    target: i64,
    #[serde(rename = "type", default = "hints_word")]
    kind: String,
}

fn hints_word() -> String {
    "hints".to_owned()
}

/// `POST /api/v1/unlocks`.
async fn unlock_hint(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<UnlockBody>,
) -> ApiResult<Response> {
    if body.kind != "hints" {
        return Err(ApiError::bad_request("Only hints can be unlocked."));
    }
    let settings = settings(&state).await;
    if !caller.is_admin {
        may_act(&settings, now_ms())?;
    }
    let team = caller
        .team_id
        .ok_or_else(|| ApiError::forbidden("You must join a team to unlock hints."))?;
    let h = hint(&state, body.target).await?;
    open_challenge(&state, &caller, h.challenge_id).await?;
    let name = format!("unlock:{team}:{}", h.id);
    let token =
        match lock_or::<(), _, _>(state.store.as_ref(), &name, || async { Ok(None) }).await? {
            Locked::Held(token) => token,
            Locked::Answered(()) => {
                return Err(ApiError::conflict("You've already unlocked this hint."));
            }
        };
    let result = charge(&state, &caller, team, &h).await;
    unlock(state.store.as_ref(), &name, &token).await;
    result
}

/// Writes the unlock and its negative award once; under the (team, hint) lock.
async fn charge(state: &AppState, caller: &Caller, team: i64, h: &Hint) -> ApiResult<Response> {
    if unlocked(state, team, h.id).await? {
        return Err(ApiError::conflict("You've already unlocked this hint."));
    }
    if h.cost > 0 {
        // The live score (not the frozen one): what the team really holds.
        let board = state.play.boards.get_fresh(&state.db, None).await?;
        let score = board.standing(team).map(|s| s.score).unwrap_or(0);
        if score < h.cost {
            return Err(ApiError::forbidden(
                "You do not have enough points to unlock this hint.",
            ));
        }
    }
    let now = now_ms();
    let mut tx = state
        .db
        .pool()
        .begin()
        .await
        .map_err(|e| db_error(e.into()))?;
    let inserted = sqlx::query(
        "INSERT INTO unlocks (user_id, team_id, target, type, created_ms) VALUES (?, ?, ?, 'hints', ?) RETURNING id",
    )
    .bind(caller.user_id)
    .bind(team)
    .bind(h.id)
    .bind(now)
    .fetch_one(&mut *tx)
    .await;
    let unlock_id = match inserted.map_err(DbError::from) {
        Ok(row) => super::records::returned_id(&row).map_err(db_error)?,
        Err(DbError::Conflict(_)) => {
            return Err(ApiError::conflict("You've already unlocked this hint."));
        }
        Err(e) => return Err(db_error(e)),
    };
    if h.cost > 0 {
        sqlx::query(
            "INSERT INTO awards (user_id, team_id, name, description, value, category, icon, created_ms) \
             VALUES (?, ?, ?, ?, ?, 'hints', NULL, ?)",
        )
        .bind(caller.user_id)
        .bind(team)
        .bind(format!("Hint {}", h.id))
        .bind(format!("Hint for challenge {}", h.challenge_id))
        .bind(-h.cost)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(e.into()))?;
    }
    tx.commit().await.map_err(|e| db_error(e.into()))?;
    state.play.boards.invalidate();
    super::actions::record(
        &state.db,
        team,
        caller.user_id,
        super::actions::Action::UnlockHint,
        Some(h.challenge_id),
        Some(format!("hint {} (cost {})", h.id, h.cost)),
    )
    .await;
    Ok(ok(
        json!({"id": unlock_id, "user_id": caller.user_id, "team_id": team,
                 "target": h.id, "type": "hints"}),
    ))
}

/// `GET /api/v1/unlocks`: the caller's team's unlocks (admins: every unlock).
async fn list_unlocks(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let rows = sqlx::query(
        "SELECT id, user_id, team_id, target, type FROM unlocks \
         WHERE ? = 1 OR team_id = ? ORDER BY id",
    )
    .bind(i64::from(caller.is_admin))
    .bind(caller.team_id.unwrap_or(-1))
    .fetch_all(state.db.pool())
    .await
    .map_err(|e| db_error(e.into()))?;
    let data = rows
        .iter()
        .map(|r| {
            Ok(json!({
                "id": r.try_get::<i64, _>("id")?,
                "user_id": r.try_get::<i64, _>("user_id")?,
                "team_id": r.try_get::<i64, _>("team_id")?,
                "target": r.try_get::<i64, _>("target")?,
                "type": r.try_get::<String, _>("type")?,
            }))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(|e| db_error(e.into()))?;
    Ok(ok(data))
}

/// Admin hint body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HintBody {
    #[serde(alias = "challenge")]
    challenge_id: Option<i64>,
    title: Option<String>,
    content: Option<String>,
    cost: Option<i64>,
    #[serde(rename = "type", default)]
    _kind: Option<String>,
    #[serde(default)]
    requirements: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct HintQuery {
    challenge_id: Option<i64>,
}

/// `GET /api/v1/hints` (admin).
async fn list_hints(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Query(q): Query<HintQuery>,
) -> ApiResult<Response> {
    let rows =
        sqlx::query("SELECT id FROM hints WHERE (? IS NULL OR challenge_id = ?) ORDER BY id")
            .bind(q.challenge_id)
            .bind(q.challenge_id)
            .fetch_all(state.db.pool())
            .await
            .map_err(|e| db_error(e.into()))?;
    let mut out = Vec::new();
    for r in rows {
        let id: i64 = r.try_get("id").map_err(|e| db_error(e.into()))?;
        out.push(full(&hint(&state, id).await?));
    }
    Ok(ok(out))
}

async fn save_hint(state: &AppState, h: &Hint) -> ApiResult<i64> {
    if h.cost < 0 {
        return Err(ApiError::bad_request("The cost must be >= 0."));
    }
    if h.content.trim().is_empty() {
        return Err(ApiError::bad_request("The hint is empty."));
    }
    super::records::challenge(&state.db, h.challenge_id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| ApiError::not_found("No such challenge."))?;
    if h.id == 0 {
        let done = sqlx::query("INSERT INTO hints (challenge_id, title, content, cost) VALUES (?, ?, ?, ?) RETURNING id")
            .bind(h.challenge_id)
            .bind(h.title.clone())
            .bind(h.content.clone())
            .bind(h.cost)
            .fetch_one(state.db.pool())
            .await
            .map_err(|e| db_error(e.into()))?;
        super::records::returned_id(&done).map_err(db_error)
    } else {
        sqlx::query(
            "UPDATE hints SET challenge_id = ?, title = ?, content = ?, cost = ? WHERE id = ?",
        )
        .bind(h.challenge_id)
        .bind(h.title.clone())
        .bind(h.content.clone())
        .bind(h.cost)
        .bind(h.id)
        .execute(state.db.pool())
        .await
        .map_err(|e| db_error(e.into()))?;
        Ok(h.id)
    }
}

fn apply(base: Hint, body: HintBody) -> Hint {
    let _ = body.requirements;
    Hint {
        id: base.id,
        challenge_id: body.challenge_id.unwrap_or(base.challenge_id),
        title: body.title.unwrap_or(base.title),
        content: body.content.unwrap_or(base.content),
        cost: body.cost.unwrap_or(base.cost),
    }
}

/// `POST /api/v1/hints` (admin).
async fn create_hint(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Body(body): Body<HintBody>,
) -> ApiResult<Response> {
    let base = Hint {
        id: 0,
        challenge_id: 0,
        title: String::new(),
        content: String::new(),
        cost: 0,
    };
    let mut h = apply(base, body);
    h.id = save_hint(&state, &h).await?;
    Ok(ok(full(&h)))
}

/// `PATCH /api/v1/hints/{id}` (admin).
async fn update_hint(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Path(id): Path<String>,
    Body(body): Body<HintBody>,
) -> ApiResult<Response> {
    let base = hint(&state, parse_id(&id)?).await?;
    let h = apply(base, body);
    save_hint(&state, &h).await?;
    Ok(ok(full(&h)))
}

/// `DELETE /api/v1/hints/{id}` (admin).
async fn delete_hint(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    delete_row(&state, Table::Hints, &id).await
}

/// The hint and unlock routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/hints", get(list_hints).post(create_hint))
        .route(
            "/api/v1/hints/{id}",
            get(get_hint).patch(update_hint).delete(delete_hint),
        )
        .route("/api/v1/unlocks", get(list_unlocks).post(unlock_hint))
}
