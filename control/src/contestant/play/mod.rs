//! Play: challenges, flags, hints, files, submissions, scoring, scoreboard, tickets, instances.

use axum::Router;
use fctf_core::config::Config;
use fctf_core::db::Database;

use super::AppState;
use crate::error::ApiError;

/// State owned by play.
#[derive(Debug)]
pub struct PlayState {}

impl PlayState {
    /// Loads what play needs at start.
    pub async fn new(_db: &Database, _config: &Config) -> Result<Self, ApiError> {
        Ok(Self {})
    }
}

/// The play routes.
pub fn router() -> Router<AppState> {
    Router::new()
}
