//! First-start accounts for `fctf up`: an admin (with an API token for the admin REST API) and a
//! demo player in a demo team, so a new user can play at once. Idempotent: an account that
//! exists is kept (its password is never reset); a fresh API token is issued at each start.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sqlx::Row as _;

use super::records::{self, NewUser, TeamError};
use super::{now_ms, tokens};
use crate::contestant::AppState;
use crate::error::ApiError;

/// How long the admin API token printed at start stays valid.
const ADMIN_TOKEN_TTL_MS: i64 = 30 * 24 * 3600 * 1000;

/// An account made or found at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub user_id: i64,
    pub name: String,
    /// The password, only when the account was created now (it is stored hashed).
    pub new_password: Option<String>,
}

/// The admin account `name` (created with a random password when absent) and a new API token.
pub async fn ensure_admin(state: &AppState, name: &str) -> Result<(Account, String), ApiError> {
    let account = ensure_user(state, name, true).await?;
    let token = tokens::issue(
        state,
        account.user_id,
        now_ms().saturating_add(ADMIN_TOKEN_TTL_MS),
        Some("issued by fctf up".to_owned()),
    )
    .await?;
    let value = token
        .get("value")
        .and_then(|v| v.as_str())
        .ok_or_else(|| ApiError::internal(&"token issue answered no value"))?
        .to_owned();
    Ok((account, value))
}

/// The player `name` (created with a random password when absent), captain or member of `team`.
pub async fn ensure_player(state: &AppState, name: &str, team: &str) -> Result<Account, ApiError> {
    let account = ensure_user(state, name, false).await?;
    let db_error = |e: fctf_core::db::DbError| ApiError::internal(&e);
    let in_team = sqlx::query("SELECT team_id FROM users WHERE id = ?")
        .bind(account.user_id)
        .fetch_one(state.db.pool())
        .await
        .map_err(|e| ApiError::internal(&e))?
        .try_get::<Option<i64>, _>("team_id")
        .map_err(|e| ApiError::internal(&e))?;
    if in_team.is_none() {
        match records::team_by_name(&state.db, team)
            .await
            .map_err(db_error)?
        {
            Some(team_id) => records::join_team(&state.db, account.user_id, team_id, u32::MAX)
                .await
                .map_err(|e| team_error(&e))?,
            None => {
                records::create_team_with_captain(&state.db, account.user_id, team, None)
                    .await
                    .map_err(|e| team_error(&e))?;
            }
        }
        state.accounts.forget_user(account.user_id);
    }
    Ok(account)
}

fn team_error(error: &TeamError) -> ApiError {
    ApiError::internal(error)
}

async fn ensure_user(state: &AppState, name: &str, admin: bool) -> Result<Account, ApiError> {
    let found = sqlx::query("SELECT id FROM users WHERE name = ?")
        .bind(name)
        .fetch_optional(state.db.pool())
        .await
        .map_err(|e| ApiError::internal(&e))?;
    if let Some(row) = found {
        let user_id: i64 = row.try_get("id").map_err(|e| ApiError::internal(&e))?;
        return Ok(Account {
            user_id,
            name: name.to_owned(),
            new_password: None,
        });
    }
    // 128 bits, printable: what `fctf up` prints once.
    let password = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>());
    let passwords = state.accounts.passwords();
    let hash = {
        let password = password.clone();
        tokio::task::spawn_blocking(move || passwords.hash_blocking(&password))
            .await
            .map_err(|e| ApiError::internal(&e))?
            .map_err(|e| ApiError::internal(&e))?
    };
    let user_id = records::insert_user(
        &state.db,
        &NewUser {
            name: name.to_owned(),
            email: None,
            password_hash: hash,
            admin,
            verified: true,
            hidden: admin,
        },
    )
    .await
    .map_err(|e| ApiError::internal(&e))?;
    Ok(Account {
        user_id,
        name: name.to_owned(),
        new_password: Some(password),
    })
}
