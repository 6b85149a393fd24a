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
//!
//! The hot path reads no database row: the challenge, its flags and the team's solved set come
//! from the process's copies ([`super::cache`], with what their staleness can and cannot do),
//! and the wrong submission is written by the group-commit [`super::journal`] (durable before
//! the answer). A correct verdict is always confirmed on fresh rows inside the solve's
//! transaction; a challenge with an attempt limit or a cooldown is decided on fresh rows.

use std::sync::Arc;
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

use super::cache::Playable;
use super::challenges::access_of;
use super::flags::{MAX_SUBMISSION_BYTES, constant_time_eq, normalise};
use super::prerequisites::Access;
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

fn no_such_challenge() -> ApiError {
    ApiError::not_found("No such challenge.")
}

/// What the caller may do with a challenge, before its flag is looked at.
enum Opening {
    /// The team solved it already.
    Solved,
    /// Open to the caller: its copy (or fresh rows).
    Open(Arc<Playable>),
}

/// Opens challenge `id` for `caller`'s team, or answers 404 (hidden) / 403 (locked), like
/// [`super::challenges::open_challenge`] but on the process's copies. A refusal is never taken
/// on a copy: the challenge and the team's solves are read again first (a prerequisite solved
/// or a challenge shown through another process a moment ago opens it).
async fn open(state: &AppState, caller: &Caller, team: i64, id: i64) -> ApiResult<Opening> {
    let play = &state.play;
    let Some(copy) = play.challenges.get(&state.db, id).await.map_err(db_error)? else {
        return Err(no_such_challenge());
    };
    let (access, solved) = play
        .solved
        .with(&state.db, team, |solved| {
            (
                access_of(caller, &copy.challenge, solved),
                solved.contains(&id),
            )
        })
        .await
        .map_err(db_error)?;
    if access.is_some_and(|a| a != Access::Anonymized) {
        return Ok(if solved {
            Opening::Solved
        } else {
            Opening::Open(copy)
        });
    }
    let fresh = play
        .challenges
        .reload(&state.db, id)
        .await
        .map_err(db_error)?
        .ok_or_else(no_such_challenge)?;
    let solved = play
        .solved
        .reload(&state.db, team)
        .await
        .map_err(db_error)?;
    match access_of(caller, &fresh.challenge, &solved) {
        None => Err(no_such_challenge()),
        Some(Access::Anonymized) => Err(ApiError::forbidden(
            "This challenge is locked until you solve its prerequisites.",
        )),
        Some(_) if solved.contains(&id) => Ok(Opening::Solved),
        Some(_) => Ok(Opening::Open(fresh)),
    }
}

