//! Challenge instances, in CTFd's style: `GET|POST|DELETE /api/v1/challenges/{id}/instance`
//! (status, start, stop) and `POST /api/v1/challenges/{id}/instance/extend`, all through the
//! Deployment Center ([`crate::deployment::contract::DeploymentControl`]), with the team's
//! dynamic flag in the spec's `FLAG` and the quota from the contest settings. Admins also get
//! `GET /api/v1/instances` and `DELETE /api/v1/instances/{team}/{challenge}` (force stop).

use std::collections::BTreeMap;

use crate::contestant::accounts::{Path, Query};
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{delete, get, post};
use fctf_core::ids::{ChallengeId, TeamId};
use fctf_core::queue::DeploySpec;
use serde::Deserialize;

use super::actions::{self, Action};
use super::challenges::open_challenge;
use super::records::{self, Challenge};
use super::{ContestSettings, db_error, may_act, now_ms, ok, parse_id, settings};
use crate::contestant::AppState;
use crate::contestant::accounts::{AdminCaller, Caller};
use crate::deployment::contract::{ExtendRequest, InstanceKey, InstanceTarget, StartRequest};
use crate::error::{ApiError, ApiResult};

/// Defaults for instance fields a challenge leaves unset.
const DEFAULT_PORT: u16 = 3333;
const DEFAULT_CPU_MILLICORES: u32 = 500;
const DEFAULT_MEMORY_MIB: u32 = 256;

/// The deploy spec of `challenge` for `team` (pure). `flag` goes into `FLAG`.
pub fn spec(challenge: &Challenge, flag: Option<String>, default_lifetime_secs: u64) -> DeploySpec {
    let mut env = BTreeMap::new();
    if let Some(flag) = flag {
        env.insert("FLAG".to_owned(), flag);
    }
    DeploySpec {
        challenge_name: challenge.name.clone(),
        image: challenge.image.clone(),
        command: challenge.command.clone(),
        container_port: challenge
            .port
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(DEFAULT_PORT),
        cpu_millicores: challenge
            .cpu_millicores
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(DEFAULT_CPU_MILLICORES),
        memory_mib: challenge
            .memory_mib
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(DEFAULT_MEMORY_MIB),
        use_gvisor: challenge.gvisor,
        harden: challenge.harden,
        lifetime_secs: challenge
            .lifetime_secs
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(default_lifetime_secs),
        env,
    }
}

/// The caller's team and the challenge, checked for an instance action.
async fn slot(
    state: &AppState,
    caller: &Caller,
    id: &str,
    acting: bool,
) -> ApiResult<(i64, Challenge, ContestSettings)> {
    let id = parse_id(id)?;
    let settings = settings(state).await;
    if !caller.is_admin {
        if acting {
            may_act(&settings, now_ms())?;
            if settings.captain_only_start && !caller.is_captain {
                return Err(ApiError::forbidden(
                    "Only your team's captain may start, stop or extend instances.",
                ));
            }
        } else {
            super::may_view(&settings, now_ms())?;
        }
    }
    let team = caller
        .team_id
        .ok_or_else(|| ApiError::forbidden("You must join a team to use instances."))?;
    let (challenge, _) = open_challenge(state, caller, id).await?;
    if !challenge.has_instance() {
        return Err(ApiError::not_found("This challenge has no instance."));
    }
    Ok((team, challenge, settings))
}

fn target(team: i64, challenge: i64) -> InstanceTarget {
    InstanceTarget {
        key: InstanceKey {
            team: TeamId(team),
            challenge: ChallengeId(challenge),
        },
        instance: None,
    }
}

/// `GET /api/v1/challenges/{id}/instance`.
async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (team, challenge, _) = slot(&state, &caller, &id, false).await?;
    let status = state.deployment.status(&target(team, challenge.id)).await?;
    Ok(ok(status))
}

