//! For tests (of accounts, play, and anything built on the Contestant Service): a whole app over
//! a fresh migrated database, and players to call it with. Not behind `cfg(test)` because the
//! integration tests of this crate and of others use it; nothing in the service calls it.
//!
//! [`app`] uses [`RecordingDeployment`], an in-memory stand-in for the Deployment Center that
//! keeps one status per slot and records every call, until tests wire the real
//! [`DeploymentCenter`](crate::deployment::center::DeploymentCenter) through [`app_with`].
//! Password hashing is switched to the cheapest Argon2 cost ([`AccountsState::use_light_password_hashing`]).
//!
//! [`AccountsState::use_light_password_hashing`]: super::AccountsState::use_light_password_hashing

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use axum::Router;
use fctf_core::config::Config;
use fctf_core::db::Database;
use fctf_core::ids::{InstanceId, TeamId};
use fctf_core::store::{DeploymentState, MemoryStore, StateStore};

use super::records::{self, NewUser, TeamError};
use super::{now_ms, tokens};
use crate::contestant::{AppState, router};
use crate::deployment::contract::{
    DeploymentControl, ExtendRequest, InstanceKey, InstanceStatus, InstanceTarget, StartRequest,
};
use crate::error::ApiError;

/// The password of every user made here.
pub const PASSWORD: &str = "testkit-password";

/// A user made by [`player`] or [`admin`], with an API token valid for a day.
#[derive(Clone, Debug)]
pub struct Player {
    pub user_id: i64,
    pub team_id: Option<i64>,
    /// Send as `Authorization: Token <token>`.
    pub token: String,
    pub name: String,
}

impl Player {
    /// The `Authorization` header value of this player.
    pub fn authorization(&self) -> String {
        format!("Token {}", self.token)
    }
}

/// A fresh migrated database: SQLite in a new temporary directory when `db_url` is `None`.
pub async fn database(db_url: Option<&str>) -> Database {
    let url = match db_url {
        Some(url) => url.to_owned(),
        None => {
            let dir = std::env::temp_dir().join(format!("fctf-test-{}", uuid::Uuid::new_v4()));
            format!("sqlite://{}/fctf.db", dir.display())
        }
    };
    let db = Database::connect(&url, 8)
        .await
        .expect("test database connects");
    db.migrate().await.expect("test database migrates");
    db
}

/// The whole Contestant Service over a fresh database (see [`database`]), a [`MemoryStore`],
/// the default config and a [`RecordingDeployment`].
pub async fn app(db_url: Option<&str>) -> (AppState, Router) {
    let db = database(db_url).await;
    app_with(
        db,
        Arc::new(MemoryStore::new()),
        Config::default(),
        Arc::new(RecordingDeployment::default()),
    )
    .await
}

/// The whole Contestant Service over the given parts (a migrated `db`).
pub async fn app_with(
    db: Database,
    store: Arc<dyn StateStore>,
    config: Config,
    deployment: Arc<dyn DeploymentControl>,
) -> (AppState, Router) {
    let state = AppState::new(db, store, Arc::new(config), deployment)
        .await
        .expect("app state builds");
    state.accounts.use_light_password_hashing();
    let app = router(state.clone());
    (state, app)
}

/// A verified player named `name`; with `team`, a member of the team of that name (created, with
/// this player as captain, when absent; the size cap is not applied here).
pub async fn player(state: &AppState, name: &str, team: Option<&str>) -> Player {
    let user_id = new_user(state, name, false).await;
    let team_id = match team {
        None => None,
        Some(team) => Some(put_in_team(state, user_id, team).await),
    };
    state.accounts.forget_user(user_id);
    Player {
        user_id,
        team_id,
        token: token_for(state, user_id).await,
        name: name.to_owned(),
    }
}

/// A new admin (named `admin-<n>`).
pub async fn admin(state: &AppState) -> Player {
    let name = format!("admin-{}", uuid::Uuid::new_v4().simple());
    let user_id = new_user(state, &name, true).await;
    Player {
        user_id,
        team_id: None,
        token: token_for(state, user_id).await,
        name,
    }
}

async fn new_user(state: &AppState, name: &str, admin: bool) -> i64 {
    let hash = state
        .accounts
        .passwords()
        .hash_blocking(PASSWORD)
        .expect("password hashes");
    records::insert_user(
        &state.db,
        &NewUser {
            name: name.to_owned(),
            email: None,
            password_hash: hash,
            admin,
            verified: true,
            hidden: false,
        },
    )
    .await
    .expect("test user inserts (is the name unique?)")
}

