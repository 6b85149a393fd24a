//! Flag submission (`POST /api/v1/challenges/attempt`) and the admin's submission list.
//!
//! Race-free: the attempt is decided while holding a state-store lock per (team, challenge), so
//! the wrong-attempt count (from the database), the cooldown and the wrong-answers-per-minute
//! counter are exact. A wrong flag to a challenge with neither an attempt limit nor a cooldown
//! (the common case, and the hot path) skips the lock: its only limit is the per-minute one, a
//! capped increment in the store that is exact by itself. The solve itself is an insert that
//! the unique key on (challenge, team) refuses a second time, with the dynamic value recomputed
//! in the same transaction. A lock that lapses (a stalled holder) can therefore never cause a
//! second solve.

use std::time::Duration;

use crate::contestant::accounts::Query;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use fctf_core::ids::{ChallengeId, TeamId};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use super::actions::{self, Action};
use super::challenges::open_challenge;
use super::flags::{MAX_SUBMISSION_BYTES, constant_time_eq, normalise};
use super::records::{self, Challenge, NewSubmission, SolveOutcome};
use super::{
    Body, Locked, db_error, iso8601, lock_or, may_act, now_ms, ok, settings, store_error, unlock,
};
use crate::contestant::AppState;
use crate::contestant::accounts::{AdminCaller, Caller, ClientIp};
use crate::deployment::contract::{InstanceKey, InstanceTarget};
use crate::error::{ApiError, ApiResult, ErrorKind};

/// CTFd's attempt body.
#[derive(Debug, Deserialize)]
struct Attempt {
    challenge_id: i64,
    submission: String,
}

/// The answer's `status` (also counted in the service's metrics, through a response extension).
fn answer(status: &'static str, message: impl Into<String>) -> Response {
    let mut response = ok(json!({"status": status, "message": message.into()}));
    response
        .extensions_mut()
        .insert(crate::contestant::metrics::SubmissionOutcome(status));
    response
}

fn already_solved() -> Response {
    answer("already_solved", "You already solved this")
}

/// `POST /api/v1/challenges/attempt`.
async fn attempt(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(client): ClientIp,
    Body(body): Body<Attempt>,
) -> ApiResult<Response> {
    let settings = settings(&state).await;
    if !caller.is_admin {
        may_act(&settings, now_ms())?;
        if settings.captain_only_submit && !caller.is_captain {
            return Err(ApiError::forbidden(
                "Only your team's captain may submit flags.",
            ));
        }
    }
    let team = caller
        .team_id
        .ok_or_else(|| ApiError::forbidden("You must join a team before submitting flags."))?;
    let provided = normalise(&body.submission);
    if provided.is_empty() {
        return Err(ApiError::bad_request("The submission is empty."));
    }
    if provided.len() > MAX_SUBMISSION_BYTES {
        return Err(ApiError::bad_request(format!(
            "The submission is longer than {MAX_SUBMISSION_BYTES} bytes."
        )));
    }
    let (challenge, solved) = open_challenge(&state, &caller, body.challenge_id).await?;
    let id = challenge.id;
    // Fast path: most repeats after a solve stop here (the team's solves were just read)
    // without touching the lock.
    if solved.contains(&id) {
        return Ok(already_solved());
    }
    let ip = client.to_string();
    // Without an attempt limit or a cooldown, a wrong flag decides nothing the lock guards: the
    // per-minute limit is one capped increment in the store, exact on its own. Only correct
    // flags (and challenges with limits) take the lock.
    let mut correct = None;
    if challenge.max_attempts <= 0 && challenge.cooldown_secs <= 0 {
        if !is_correct(&state, team, &challenge, provided).await? {
            return wrong_unlocked(&state, &caller, team, &challenge, provided, &ip).await;
        }
        correct = Some(true);
    }
    let lock = format!("submit:{team}:{id}");
    let db = state.db.clone();
    let token = match lock_or(state.store.as_ref(), &lock, || {
        let db = db.clone();
        async move {
            Ok(records::has_solved(&db, team, id)
                .await
                .map_err(db_error)?
                .then(already_solved))
        }
    })
    .await?
    {
        Locked::Held(token) => token,
        Locked::Answered(response) => return Ok(response),
    };
    let result = decide(&state, &caller, team, &challenge, provided, &ip, correct).await;
    unlock(state.store.as_ref(), &lock, &token).await;
    result
}

fn too_fast() -> ApiError {
    ApiError::new(
        ErrorKind::RateLimited,
        "You're submitting flags too fast. Slow down.",
    )
    .retry_after(60)
}

