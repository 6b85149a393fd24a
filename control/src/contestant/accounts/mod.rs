//! Accounts: registration, login, sessions, API tokens, users, teams, brackets, contest config.

use axum::Router;
use fctf_core::config::Config;
use fctf_core::db::Database;

use super::AppState;
use crate::error::ApiError;

/// State owned by accounts.
#[derive(Debug)]
pub struct AccountsState {}

impl AccountsState {
    /// Loads what accounts need at start.
    pub async fn new(_db: &Database, _config: &Config) -> Result<Self, ApiError> {
        Ok(Self {})
    }
}

/// The accounts routes.
pub fn router() -> Router<AppState> {
    Router::new()
}
