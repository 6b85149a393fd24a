//! `/api/v1/configs` (admin): the contest settings as CTFd's key/value configs, read and changed
//! at runtime; and `/api/v1/contest` (public): the settings in force with the current phase, so
//! clients show the window without admin rights.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::json::ok;
use super::settings::UpdateError;
use super::{AdminCaller, ClientIp, Json, Path, db_error, now_ms};
use crate::contestant::AppState;
use crate::error::{ApiError, ErrorKind};

fn entries(map: &BTreeMap<String, Value>) -> Vec<Value> {
    map.iter()
        .map(|(key, value)| json!({"key": key, "value": value}))
        .collect()
}

async fn update(state: &AppState, changes: &BTreeMap<String, Value>) -> Result<(), ApiError> {
    match state.accounts.settings.update(&state.db, changes).await {
        Ok(_) => Ok(()),
        // Each value's kind is documented per key; what is left (start before end, ...) is a
        // refusal of well-formed input: 422.
        Err(UpdateError::Invalid(message)) => Err(ApiError::new(ErrorKind::Unprocessable, message)),
        Err(UpdateError::Db(e)) => Err(db_error(e)),
    }
}

/// `GET /api/v1/configs` (admin): `[{"key", "value"}]`.
pub async fn list(
    State(state): State<AppState>,
    AdminCaller(_admin): AdminCaller,
) -> Result<Response, ApiError> {
    Ok(ok(entries(&state.accounts.contest().await.to_map())))
}

/// `PATCH /api/v1/configs` (admin): `{"key": value, ...}`, all or nothing.
pub async fn patch(
    State(state): State<AppState>,
    AdminCaller(_admin): AdminCaller,
    Json(changes): Json<BTreeMap<String, Value>>,
) -> Result<Response, ApiError> {
    update(&state, &changes).await?;
    Ok(ok(entries(&state.accounts.contest().await.to_map())))
}

/// `GET /api/v1/configs/{key}` (admin).
pub async fn get_one(
    State(state): State<AppState>,
    AdminCaller(_admin): AdminCaller,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let map = state.accounts.contest().await.to_map();
    let value = map
        .get(&key)
        .ok_or_else(|| ApiError::not_found("No such setting."))?;
    Ok(ok(json!({"key": key, "value": value})))
}

/// Body of `PATCH /api/v1/configs/{key}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneValue {
    pub value: Value,
}

/// `PATCH /api/v1/configs/{key}` (admin): `{"value": ...}`.
pub async fn patch_one(
    State(state): State<AppState>,
    AdminCaller(_admin): AdminCaller,
    Path(key): Path<String>,
    Json(body): Json<OneValue>,
) -> Result<Response, ApiError> {
    if !state.accounts.contest().await.to_map().contains_key(&key) {
        return Err(ApiError::not_found("No such setting."));
    }
    update(&state, &BTreeMap::from([(key.clone(), body.value)])).await?;
    let map = state.accounts.contest().await.to_map();
    Ok(ok(json!({"key": key, "value": map.get(&key)})))
}

/// `GET /api/v1/contest` (public): the settings in force, the phase and the server's clock.
pub async fn contest(
    State(state): State<AppState>,
    _client: ClientIp,
) -> Result<Response, ApiError> {
    let settings = state.accounts.contest().await;
    let now = now_ms();
    let mut data = json!(settings.to_map());
    data["phase"] = json!(settings.phase(now));
    data["now_ms"] = json!(now);
    Ok(ok(data))
}
