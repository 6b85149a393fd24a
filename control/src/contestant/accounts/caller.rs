//! The authenticated caller of a route: [`Caller`], [`AdminCaller`] and `Option<Caller>`.
//!
//! Credentials, in order: `Authorization: Token <api token>` (CTFd's scheme), then the session
//! cookie. A session is valid when its JWT verifies and its session uuid is the user's latest
//! (see [`super::session`]). Then the user rules apply (banned, team banned, unverified: 403),
//! and the per-IP and per-user rate limits.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::header;
use axum::http::request::Parts;

use super::principal::{Principal, Refusal};
use super::session::{COOKIE, cookie_value};
use super::{limits, now_ms, tokens};
use crate::contestant::AppState;
use crate::error::ApiError;

/// A signed-in user (player or admin).
#[derive(Clone, Debug)]
pub struct Caller {
    pub user_id: i64,
    pub name: String,
    pub team_id: Option<i64>,
    pub is_admin: bool,
    pub is_captain: bool,
}

/// A signed-in admin: 403 for anyone else.
#[derive(Clone, Debug)]
pub struct AdminCaller(pub Caller);

impl Caller {
    /// 403 unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin {
            Ok(())
        } else {
            Err(ApiError::forbidden("Only admins may do that."))
        }
    }

    /// The caller's team, or 403 when they have none.
    pub fn require_team(&self) -> Result<i64, ApiError> {
        self.team_id
            .ok_or_else(|| ApiError::forbidden("Join or create a team first."))
    }

    fn of(principal: &Principal) -> Self {
        Self {
            user_id: principal.user_id,
            name: principal.name.clone(),
            team_id: principal.team_id,
            is_admin: principal.is_admin,
            is_captain: principal.is_captain,
        }
    }
}

/// What the request's credentials come to.
enum Outcome {
    /// No credentials at all.
    Anonymous,
    /// Credentials that do not authenticate (bad, expired, revoked).
    Invalid(ApiError),
    /// A known user who may not act.
    Refused(ApiError),
    Ok(Caller),
}

/// The user id the credentials name, before the user rules.
async fn authenticate(parts: &Parts, state: &AppState) -> Result<Option<i64>, ApiError> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or("");
        let Some(token) = value.strip_prefix("Token ") else {
            return Err(ApiError::unauthorized(
                "Use `Authorization: Token <your API token>`.",
            ));
        };
        return tokens::authenticate(state, token.trim()).await.map(Some);
    }
    let Some(jwt) = parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| cookie_value(v, COOKIE))
    else {
        return Ok(None);
    };
    let claims = state
        .accounts
        .session_key
        .verify(jwt, now_ms() / 1000)
        .map_err(|_| ApiError::unauthorized("Your session has ended; please log in again."))?;
    let principal = state
        .accounts
        .principals
        .get(&state.db, claims.sub)
        .await
        .map_err(super::db_error)?;
    match principal {
        Some(p) if p.session_uuid == claims.sid => Ok(Some(p.user_id)),
        _ => Err(ApiError::unauthorized(
            "Your session has ended; please log in again.",
        )),
    }
}

async fn resolve(parts: &mut Parts, state: &AppState) -> Result<Outcome, ApiError> {
    limits::charge_ip(parts, state).await?;
    let user_id = match authenticate(parts, state).await {
        Ok(Some(id)) => id,
        Ok(None) => return Ok(Outcome::Anonymous),
        Err(error) if error.kind.status().is_server_error() => return Err(error),
        Err(error) => return Ok(Outcome::Invalid(error)),
    };
    let principal = state
        .accounts
        .principals
        .get(&state.db, user_id)
        .await
        .map_err(super::db_error)?;
    let Some(principal) = principal else {
        return Ok(Outcome::Invalid(ApiError::unauthorized(
            "This account no longer exists.",
        )));
    };
    if let Some(refusal) = principal.refusal() {
        let message = match refusal {
            Refusal::Banned => "Your account is banned.",
            Refusal::TeamBanned => "Your team is banned.",
            Refusal::Unverified => "Your account is not verified yet.",
        };
        return Ok(Outcome::Refused(ApiError::forbidden(message)));
    }
    limits::charge_user(parts, state, principal.user_id).await?;
    Ok(Outcome::Ok(Caller::of(&principal)))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match resolve(parts, state).await? {
            Outcome::Ok(caller) => Ok(caller),
            Outcome::Anonymous => Err(ApiError::unauthorized(
                "Please log in (or send `Authorization: Token <your API token>`).",
            )),
            Outcome::Invalid(error) | Outcome::Refused(error) => Err(error),
        }
    }
}

/// For public routes: `None` when anonymous, or when the credentials do not authenticate (an
/// expired cookie must not lock a visitor out of public pages). A banned user is refused.
impl OptionalFromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, ApiError> {
        match resolve(parts, state).await? {
            Outcome::Ok(caller) => Ok(Some(caller)),
            Outcome::Anonymous | Outcome::Invalid(_) => Ok(None),
            Outcome::Refused(error) => Err(error),
        }
    }
}

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller =
            <Caller as FromRequestParts<AppState>>::from_request_parts(parts, state).await?;
        caller.require_admin()?;
        Ok(Self(caller))
    }
}
