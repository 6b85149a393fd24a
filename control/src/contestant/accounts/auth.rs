//! Registration, login, logout and password change (`/api/v1/auth/...`; CTFd does these with
//! forms, so the routes extend its API in the same style).
//!
//! A login gives the user a new session uuid, so every earlier session ends (only the latest
//! login is valid); logout and a password change do the same. A failed login answers the same
//! 401 whether the name or the password was wrong, after the same Argon2 work.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use sqlx::Row;

use super::json::ok;
use super::passwords::check_policy;
use super::records::{self, NewUser, name_key};
use super::session::{SessionClaims, clear_cookie, set_cookie};
use super::{Caller, ClientIp, Json, db_error, now_ms, sql_error};
use crate::contestant::AppState;
use crate::error::{ApiError, ErrorKind};

/// Failed logins one name may make in a burst, and how fast that refills.
const LOGIN_BURST: u32 = 10;
const LOGIN_PER_SEC: f64 = 0.2;

/// Seconds until one more failed login is allowed.
fn limit_retry(limit: fctf_core::store::RateLimit) -> u64 {
    (1.0 / limit.per_second).ceil() as u64
}

/// Body of `POST /api/v1/auth/register`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    pub password: String,
}

/// Body of `POST /api/v1/auth/login`: `name` may also be the email address.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub name: String,
    pub password: String,
}

/// Body of `POST /api/v1/auth/password`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    pub current: String,
    pub new: String,
}

/// Runs a password hash on the blocking pool.
pub(crate) async fn hash(state: &AppState, password: String) -> Result<String, ApiError> {
    let passwords = state.accounts.passwords();
    let _permit = state
        .accounts
        .hashing
        .acquire()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    tokio::task::spawn_blocking(move || passwords.hash_blocking(&password))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| ApiError::internal(&e))
}

/// Verifies a password on the blocking pool (against the dummy hash when `stored` is `None`).
pub(crate) async fn verify(
    state: &AppState,
    password: String,
    stored: Option<String>,
) -> Result<bool, ApiError> {
    let passwords = state.accounts.passwords();
    let _permit = state
        .accounts
        .hashing
        .acquire()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    tokio::task::spawn_blocking(move || passwords.verify_blocking(&password, stored.as_deref()))
        .await
        .map_err(|e| ApiError::internal(&e))
}