/// `POST /api/v1/challenges/{id}/instance`.
async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (team, challenge, settings) = slot(&state, &caller, &id, true).await?;
    if records::has_solved(&state.db, team, challenge.id)
        .await
        .map_err(db_error)?
    {
        return Err(ApiError::conflict(
            "Your team already solved this challenge.",
        ));
    }
    if challenge.max_attempts > 0
        && records::wrong_attempts(&state.db, team, challenge.id)
            .await
            .map_err(db_error)?
            >= challenge.max_attempts
    {
        return Err(ApiError::forbidden(
            "You have 0 tries remaining for this challenge.",
        ));
    }
    let flag = if challenge.team_flag {
        let flag = state.play.team_flag(team, challenge.id);
        // Remembered before it can reach the team, so a shared copy is always recognised.
        records::remember_team_flag(&state.db, challenge.id, team, &flag)
            .await
            .map_err(db_error)?;
        Some(flag)
    } else {
        None
    };
    let request = StartRequest {
        key: InstanceKey {
            team: TeamId(team),
            challenge: ChallengeId(challenge.id),
        },
        quota: settings.instances_per_team,
        spec: spec(
            &challenge,
            flag,
            state.config.deployment.default_lifetime_secs,
        ),
        contest_ends_at_ms: settings.ends_at_ms(),
    };
    let status = state.deployment.start(&request).await?;
    actions::record(
        &state.db,
        team,
        caller.user_id,
        Action::InstanceStart,
        Some(challenge.id),
        None,
    )
    .await;
    Ok(ok(status))
}

/// `DELETE /api/v1/challenges/{id}/instance`.
async fn stop(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (team, challenge, _) = slot(&state, &caller, &id, true).await?;
    let status = state.deployment.stop(&target(team, challenge.id)).await?;
    actions::record(
        &state.db,
        team,
        caller.user_id,
        Action::InstanceStop,
        Some(challenge.id),
        None,
    )
    .await;
    Ok(ok(status))
}

/// `POST /api/v1/challenges/{id}/instance/extend`.
async fn extend(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (team, challenge, settings) = slot(&state, &caller, &id, true).await?;
    let status = state
        .deployment
        .extend(&ExtendRequest {
            target: target(team, challenge.id),
            contest_ends_at_ms: settings.ends_at_ms(),
        })
        .await?;
    actions::record(
        &state.db,
        team,
        caller.user_id,
        Action::InstanceExtend,
        Some(challenge.id),
        None,
    )
    .await;
    Ok(ok(status))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    team_id: Option<i64>,
    page: Option<u32>,
    per_page: Option<u32>,
}

/// `GET /api/v1/instances` (admin): every instance, optionally of one team.
async fn admin_list(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let per_page = q.per_page.unwrap_or(100).clamp(1, 1000);
    let page = q.page.unwrap_or(1).max(1);
    let list = state
        .deployment
        .list(
            q.team_id.map(TeamId),
            per_page,
            (page - 1).saturating_mul(per_page),
        )
        .await?;
    Ok(ok(list))
}

/// `DELETE /api/v1/instances/{team}/{challenge}` (admin): force stop.
async fn admin_stop(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Path((team, challenge)): Path<(String, String)>,
) -> ApiResult<Response> {
    let team = parse_id(&team)?;
    let challenge = parse_id(&challenge)?;
    let status = state.deployment.stop(&target(team, challenge)).await?;
    Ok(ok(status))
}

/// The instance routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/challenges/{id}/instance",
            get(status).post(start).delete(stop),
        )
        .route("/api/v1/challenges/{id}/instance/extend", post(extend))
        .route("/api/v1/instances", get(admin_list))
        .route("/api/v1/instances/{team}/{challenge}", delete(admin_stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_carries_the_flag_and_the_challenge_limits() {
        let challenge: Challenge = super::super::challenges::merge(
            &serde_json::from_value(serde_json::json!({
                "id": 4, "name": "Web One", "category": "web", "description": "", "connection_info": null,
                "value": 100, "type": "standard", "initial": null, "minimum": null, "decay": null,
                "function": "linear", "first_blood_bonus": 0, "state": "visible", "max_attempts": 0,
                "cooldown_secs": 0, "requirements": null, "position": 0, "image": "reg/web:1",
                "command": null, "port": 8080, "cpu_millicores": 250, "memory_mib": null,
                "lifetime_secs": null, "protocol": "http", "harden": true, "gvisor": false,
                "team_flag": true
            }))
            .unwrap(),
            &serde_json::json!({}),
        )
        .unwrap();
        let s = spec(&challenge, Some("FCTF{x}".to_owned()), 3600);
        assert_eq!(s.challenge_name, "Web One");
        assert_eq!(s.image.as_deref(), Some("reg/web:1"));
        assert_eq!(s.container_port, 8080);
        assert_eq!(s.cpu_millicores, 250);
        assert_eq!(s.memory_mib, DEFAULT_MEMORY_MIB);
        assert_eq!(s.lifetime_secs, 3600);
        assert!(s.harden && !s.use_gvisor);
        assert_eq!(s.env.get("FLAG").map(String::as_str), Some("FCTF{x}"));
    }
}