/// True when the challenge has an attempt limit or a cooldown (decided under the lock, on
/// fresh rows).
fn limited(challenge: &Challenge) -> bool {
    challenge.max_attempts > 0 || challenge.cooldown_secs > 0
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
    // Fast path: most repeats after a solve stop here without touching the lock.
    let playable = match open(&state, &caller, team, body.challenge_id).await? {
        Opening::Solved => return Ok(already_solved()),
        Opening::Open(playable) => playable,
    };
    let id = playable.challenge.id;
    let ip = client.to_string();
    // Without an attempt limit or a cooldown, a wrong flag decides nothing the lock guards: the
    // per-minute limit is one capped increment in the store, exact on its own. Only correct
    // flags (and challenges with limits) take the lock.
    if !limited(&playable.challenge) && !is_correct(&state, team, &playable, provided) {
        return wrong_unlocked(&state, &caller, team, &playable.challenge, provided, &ip).await;
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
    let result = decide(&state, &caller, team, playable, provided, &ip).await;
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
    record_incorrect(state, team, challenge, &submission).await?;
    Ok(answer("incorrect", "Incorrect"))
}

/// Records a wrong submission with its action-log line (durable when this returns) and, for a
/// team-flag challenge, a flag-sharing event when the flag is another team's (all in one
/// transaction). Plain wrong flags go through the group-commit journal.
async fn record_incorrect(
    state: &AppState,
    team: i64,
    challenge: &Challenge,
    submission: &NewSubmission<'_>,
) -> ApiResult<()> {
    let id = challenge.id;
    if !challenge.team_flag {
        return state
            .play
            .journal
            .record(submission.to_row())
            .await
            .map_err(db_error);
    }
    let owner = records::team_of_flag(&state.db, id, submission.provided)
        .await
        .map_err(db_error)?
        .filter(|owner| *owner != team);
    records::record_wrong(&state.db, submission, owner)
        .await
        .map_err(db_error)?;
    if let Some(owner) = owner {
        tracing::warn!(
            team,
            owner,
            challenge = id,
            "flag sharing: a team submitted another team's flag"
        );
    }
    Ok(())
}

/// Challenge `id` read again from the database (and cached), refused as absent when it is gone
/// or hidden from the caller.
async fn reload_visible(state: &AppState, caller: &Caller, id: i64) -> ApiResult<Arc<Playable>> {
    let fresh = state
        .play
        .challenges
        .reload(&state.db, id)
        .await
        .map_err(db_error)?
        .ok_or_else(no_such_challenge)?;
    if !caller.is_admin && !fresh.challenge.is_visible() {
        return Err(no_such_challenge());
    }
    Ok(fresh)
}

/// The attempt, decided under the (team, challenge) lock: a correct flag (to any challenge), or
/// any flag to a challenge with an attempt limit or a cooldown (then on fresh rows, since a
/// wrong verdict there costs a try).
async fn decide(
    state: &AppState,
    caller: &Caller,
    team: i64,
    playable: Arc<Playable>,
    provided: &str,
    ip: &str,
) -> ApiResult<Response> {
    let id = playable.challenge.id;
    let playable = if limited(&playable.challenge) {
        reload_visible(state, caller, id).await?
    } else {
        playable
    };
    let challenge = &playable.challenge;
    let max = challenge.max_attempts;
    // A limited challenge reads the solve fresh (a solved team hears "already solved", not "no
    // tries left"). Without limits the copy is enough (a racing submission of this process that
    // solved it while this one waited for the lock has added it there): a solve it does not
    // know of yet is refused by the unique key below, "already solved" all the same.
    let solved = if limited(challenge) {
        records::has_solved(&state.db, team, id).await
    } else {
        state
            .play
            .solved
            .with(&state.db, team, |s| s.contains(&id))
            .await
    };
    if solved.map_err(db_error)? {
        state.play.solved.add(team, id);
        return Ok(already_solved());
    }
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
    let playable = match solve_if_correct(state, caller, team, playable, &submission).await? {
        Verdict::Solved(response) => return Ok(response),
        Verdict::Wrong(playable) => playable,
    };
    let challenge = &playable.challenge;
    record_incorrect(state, team, challenge, &submission).await?;
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

/// What [`solve_if_correct`] came to.
enum Verdict {
    /// Answered: correct (the solve is recorded) or already solved.
    Solved(Response),
    /// The flag is wrong, judged on these rows.
    Wrong(Arc<Playable>),
}

/// Records the solve when `provided` is correct. The verdict is confirmed on fresh rows inside
/// the solve's transaction; when they differ from the copy (an admin edit through another
/// process since it was read), the copies are dropped and the flag judged once more on fresh
/// rows (a second disagreement, an admin editing right now, answers 503: try again).
async fn solve_if_correct(
    state: &AppState,
    caller: &Caller,
    team: i64,
    mut playable: Arc<Playable>,
    submission: &NewSubmission<'_>,
) -> ApiResult<Verdict> {
    let id = playable.challenge.id;
    for round in 0..2 {
        if !is_correct(state, team, &playable, submission.provided) {
            return Ok(Verdict::Wrong(playable));
        }
        let record = || {
            records::record_solve(&state.db, submission, |fresh, flags| {
                playable.same_rows(fresh, flags) && (caller.is_admin || fresh.is_visible())
            })
        };
        let mut outcome = record().await;
        if let Err(fctf_core::db::DbError::Query(message)) = &outcome
            && super::is_transient(message)
        {
            // One retry after a deadlock or lock wait: the transaction was rolled back whole.
            tokio::time::sleep(Duration::from_millis(20)).await;
            outcome = record().await;
        }
        match outcome.map_err(db_error)? {
            SolveOutcome::Solved { .. } => {
                state.play.boards.invalidate();
                state.play.solved.add(team, id);
                stop_instance(state, team, &playable.challenge).await;
                return Ok(Verdict::Solved(answer("correct", "Correct")));
            }
            SolveOutcome::AlreadySolved => {
                state.play.solved.add(team, id);
                return Ok(Verdict::Solved(already_solved()));
            }
            SolveOutcome::Stale if round == 0 => {
                state.play.challenges.invalidate();
                playable = reload_visible(state, caller, id).await?;
            }
            SolveOutcome::Stale => {}
        }
    }
    Err(ApiError::unavailable(
        "challenge",
        &"the challenge is being edited right now; submit again",
    ))
}

/// True when `provided` matches a flag of the challenge or, for team-flag challenges, the
/// team's own dynamic flag.
fn is_correct(state: &AppState, team: i64, playable: &Playable, provided: &str) -> bool {
    let challenge = &playable.challenge;
    (challenge.team_flag && constant_time_eq(&state.play.team_flag(team, challenge.id), provided))
        || playable.matches(provided)
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