/// A wrong flag to a challenge without attempt limit or cooldown, decided without the lock.
async fn wrong_unlocked(
    state: &AppState,
    caller: &Caller,
    team: i64,
    challenge: &Challenge,
    provided: &str,
    ip: &str,
) -> ApiResult<Response> {
    let per_min = u64::from(state.config.contestant.wrong_flags_per_min);
    let wrong_key = format!("wrong:{team}:{}", challenge.id);
    // Refused at the cap (unchanged), so racing submissions never pass the limit.
    if state
        .store
        .counter_incr(&wrong_key, per_min, Duration::from_secs(60))
        .await
        .map_err(store_error)?
        .is_none()
    {
        return Err(too_fast());
    }
    let submission = NewSubmission {
        challenge_id: challenge.id,
        user_id: caller.user_id,
        team_id: team,
        ip,
        provided,
        now_ms: now_ms(),
    };
    record_incorrect(state, caller, team, challenge, &submission).await?;
    Ok(answer("incorrect", "Incorrect"))
}

/// Records a wrong submission, its action-log line and, for a team-flag challenge, a
/// flag-sharing event when the flag is another team's.
async fn record_incorrect(
    state: &AppState,
    caller: &Caller,
    team: i64,
    challenge: &Challenge,
    submission: &NewSubmission<'_>,
) -> ApiResult<()> {
    let id = challenge.id;
    let submission_id = records::record_wrong(&state.db, submission)
        .await
        .map_err(db_error)?;
    actions::record(
        &state.db,
        team,
        caller.user_id,
        Action::SubmitIncorrect,
        Some(id),
        None,
    )
    .await;
    if challenge.team_flag
        && let Some(owner) = records::team_of_flag(&state.db, id, submission.provided)
            .await
            .map_err(db_error)?
        && owner != team
    {
        records::record_cheat(&state.db, submission, submission_id, owner)
            .await
            .map_err(db_error)?;
        tracing::warn!(
            team,
            owner,
            challenge = id,
            "flag sharing: a team submitted another team's flag"
        );
    }
    Ok(())
}

/// The attempt, decided under the (team, challenge) lock (`correct` when already known).
async fn decide(
    state: &AppState,
    caller: &Caller,
    team: i64,
    challenge: &Challenge,
    provided: &str,
    ip: &str,
    correct: Option<bool>,
) -> ApiResult<Response> {
    let id = challenge.id;
    if records::has_solved(&state.db, team, id)
        .await
        .map_err(db_error)?
    {
        return Ok(already_solved());
    }
    let max = challenge.max_attempts;
    let wrong = if max > 0 {
        records::wrong_attempts(&state.db, team, id)
            .await
            .map_err(db_error)?
    } else {
        0
    };
    if max > 0 && wrong >= max {
        return Err(ApiError::forbidden(
            "You have 0 tries remaining for this challenge.",
        ));
    }
    let per_min = u64::from(state.config.contestant.wrong_flags_per_min);
    let wrong_key = format!("wrong:{team}:{id}");
    if state
        .store
        .counter_get(&wrong_key)
        .await
        .map_err(store_error)?
        >= per_min
    {
        return Err(too_fast());
    }
    if challenge.cooldown_secs > 0
        && let Some(left) = state
            .store
            .cooldown_begin(
                &format!("submit:{team}:{id}"),
                Duration::from_secs(challenge.cooldown_secs.unsigned_abs()),
            )
            .await
            .map_err(store_error)?
    {
        return Err(ApiError::new(
            ErrorKind::RateLimited,
            "Wait a little before submitting to this challenge again.",
        )
        .retry_after(left.as_secs().max(1)));
    }

    let submission = NewSubmission {
        challenge_id: id,
        user_id: caller.user_id,
        team_id: team,
        ip,
        provided,
        now_ms: now_ms(),
    };
    let correct = match correct {
        Some(known) => known,
        None => is_correct(state, team, challenge, provided).await?,
    };
    if correct {
        let mut outcome = records::record_solve(&state.db, &submission, challenge).await;
        if let Err(fctf_core::db::DbError::Query(message)) = &outcome
            && super::is_transient(message)
        {
            // One retry after a deadlock or lock wait: the transaction was rolled back whole.
            tokio::time::sleep(Duration::from_millis(20)).await;
            outcome = records::record_solve(&state.db, &submission, challenge).await;
        }
        return match outcome.map_err(db_error)? {
            SolveOutcome::Solved { .. } => {
                state.play.boards.invalidate();
                actions::record(
                    &state.db,
                    team,
                    caller.user_id,
                    Action::SubmitCorrect,
                    Some(id),
                    None,
                )
                .await;
                stop_instance(state, team, challenge).await;
                Ok(answer("correct", "Correct"))
            }
            SolveOutcome::AlreadySolved => Ok(already_solved()),
        };
    }

    record_incorrect(state, caller, team, challenge, &submission).await?;
    state
        .store
        .counter_incr(&wrong_key, u64::MAX, Duration::from_secs(60))
        .await
        .map_err(store_error)?;
    if max > 0 {
        let left = max - wrong - 1;
        if left <= 0 {
            stop_instance(state, team, challenge).await;
        }
        return Ok(answer(
            "incorrect",
            format!("Incorrect. You have {left} tries remaining"),
        ));
    }
    Ok(answer("incorrect", "Incorrect"))
}

