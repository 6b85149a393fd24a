//! API tokens (CTFd's `/api/v1/tokens`): `Authorization: Token <value>`, each with an expiry.
//! The value is shown once, at creation; the database keeps only its SHA-256, so a leaked
//! database holds no usable token. Players manage their own tokens; admins may issue one for
//! any user (`user_id`) and see and revoke all of them.

use axum::extract::State;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use sqlx::Row;

use super::json::{done, ok};
use super::{Caller, Json, Path, now_ms, sql_error};
use crate::contestant::AppState;
use crate::error::{ApiError, ErrorKind};

/// Prefix of every token value (so a leaked one is recognisable in logs and scanners).
pub const TOKEN_PREFIX: &str = "fctf_";
/// Lifetime of a token created without `expiration_ms`.
pub const DEFAULT_TOKEN_TTL_MS: i64 = 30 * 24 * 3600 * 1000;
/// Longest token value read.
const MAX_TOKEN_LEN: usize = 128;

/// The stored form of a token value.
pub fn digest(value: &str) -> String {
    hex_lower(&Sha256::digest(value.as_bytes()))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh token value.
pub fn generate() -> String {
    format!(
        "{TOKEN_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    )
}

/// The user a token value names, if it exists and has not expired.
pub(crate) async fn authenticate(state: &AppState, value: &str) -> Result<i64, ApiError> {
    if value.is_empty() || value.len() > MAX_TOKEN_LEN {
        return Err(ApiError::unauthorized("Unknown API token."));
    }
    let key = digest(value);
    let cached = state.accounts.tokens.get(&key);
    let (user_id, expiration) = match cached {
        Some(hit) => hit,
        None => {
            let row = sqlx::query("SELECT user_id, expiration_ms FROM tokens WHERE digest = ?")
                .bind(key.clone())
                .fetch_optional(state.db.pool())
                .await
                .map_err(sql_error)?;
            let Some(row) = row else {
                return Err(ApiError::unauthorized("Unknown API token."));
            };
            let found: (i64, i64) = (
                row.try_get("user_id").map_err(sql_error)?,
                row.try_get("expiration_ms").map_err(sql_error)?,
            );
            state.accounts.tokens.insert(key, found);
            found
        }
    };
    if now_ms() >= expiration {
        return Err(ApiError::unauthorized("This API token has expired."));
    }
    Ok(user_id)
}

/// Stores a new token for `user_id`; returns its row with the value (shown this once).
pub(crate) async fn issue(
    state: &AppState,
    user_id: i64,
    expiration_ms: i64,
    description: Option<String>,
) -> Result<Value, ApiError> {
    let value = generate();
    let created = now_ms();
    sqlx::query(
        "INSERT INTO tokens (user_id, type, digest, description, created_ms, expiration_ms) \
         VALUES (?, 'user', ?, ?, ?, ?)",
    )
    .bind(user_id)
    .bind(digest(&value))
    .bind(description.clone())
    .bind(created)
    .bind(expiration_ms)
    .execute(state.db.pool())
    .await
    .map_err(sql_error)?;
    let row = sqlx::query("SELECT id FROM tokens WHERE digest = ?")
        .bind(digest(&value))
        .fetch_one(state.db.pool())
        .await
        .map_err(sql_error)?;
    let id: i64 = row.try_get("id").map_err(sql_error)?;
    Ok(json!({
        "id": id,
        "type": "user",
        "user_id": user_id,
        "description": description,
        "created": created,
        "expiration": expiration_ms,
        "value": value,
    }))
}

fn token_json(row: &sqlx::any::AnyRow) -> Result<Value, ApiError> {
    Ok(json!({
        "id": row.try_get::<i64, _>("id").map_err(sql_error)?,
        "type": row.try_get::<String, _>("type").map_err(sql_error)?,
        "user_id": row.try_get::<i64, _>("user_id").map_err(sql_error)?,
        "description": row.try_get::<Option<String>, _>("description").map_err(sql_error)?,
        "created": row.try_get::<i64, _>("created_ms").map_err(sql_error)?,
        "expiration": row.try_get::<i64, _>("expiration_ms").map_err(sql_error)?,
    }))
}

const COLUMNS: &str = "id, type, user_id, description, created_ms, expiration_ms";

/// `GET /api/v1/tokens`: the caller's tokens (all of them for an admin).
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let rows = if caller.is_admin {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM tokens ORDER BY id"
        )))
        .fetch_all(state.db.pool())
        .await
    } else {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM tokens WHERE user_id = ? ORDER BY id"
        )))
        .bind(caller.user_id)
        .fetch_all(state.db.pool())
        .await
    }
    .map_err(sql_error)?;
    let data = rows.iter().map(token_json).collect::<Result<Vec<_>, _>>()?;
    Ok(ok(data))
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Expiry (Unix ms); default 30 days from now.
    #[serde(default)]
    pub expiration_ms: Option<i64>,
    #[serde(default)]
    pub description: Option<String>,
    /// Admins only: the user the token is for (default: the caller).
    #[serde(default)]
    pub user_id: Option<i64>,
}

/// `POST /api/v1/tokens`: a new token; its value is in this answer only.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<NewToken>,
) -> Result<Response, ApiError> {
    let now = now_ms();
    let expiration = body.expiration_ms.unwrap_or(now + DEFAULT_TOKEN_TTL_MS);
    if expiration <= now {
        // A schema cannot know the clock: well formed, refused now (422).
        return Err(ApiError::new(
            ErrorKind::Unprocessable,
            "The expiration must be in the future.",
        ));
    }
    if body.description.as_ref().is_some_and(|d| d.len() > 1000) {
        return Err(ApiError::bad_request("The description is too long."));
    }
    let user_id = match body.user_id {
        Some(id) if id != caller.user_id => {
            caller.require_admin()?;
            let exists = sqlx::query("SELECT id FROM users WHERE id = ?")
                .bind(id)
                .fetch_optional(state.db.pool())
                .await
                .map_err(sql_error)?;
            if exists.is_none() {
                return Err(ApiError::not_found("No such user."));
            }
            id
        }
        _ => caller.user_id,
    };
    Ok(ok(
        issue(&state, user_id, expiration, body.description).await?
    ))
}

async fn visible_token(
    state: &AppState,
    caller: &Caller,
    id: i64,
) -> Result<sqlx::any::AnyRow, ApiError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS}, digest FROM tokens WHERE id = ?"
    )))
    .bind(id)
    .fetch_optional(state.db.pool())
    .await
    .map_err(sql_error)?;
    match row {
        Some(row)
            if caller.is_admin
                || row.try_get::<i64, _>("user_id").map_err(sql_error)? == caller.user_id =>
        {
            Ok(row)
        }
        _ => Err(ApiError::not_found("No such token.")),
    }
}

/// `GET /api/v1/tokens/{id}`.
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let row = visible_token(&state, &caller, id).await?;
    Ok(ok(token_json(&row)?))
}

/// `DELETE /api/v1/tokens/{id}`: revokes at once.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let row = visible_token(&state, &caller, id).await?;
    let stored: String = row.try_get("digest").map_err(sql_error)?;
    state.accounts.tokens.invalidate(&stored);
    sqlx::query("DELETE FROM tokens WHERE id = ?")
        .bind(id)
        .execute(state.db.pool())
        .await
        .map_err(sql_error)?;
    Ok(done())
}
