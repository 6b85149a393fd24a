//! Accounts: registration, login, sessions, API tokens, users, teams, brackets and the contest
//! settings, plus what every other route of the Contestant Service takes from here:
//!
//! - [`Caller`] (signed in: session cookie or `Authorization: Token ...`), [`AdminCaller`],
//!   `Option<Caller>` for public routes; the extractors also apply the per-IP and per-user API
//!   rate limits ([`limits`]);
//! - [`Json`], [`Query`], [`Path`]: extractors that answer bad input with a 400/404 in the one
//!   error shape, and [`json::ok`] / [`json::ok_page`], CTFd's success envelopes;
//! - [`AccountsState::contest`] and [`ContestSettings::phase`]: the contest window every route
//!   enforces;
//! - [`testkit`]: a whole app over a fresh database, and players, for tests.

mod auth;
pub mod bootstrap;
mod caller;
mod configs;
pub mod json;
pub mod limits;
pub mod openapi;
pub mod passwords;
pub mod principal;
mod records;
pub mod session;
pub mod settings;
mod teams;
pub mod testkit;
mod tokens;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, patch, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fctf_core::config::{Config, ContestantConfig};
use fctf_core::db::{Database, DbError};
use sqlx::{AssertSqlSafe, Row};

pub use self::caller::{AdminCaller, Caller};
pub use self::json::{Json, Path, Query};
pub use self::limits::ClientIp;
pub use self::settings::{ContestPhase, ContestSettings, ScoreVisibility};

use self::passwords::Passwords;
use self::principal::Principals;
use self::session::SessionKey;
use self::settings::SettingsCache;
use super::AppState;
use crate::error::ApiError;

/// State owned by accounts: the session key, the short caches of callers and settings, the
/// password hasher.
#[derive(Debug)]
pub struct AccountsState {
    db: Database,
    config: ContestantConfig,
    session_key: SessionKey,
    settings: SettingsCache,
    principals: Principals,
    /// Token digest → (user id, expiry ms), for [`principal::PRINCIPAL_TTL`]; a revocation in
    /// this process drops the entry at once.
    tokens: moka::sync::Cache<String, (i64, i64)>,
    passwords: std::sync::RwLock<Arc<Passwords>>,
    /// At most one password hash per CPU at a time: a burst of logins queues here instead of
    /// filling the blocking pool and starving everything else.
    hashing: tokio::sync::Semaphore,
    secure_cookie: bool,
}

impl AccountsState {
    /// Loads the session key (generated and stored on first start) and the contest settings.
    pub async fn new(db: &Database, config: &Config) -> Result<Self, ApiError> {
        let secret = session_secret(db)
            .await
            .map_err(|e| ApiError::unavailable("database", &e))?;
        let settings = SettingsCache::load(db, ContestSettings::defaults(config))
            .await
            .map_err(|e| ApiError::unavailable("database", &e))?;
        Ok(Self {
            db: db.clone(),
            config: config.contestant.clone(),
            session_key: SessionKey::new(&secret),
            settings,
            principals: Principals::new(),
            tokens: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(principal::PRINCIPAL_TTL)
                .build(),
            passwords: std::sync::RwLock::new(Arc::new(Passwords::standard())),
            hashing: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            ),
            secure_cookie: config.contestant.public_url.as_str().starts_with("https:"),
        })
    }

    /// The contest settings in force (cached for [`settings::SETTINGS_TTL`]; an admin's change
    /// through this process applies at once).
    pub async fn contest(&self) -> ContestSettings {
        self.settings.get(&self.db).await.as_ref().clone()
    }

    /// Switches to the cheapest password hashing. For tests only ([`testkit`] does it).
    pub fn use_light_password_hashing(&self) {
        *self
            .passwords
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(Passwords::light());
    }

    fn passwords(&self) -> Arc<Passwords> {
        self.passwords
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Drops the cached caller of `user_id` in this process (after a change to the user or its
    /// team).
    pub fn forget_user(&self, user_id: i64) {
        self.principals.forget(user_id);
    }
}

/// The session secret: read, or generated and stored by the first process to start (an insert
/// that ignores a concurrent winner, then a read, so every process agrees).
async fn session_secret(db: &Database) -> Result<Vec<u8>, DbError> {
    let fresh = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let insert = format!(
        "{} INTO accounts_secrets (name, value) VALUES ('session_key', ?)",
        db.dialect().insert_ignore()
    );
    sqlx::query(AssertSqlSafe(insert))
        .bind(fresh)
        .execute(db.pool())
        .await?;
    let row = sqlx::query("SELECT value FROM accounts_secrets WHERE name = 'session_key'")
        .fetch_one(db.pool())
        .await?;
    let value: String = row.try_get("value")?;
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|e| DbError::Corrupt(format!("session key: {e}")))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A database error as the API answers it.
pub(crate) fn db_error(error: DbError) -> ApiError {
    match error {
        DbError::Unavailable(_) => ApiError::unavailable("database", &error),
        DbError::Conflict(_) => ApiError::conflict("That conflicts with an existing record."),
        _ => ApiError::internal(&error),
    }
}

/// A sqlx error as the API answers it.
pub(crate) fn sql_error(error: sqlx::Error) -> ApiError {
    db_error(DbError::from(error))
}

/// The accounts routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/register", post(auth::register))
        .route("/api/v1/auth/login", post(auth::login))
        .route("/api/v1/auth/logout", post(auth::logout))
        .route("/api/v1/auth/password", post(auth::change_password))
        .route("/api/v1/users", get(users::list).post(users::create))
        .route("/api/v1/users/me", get(users::me).patch(users::patch_me))
        .route(
            "/api/v1/users/{id}",
            get(users::get_one)
                .patch(users::admin_patch)
                .delete(users::admin_delete),
        )
        .route("/api/v1/teams", get(teams::list).post(teams::create))
        .route("/api/v1/teams/join", post(teams::join))
        .route("/api/v1/teams/me", get(teams::me).patch(teams::patch_me))
        .route("/api/v1/teams/me/leave", post(teams::leave))
        .route(
            "/api/v1/teams/{id}",
            get(teams::get_one)
                .patch(teams::admin_patch)
                .delete(teams::admin_delete),
        )
        .route(
            "/api/v1/teams/{id}/members",
            get(teams::members)
                .post(teams::admin_add_member)
                .delete(teams::admin_remove_member),
        )
        .route(
            "/api/v1/brackets",
            get(teams::brackets).post(teams::create_bracket),
        )
        .route(
            "/api/v1/brackets/{id}",
            patch(teams::patch_bracket).delete(teams::delete_bracket),
        )
        .route("/api/v1/tokens", get(tokens::list).post(tokens::create))
        .route(
            "/api/v1/tokens/{id}",
            get(tokens::get_one).delete(tokens::delete),
        )
        .route("/api/v1/configs", get(configs::list).patch(configs::patch))
        .route(
            "/api/v1/configs/{key}",
            get(configs::get_one).patch(configs::patch_one),
        )
        .route("/api/v1/contest", get(configs::contest))
}
