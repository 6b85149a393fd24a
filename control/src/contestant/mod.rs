//! The Contestant Service: the players' REST API in CTFd's `/api/v1` shapes, extended in the
//! same style for instances, tickets and the team action log, and the admin REST API on the same
//! routes with admin credentials.
//!
//! - [`accounts`]: registration, login, sessions, API tokens, users, teams, brackets, the
//!   contest config (start, end, freeze, registration), and [`accounts::Caller`], the
//!   authenticated caller every other route takes.
//! - [`play`]: challenges, flags, hints, files, submissions, scoring, the scoreboard, tickets,
//!   awards, notifications and instances (through [`DeploymentControl`]).
//!
//! - [`portal`]: the players' web page (embedded assets) and the CSRF guard of cookie sessions.
//!
//! [`router`] is the whole API as served (the OpenAPI document at [`openapi::PATH`], JSON
//! answers for unknown routes and wrong methods, the per-IP limit, security headers and
//! [`metrics`]); [`server::serve`] and [`server::run`] serve it with the admin listener;
//! [`AppState`] is what its handlers share.

pub mod accounts;
pub mod metrics;
pub mod openapi;
pub mod play;
pub mod portal;
pub mod server;

pub use self::server::{run, serve};

use std::sync::Arc;

use axum::Router;
use fctf_core::config::Config;
use fctf_core::db::Database;
use fctf_core::store::StateStore;

use crate::deployment::contract::DeploymentControl;

/// What every handler of the Contestant Service shares. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<AppInner>,
}

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct AppInner {
    /// The database (MariaDB or SQLite), migrated.
    pub db: Database,
    /// The state store (Redis or in-process): rate limits, locks, counters, caches.
    pub store: Arc<dyn StateStore>,
    /// The whole validated config (`[contestant]` and `[deployment]` matter here).
    pub config: Arc<Config>,
    /// The Deployment Center: in-process or over signed HTTP.
    pub deployment: Arc<dyn DeploymentControl>,
    /// State owned by [`accounts`] (session keys, caches).
    pub accounts: accounts::AccountsState,
    /// State owned by [`play`] (scoreboard snapshot, caches).
    pub play: play::PlayState,
    /// The counters the admin listener's `/metrics` renders.
    pub metrics: metrics::Metrics,
}

impl AppState {
    /// Builds the shared state over a migrated database.
    pub async fn new(
        db: Database,
        store: Arc<dyn StateStore>,
        config: Arc<Config>,
        deployment: Arc<dyn DeploymentControl>,
    ) -> Result<Self, crate::error::ApiError> {
        let accounts = accounts::AccountsState::new(&db, &config).await?;
        let play = play::PlayState::new(&db, &config).await?;
        Ok(Self {
            inner: Arc::new(AppInner {
                db,
                store,
                config,
                deployment,
                accounts,
                play,
                metrics: metrics::Metrics::default(),
            }),
        })
    }
}

impl std::ops::Deref for AppState {
    type Target = AppInner;

    fn deref(&self) -> &AppInner {
        &self.inner
    }
}

/// The whole Contestant Service API (players and admins), as served.
pub fn router(state: AppState) -> Router {
    server::finish(
        Router::new()
            .merge(accounts::router())
            .merge(play::router()),
        state,
    )
}