/// True when `provided` matches a flag of the challenge or, for team-flag challenges, the
/// team's own dynamic flag.
async fn is_correct(
    state: &AppState,
    team: i64,
    challenge: &Challenge,
    provided: &str,
) -> ApiResult<bool> {
    if challenge.team_flag && constant_time_eq(&state.play.team_flag(team, challenge.id), provided)
    {
        return Ok(true);
    }
    let flags = records::flags(&state.db, Some(challenge.id))
        .await
        .map_err(db_error)?;
    Ok(flags
        .iter()
        .filter_map(records::FlagRow::rule)
        .any(|rule| rule.matches(provided)))
}

/// Stops the team's instance of the challenge (after a solve or the last attempt); a missing
/// instance is fine and a failure is logged, never shown: the answer is already decided.
pub(crate) async fn stop_instance(state: &AppState, team: i64, challenge: &Challenge) {
    if !challenge.has_instance() {
        return;
    }
    let target = InstanceTarget {
        key: InstanceKey {
            team: TeamId(team),
            challenge: ChallengeId(challenge.id),
        },
        instance: None,
    };
    match state.deployment.stop(&target).await {
        Ok(_) => {}
        Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::Conflict) => {}
        Err(e) => {
            tracing::warn!(error = %e, team, challenge = challenge.id, "instance stop failed")
        }
    }
}

#[derive(Debug, Deserialize)]
struct SubmissionQuery {
    challenge_id: Option<i64>,
    team_id: Option<i64>,
    #[serde(rename = "type")]
    kind: Option<String>,
    page: Option<i64>,
    per_page: Option<i64>,
}

/// `GET /api/v1/submissions` (admin): CTFd's list, newest first, paginated.
async fn list(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Query(q): Query<SubmissionQuery>,
) -> ApiResult<Response> {
    let per_page = q.per_page.unwrap_or(50).clamp(1, 500);
    let page = q.page.unwrap_or(1).max(1);
    let rows = sqlx::query(
        "SELECT id, challenge_id, user_id, team_id, ip, provided, type, created_ms \
         FROM submissions WHERE (? IS NULL OR challenge_id = ?) AND (? IS NULL OR team_id = ?) \
         AND (? IS NULL OR type = ?) ORDER BY id DESC LIMIT ? OFFSET ?",
    )
    .bind(q.challenge_id)
    .bind(q.challenge_id)
    .bind(q.team_id)
    .bind(q.team_id)
    .bind(q.kind.clone())
    .bind(q.kind.clone())
    .bind(per_page)
    .bind((page - 1) * per_page)
    .fetch_all(state.db.pool())
    .await
    .map_err(|e| db_error(e.into()))?;
    let data = rows
        .iter()
        .map(|r| {
            Ok(json!({
                "id": r.try_get::<i64, _>("id")?,
                "challenge_id": r.try_get::<i64, _>("challenge_id")?,
                "user_id": r.try_get::<i64, _>("user_id")?,
                "team_id": r.try_get::<i64, _>("team_id")?,
                "ip": r.try_get::<String, _>("ip")?,
                "provided": r.try_get::<String, _>("provided")?,
                "type": r.try_get::<String, _>("type")?,
                "date": iso8601(r.try_get::<i64, _>("created_ms")?),
            }))
        })
        .collect::<Result<Vec<Value>, sqlx::Error>>()
        .map_err(|e| db_error(e.into()))?;
    Ok(axum::response::IntoResponse::into_response(axum::Json(
        json!({
            "success": true,
            "meta": {"pagination": {"page": page, "per_page": per_page}},
            "data": data,
        }),
    )))
}

/// The submission routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/challenges/attempt", post(attempt))
        .route("/api/v1/submissions", get(list))
}