/// `data` in the envelope, with a session cookie for `sid`.
fn with_session(state: &AppState, user_id: i64, sid: String, data: serde_json::Value) -> Response {
    let accounts = &state.accounts;
    let now = now_ms() / 1000;
    let ttl = accounts.config.session_ttl_secs;
    let jwt = accounts.session_key.mint(&SessionClaims {
        sub: user_id,
        sid,
        iat: now,
        exp: now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
    });
    let mut response = ok(data);
    if let Ok(value) = HeaderValue::from_str(&set_cookie(&jwt, ttl, accounts.secure_cookie)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// Holds the registration lock while the user count is checked and the user inserted, so the
/// cap holds under concurrent registrations (across processes, through the store).
async fn registration_lock(state: &AppState) -> Result<fctf_core::store::LockToken, ApiError> {
    for _ in 0..50 {
        match state
            .store
            .lock_acquire("accounts:register", Duration::from_secs(10))
            .await
        {
            Ok(Some(token)) => return Ok(token),
            Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => return Err(ApiError::unavailable("state store", &e)),
        }
    }
    Err(ApiError::new(
        ErrorKind::RateLimited,
        "Registration is busy; please try again.",
    )
    .retry_after(1))
}

/// `POST /api/v1/auth/register`: a new player, signed in.
pub async fn register(
    State(state): State<AppState>,
    _client: ClientIp,
    Json(body): Json<Register>,
) -> Result<Response, ApiError> {
    let settings = state.accounts.contest().await;
    if !settings.registration_open {
        return Err(ApiError::forbidden("Registration is closed."));
    }
    let name = records::check_name(&body.name, "user").map_err(unprocessable)?;
    let email = body
        .email
        .as_deref()
        .filter(|e| !e.trim().is_empty())
        .map(records::check_email)
        .transpose()
        .map_err(unprocessable)?;
    check_policy(&body.password, state.accounts.config.password_min_len).map_err(unprocessable)?;
    let password_hash = hash(&state, body.password).await?;
    let user = NewUser {
        name: name.clone(),
        email: email.clone(),
        password_hash,
        admin: false,
        verified: true,
        hidden: false,
    };
    let inserted = if settings.max_users > 0 {
        let lock = registration_lock(&state).await?;
        let result = async {
            let count = records::count_users(&state.db).await.map_err(db_error)?;
            if count >= i64::from(settings.max_users) {
                return Err(ApiError::forbidden("Registration is full."));
            }
            records::insert_user(&state.db, &user).await.map_err(taken)
        }
        .await;
        if let Err(e) = state.store.lock_release("accounts:register", &lock).await {
            tracing::warn!(%e, "registration lock not released; it expires on its own");
        }
        result?
    } else {
        records::insert_user(&state.db, &user)
            .await
            .map_err(taken)?
    };
    let sid = records::rotate_session(&state.db, inserted)
        .await
        .map_err(db_error)?;
    let data =
        json!({"id": inserted, "name": name, "email": email, "team_id": null, "type": "user"});
    Ok(with_session(&state, inserted, sid, data))
}

fn unprocessable(message: String) -> ApiError {
    ApiError::new(ErrorKind::Unprocessable, message)
}

fn taken(error: fctf_core::db::DbError) -> ApiError {
    match error {
        fctf_core::db::DbError::Conflict(_) => {
            ApiError::conflict("That name or email address is already taken.")
        }
        other => db_error(other),
    }
}

/// `POST /api/v1/auth/login`: a session cookie, ending every earlier session of the user.
pub async fn login(
    State(state): State<AppState>,
    _client: ClientIp,
    Json(body): Json<Login>,
) -> Result<Response, ApiError> {
    let wrong = || ApiError::unauthorized("Wrong name or password.");
    if body.name.len() > 255 || body.password.len() > super::passwords::MAX_PASSWORD_LEN {
        return Err(wrong());
    }
    let key = name_key(&body.name);
    let limit = fctf_core::store::RateLimit {
        per_second: LOGIN_PER_SEC,
        burst: LOGIN_BURST,
    };
    // Only failures are counted, so a player's own logins never lock them out; a free look
    // (cost 0) refuses further attempts once failures have used the burst up.
    let bucket = format!("login:{}", fctf_core::store::keys::digest(key.as_bytes()));
    match state.store.rate_limit(&bucket, limit, 0).await {
        Ok(d) if d.remaining == 0 => {
            let wait = limit_retry(limit);
            return Err(ApiError::new(
                ErrorKind::RateLimited,
                "Too many failed logins for this account; wait a moment.",
            )
            .retry_after(wait));
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(%e, "login rate limit unavailable; attempt let through"),
    }
    let row = sqlx::query(
        "SELECT id, name, password, type, banned, team_id FROM users \
         WHERE name_key = ? OR email_key = ? ORDER BY id LIMIT 1",
    )
    .bind(key.clone())
    .bind(body.name.trim().to_lowercase())
    .fetch_optional(state.db.pool())
    .await
    .map_err(sql_error)?;
    let stored = match &row {
        Some(row) => Some(row.try_get::<String, _>("password").map_err(sql_error)?),
        None => None,
    };
    let matched = verify(&state, body.password, stored).await?;
    let Some(row) = row.filter(|_| matched) else {
        if let Err(e) = state.store.rate_limit(&bucket, limit, 1).await {
            tracing::warn!(%e, "failed login not counted");
        }
        return Err(wrong());
    };
    if row.try_get::<i64, _>("banned").map_err(sql_error)? != 0 {
        return Err(ApiError::forbidden("Your account is banned."));
    }
    let user_id: i64 = row.try_get("id").map_err(sql_error)?;
    let sid = records::rotate_session(&state.db, user_id)
        .await
        .map_err(db_error)?;
    state.accounts.forget_user(user_id);
    let data = json!({
        "id": user_id,
        "name": row.try_get::<String, _>("name").map_err(sql_error)?,
        "team_id": row.try_get::<Option<i64>, _>("team_id").map_err(sql_error)?,
        "type": row.try_get::<String, _>("type").map_err(sql_error)?,
    });
    Ok(with_session(&state, user_id, sid, data))
}

/// `POST /api/v1/auth/logout`: ends the user's session (every session: only one is valid).
pub async fn logout(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    records::rotate_session(&state.db, caller.user_id)
        .await
        .map_err(db_error)?;
    state.accounts.forget_user(caller.user_id);
    let mut response = super::json::done();
    if let Ok(value) = HeaderValue::from_str(&clear_cookie(state.accounts.secure_cookie)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// `POST /api/v1/auth/password`: needs the current password; ends every other session and
/// answers a fresh cookie. API tokens stay valid (revoke them at `/api/v1/tokens`).
pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<ChangePassword>,
) -> Result<Response, ApiError> {
    let row = sqlx::query("SELECT password FROM users WHERE id = ?")
        .bind(caller.user_id)
        .fetch_one(state.db.pool())
        .await
        .map_err(sql_error)?;
    let stored: String = row.try_get("password").map_err(sql_error)?;
    if !verify(&state, body.current, Some(stored)).await? {
        return Err(ApiError::forbidden("The current password is wrong."));
    }
    check_policy(&body.new, state.accounts.config.password_min_len).map_err(unprocessable)?;
    set_password(&state, caller.user_id, body.new).await?;
    let sid = records::rotate_session(&state.db, caller.user_id)
        .await
        .map_err(db_error)?;
    state.accounts.forget_user(caller.user_id);
    Ok(with_session(
        &state,
        caller.user_id,
        sid,
        json!({"id": caller.user_id}),
    ))
}

/// Stores a new password hash (policy already checked).
pub(crate) async fn set_password(
    state: &AppState,
    user_id: i64,
    password: String,
) -> Result<(), ApiError> {
    let hashed = hash(state, password).await?;
    sqlx::query("UPDATE users SET password = ? WHERE id = ?")
        .bind(hashed)
        .bind(user_id)
        .execute(state.db.pool())
        .await
        .map_err(sql_error)?;
    Ok(())
}