async fn put_in_team(state: &AppState, user_id: i64, team: &str) -> i64 {
    if let Some(team_id) = records::team_by_name(&state.db, team)
        .await
        .expect("team lookup")
    {
        records::join_team(&state.db, user_id, team_id, u32::MAX)
            .await
            .expect("test user joins the team");
        return team_id;
    }
    match records::create_team_with_captain(&state.db, user_id, team, None).await {
        Ok(team_id) => team_id,
        // Another test task created it first: join instead.
        Err(TeamError::Db(fctf_core::db::DbError::Conflict(_))) => {
            let team_id = records::team_by_name(&state.db, team)
                .await
                .expect("team lookup")
                .expect("team exists after a conflict");
            records::join_team(&state.db, user_id, team_id, u32::MAX)
                .await
                .expect("test user joins the team");
            team_id
        }
        Err(error) => panic!("test team creation failed: {error}"),
    }
}

async fn token_for(state: &AppState, user_id: i64) -> String {
    let value = tokens::issue(state, user_id, now_ms() + 24 * 3600 * 1000, None)
        .await
        .expect("test token issues");
    value["value"]
        .as_str()
        .expect("token value is a string")
        .to_owned()
}

/// What [`RecordingDeployment`] was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeploymentCall {
    Start(StartRequest),
    Stop(InstanceTarget),
    Status(InstanceTarget),
    Extend(ExtendRequest),
    List(Option<TeamId>),
    StopAll,
    Logs(InstanceTarget),
}

/// An in-memory stand-in for the Deployment Center: start puts the slot in `Queued` with a new
/// instance id (or answers the live one), stop moves it to `Stopped`, status answers what the
/// slot holds, and every call is recorded in [`Self::calls`].
#[derive(Debug, Default)]
pub struct RecordingDeployment {
    calls: Mutex<Vec<DeploymentCall>>,
    slots: Mutex<BTreeMap<(i64, i64), InstanceStatus>>,
}

impl RecordingDeployment {
    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<DeploymentCall> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record(&self, call: DeploymentCall) {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(call);
    }

    fn slot_key(key: &InstanceKey) -> (i64, i64) {
        (key.team.0, key.challenge.0)
    }

    fn empty(key: InstanceKey) -> InstanceStatus {
        InstanceStatus {
            key,
            instance: None,
            state: None,
            queue_position: None,
            expires_at_ms: None,
            time_left_secs: None,
            extensions_left: None,
            reason: None,
            access: None,
        }
    }

    fn current(&self, key: InstanceKey) -> InstanceStatus {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&Self::slot_key(&key))
            .cloned()
            .unwrap_or_else(|| Self::empty(key))
    }
}

#[async_trait]
impl DeploymentControl for RecordingDeployment {
    async fn start(&self, request: &StartRequest) -> Result<InstanceStatus, ApiError> {
        self.record(DeploymentCall::Start(request.clone()));
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = Self::slot_key(&request.key);
        if let Some(live) = slots.get(&slot)
            && live.state.is_some_and(DeploymentState::is_active)
        {
            return Ok(live.clone());
        }
        let status = InstanceStatus {
            instance: Some(InstanceId::new()),
            state: Some(DeploymentState::Queued),
            queue_position: Some(0),
            ..Self::empty(request.key)
        };
        slots.insert(slot, status.clone());
        Ok(status)
    }

    async fn stop(&self, target: &InstanceTarget) -> Result<InstanceStatus, ApiError> {
        self.record(DeploymentCall::Stop(*target));
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(live) = slots.get_mut(&Self::slot_key(&target.key)) else {
            return Err(ApiError::not_found("No instance to stop."));
        };
        live.state = Some(DeploymentState::Stopped);
        live.queue_position = None;
        Ok(live.clone())
    }

    async fn status(&self, target: &InstanceTarget) -> Result<InstanceStatus, ApiError> {
        self.record(DeploymentCall::Status(*target));
        Ok(self.current(target.key))
    }

    async fn extend(&self, request: &ExtendRequest) -> Result<InstanceStatus, ApiError> {
        self.record(DeploymentCall::Extend(*request));
        Ok(self.current(request.target.key))
    }

    async fn list(
        &self,
        team: Option<TeamId>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<InstanceStatus>, ApiError> {
        self.record(DeploymentCall::List(team));
        Ok(self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|s| team.is_none_or(|t| s.key.team == t))
            .skip(offset as usize)
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn stop_all(&self) -> Result<u32, ApiError> {
        self.record(DeploymentCall::StopAll);
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let mut stopped = 0;
        for status in slots.values_mut() {
            if status.state.is_some_and(DeploymentState::is_active) {
                status.state = Some(DeploymentState::Stopped);
                stopped += 1;
            }
        }
        Ok(stopped)
    }

    async fn logs(&self, target: &InstanceTarget, _tail: u32) -> Result<String, ApiError> {
        self.record(DeploymentCall::Logs(*target));
        Ok(String::new())
    }
}
