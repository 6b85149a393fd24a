//! Awards (CTFd's `/api/v1/awards`), notifications (`/api/v1/notifications`) and the admins'
//! view of flag-sharing events (`/api/v1/cheats`).

use crate::contestant::accounts::{Path, Query};
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{delete, get};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use super::challenges::delete_row;
use super::records::{Table, returned_id};
use super::{Body, db_error, iso8601, now_ms, ok};
use crate::contestant::AppState;
use crate::contestant::accounts::{AdminCaller, Caller};
use crate::error::{ApiError, ApiResult, ErrorKind};

fn rows_json(
    rows: &[sqlx::any::AnyRow],
    one: impl Fn(&sqlx::any::AnyRow) -> Result<Value, sqlx::Error>,
) -> ApiResult<Vec<Value>> {
    rows.iter()
        .map(one)
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(|e| db_error(e.into()))
}

fn award_json(r: &sqlx::any::AnyRow) -> Result<Value, sqlx::Error> {
    Ok(json!({
        "id": r.try_get::<i64, _>("id")?,
        "user_id": r.try_get::<Option<i64>, _>("user_id")?,
        "team_id": r.try_get::<i64, _>("team_id")?,
        "name": r.try_get::<String, _>("name")?,
        "description": r.try_get::<Option<String>, _>("description")?,
        "value": r.try_get::<i64, _>("value")?,
        "category": r.try_get::<Option<String>, _>("category")?,
        "icon": r.try_get::<Option<String>, _>("icon")?,
        "date": iso8601(r.try_get::<i64, _>("created_ms")?),
    }))
}

#[derive(Debug, Deserialize)]
struct AwardQuery {
    team_id: Option<i64>,
}

/// `GET /api/v1/awards`: a team's awards (players: their own team's; admins: any or all).
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AwardQuery>,
) -> ApiResult<Response> {
    let team = if caller.is_admin {
        q.team_id
    } else {
        Some(
            caller
                .team_id
                .ok_or_else(|| ApiError::forbidden("You have no team."))?,
        )
    };
    let rows = sqlx::query(
        "SELECT id, user_id, team_id, name, description, value, category, icon, created_ms \
         FROM awards WHERE (? IS NULL OR team_id = ?) ORDER BY id",
    )
    .bind(team)
    .bind(team)
    .fetch_all(state.db.pool())
    .await
    .map_err(|e| db_error(e.into()))?;
    Ok(ok(rows_json(&rows, award_json)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAward {
    team_id: i64,
    #[serde(default)]
    user_id: Option<i64>,
    name: String,
    #[serde(default)]
    description: Option<String>,
    value: i64,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    icon: Option<String>,
}

/// Largest award value either way: scores are sums of values, and a board of such awards stays
/// far from `i64`'s range (the sums saturate besides).
pub const MAX_AWARD_VALUE: i64 = 1_000_000_000;

/// `POST /api/v1/awards` (admin).
async fn create(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Body(body): Body<NewAward>,
) -> ApiResult<Response> {
    if body.name.trim().is_empty() || body.name.chars().count() > 255 {
        return Err(ApiError::bad_request("The name must be 1-255 characters."));
    }
    if body.value.unsigned_abs() > MAX_AWARD_VALUE.unsigned_abs() {
        return Err(ApiError::new(
            ErrorKind::Unprocessable,
            format!("The value must be between -{MAX_AWARD_VALUE} and {MAX_AWARD_VALUE}."),
        ));
    }
    let done = sqlx::query(
        "INSERT INTO awards (user_id, team_id, name, description, value, category, icon, created_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(body.user_id)
    .bind(body.team_id)
    .bind(body.name.trim().to_owned())
    .bind(body.description)
    .bind(body.value)
    .bind(body.category)
    .bind(body.icon)
    .bind(now_ms())
    .fetch_one(state.db.pool())
    .await
    .map_err(|e| db_error(e.into()))?;
    state.play.boards.invalidate();
    let row = sqlx::query(
        "SELECT id, user_id, team_id, name, description, value, category, icon, created_ms \
         FROM awards WHERE id = ?",
    )
    .bind(returned_id(&done).map_err(db_error)?)
    .fetch_one(state.db.pool())
    .await
    .map_err(|e| db_error(e.into()))?;
    Ok(ok(award_json(&row).map_err(|e| db_error(e.into()))?))
}

/// `DELETE /api/v1/awards/{id}` (admin).
async fn remove(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    delete_row(&state, Table::Awards, &id).await
}

fn notification_json(r: &sqlx::any::AnyRow) -> Result<Value, sqlx::Error> {
    Ok(json!({
        "id": r.try_get::<i64, _>("id")?,
        "title": r.try_get::<String, _>("title")?,
        "content": r.try_get::<String, _>("content")?,
        "html": r.try_get::<String, _>("content")?,
        "date": iso8601(r.try_get::<i64, _>("created_ms")?),
    }))
}

#[derive(Debug, Deserialize)]
struct SinceQuery {
    since_id: Option<i64>,
}

/// `GET /api/v1/notifications` (public, `?since_id=` for polling).
async fn notifications(
    State(state): State<AppState>,
    Query(q): Query<SinceQuery>,
) -> ApiResult<Response> {
    let rows = sqlx::query(
        "SELECT id, title, content, created_ms FROM notifications WHERE id > ? ORDER BY id DESC LIMIT 200",
    )
    .bind(q.since_id.unwrap_or(0))
    .fetch_all(state.db.pool())
    .await
    .map_err(|e| db_error(e.into()))?;
    Ok(ok(rows_json(&rows, notification_json)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNotification {
    title: String,
    content: String,
    #[serde(rename = "type", default)]
    _kind: Option<String>,
    #[serde(default)]
    _sound: Option<bool>,
}

/// `POST /api/v1/notifications` (admin).
async fn notify(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Body(body): Body<NewNotification>,
) -> ApiResult<Response> {
    if body.title.trim().is_empty() || body.title.chars().count() > 255 || body.content.is_empty() {
        return Err(ApiError::bad_request(
            "A notification needs a title (1-255 characters) and a text.",
        ));
    }
    let done = sqlx::query(
        "INSERT INTO notifications (title, content, created_ms) VALUES (?, ?, ?) RETURNING id",
    )
    .bind(body.title.trim().to_owned())
    .bind(body.content)
    .bind(now_ms())
    .fetch_one(state.db.pool())
    .await
    .map_err(|e| db_error(e.into()))?;
    let row = sqlx::query("SELECT id, title, content, created_ms FROM notifications WHERE id = ?")
        .bind(returned_id(&done).map_err(db_error)?)
        .fetch_one(state.db.pool())
        .await
        .map_err(|e| db_error(e.into()))?;
    Ok(ok(notification_json(&row).map_err(|e| db_error(e.into()))?))
}

/// `DELETE /api/v1/notifications/{id}` (admin).
async fn unnotify(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    delete_row(&state, Table::Notifications, &id).await
}

/// `GET /api/v1/cheats` (admin): flag-sharing events, naming both teams.
async fn cheats(State(state): State<AppState>, _admin: AdminCaller) -> ApiResult<Response> {
    let rows = sqlx::query(
        "SELECT id, challenge_id, team_id, user_id, flag_owner_team_id, submission_id, created_ms \
         FROM cheat_events ORDER BY id DESC LIMIT 1000",
    )
    .fetch_all(state.db.pool())
    .await
    .map_err(|e| db_error(e.into()))?;
    Ok(ok(rows_json(&rows, |r| {
        Ok(json!({
            "id": r.try_get::<i64, _>("id")?,
            "challenge_id": r.try_get::<i64, _>("challenge_id")?,
            "team_id": r.try_get::<i64, _>("team_id")?,
            "user_id": r.try_get::<i64, _>("user_id")?,
            "flag_owner_team_id": r.try_get::<i64, _>("flag_owner_team_id")?,
            "submission_id": r.try_get::<i64, _>("submission_id")?,
            "date": iso8601(r.try_get::<i64, _>("created_ms")?),
        }))
    })?))
}

/// The award, notification and cheat-event routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/awards", get(list).post(create))
        .route("/api/v1/awards/{id}", delete(remove))
        .route("/api/v1/notifications", get(notifications).post(notify))
        .route("/api/v1/notifications/{id}", delete(unnotify))
        .route("/api/v1/cheats", get(cheats))
}
