//! Play: challenges, flags, hints, files, submissions, scoring, the scoreboard, tickets,
//! awards, notifications and instances, in CTFd's `/api/v1` shapes.
//!
//! Pure decisions live in [`scoring`], [`flags`], [`prerequisites`], [`scoreboard`] and
//! [`tickets`]; [`records`] moves rows; [`cache`] keeps the submission path's copies of
//! challenges and solved sets, and [`journal`] writes wrong flags with group commit; the other
//! modules are the routes, thin over both.
//!
//! The submission path ([`submissions`]) is race-free: a state-store lock per (team,
//! challenge) makes the attempt counter, the cooldown and the wrong-answers-per-minute limit
//! exact, and the database's unique key on (challenge, team) is the last guard, so however
//! many submissions race, one solve row is written and the dynamic value is recomputed once.

pub mod actions;
pub mod awards;
pub mod cache;
pub mod catalog;
pub mod challenges;
pub mod files;
pub mod flags;
pub mod hints;
pub mod instances;
pub mod journal;
pub mod openapi;
pub mod prerequisites;
pub mod records;
pub mod scoreboard;
pub mod scoring;
pub mod snapshot;
pub mod submissions;
pub mod tickets;

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::response::{IntoResponse, Response};
use fctf_core::config::Config;
use fctf_core::db::{Database, DbError};
use fctf_core::store::{LockToken, StateStore, StoreError};
use rand::Rng;
use serde::Serialize;

use super::AppState;
pub(crate) use super::accounts::settings::{ContestPhase, ContestSettings};
use crate::error::ApiError;

/// State owned by play: the dynamic-flag and file-link secret, the scoreboard snapshots, the
/// submission path's copies of challenges and solved sets, and the wrong-flag journal.
#[derive(Debug)]
pub struct PlayState {
    /// Derives per-team dynamic flags and signs file links; kept in the database so every
    /// process and every restart derives the same flags.
    secret: Vec<u8>,
    /// Where challenge files live; every download is confined to it.
    files_dir: std::path::PathBuf,
    /// The scoreboard snapshots (live and frozen) and their single writer.
    pub boards: snapshot::Boards,
    /// Challenges with their flags, as the submission path reads them ([`cache`]).
    pub challenges: cache::Challenges,
    /// Each team's solved challenges, as the submission path reads them ([`cache`]).
    pub solved: cache::Solved,
    /// The group-commit writer of wrong submissions ([`journal`]).
    pub journal: journal::Journal,
}

impl PlayState {
    /// Loads (or creates, on first start) the secret; the database must be migrated.
    pub async fn new(db: &Database, config: &Config) -> Result<Self, ApiError> {
        let fresh: [u8; 32] = rand::rng().random();
        let secret = records::secret(db, "play", &hex::encode(fresh))
            .await
            .map_err(db_error)?;
        Ok(Self {
            secret: secret.into_bytes(),
            files_dir: std::path::PathBuf::from(&config.contestant.files_dir),
            boards: snapshot::Boards::default(),
            challenges: cache::Challenges::default(),
            solved: cache::Solved::default(),
            journal: journal::Journal::start(db.clone()),
        })
    }

    /// A challenge or a flag was written through this process: the submission path's copies
    /// of challenges are dropped, so the change applies here from the next request.
    pub fn challenges_changed(&self) {
        self.challenges.invalidate();
    }

    /// A challenge (and with it its solves) was deleted through this process.
    pub fn challenge_deleted(&self) {
        self.challenges.invalidate();
        self.solved.invalidate();
    }

    /// The dynamic flag of `team` for `challenge`.
    pub fn team_flag(&self, team: i64, challenge: i64) -> String {
        flags::team_flag(&self.secret, team, challenge)
    }
}

/// The play routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(catalog::router())
        .merge(challenges::router())
        .merge(submissions::router())
        .merge(hints::router())
        .merge(files::router())
        .merge(snapshot::router())
        .merge(instances::router())
        .merge(tickets::router())
        .merge(awards::router())
        .merge(actions::router())
}

/// CTFd's success envelope: `{"success": true, "data": ...}`.
pub(crate) fn ok<T: Serialize>(data: T) -> Response {
    Json(serde_json::json!({"success": true, "data": data})).into_response()
}

/// A database failure as an answer: 503 when unreachable or transiently busy (a deadlock, a
/// lock wait timeout, SQLite's "database is locked": retrying succeeds), 409 for a conflict,
/// else 500.
pub(crate) fn db_error(error: DbError) -> ApiError {
    match &error {
        DbError::Unavailable(_) => ApiError::unavailable("database", &error),
        DbError::Query(message) if is_transient(message) => {
            ApiError::unavailable("database", &error)
        }
        DbError::Conflict(_) => ApiError::conflict("That already exists."),
        _ => ApiError::internal(&error),
    }
}

/// True for the errors a retry of the same statement can cure (MariaDB 1213 and 1205, SQLite
/// busy), which the driver reports as plain query errors.
pub(crate) fn is_transient(message: &str) -> bool {
    const TRANSIENT: &[&str] = &[
        "Deadlock found",
        "Lock wait timeout exceeded",
        "database is locked",
        "database table is locked",
    ];
    TRANSIENT.iter().any(|t| message.contains(t))
}

/// A state-store failure as an answer (503: the submission path fails closed).
pub(crate) fn store_error(error: StoreError) -> ApiError {
    ApiError::unavailable("state store", &error)
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    i64::try_from(fctf_core::clock::unix_now_millis()).unwrap_or(i64::MAX)
}

/// The contest settings in force.
pub(crate) async fn settings(state: &AppState) -> ContestSettings {
    state.accounts.contest().await
}

/// May a player look at challenges now? (Admins always may.)
pub(crate) fn may_view(settings: &ContestSettings, now_ms: i64) -> Result<(), ApiError> {
    match settings.phase(now_ms) {
        ContestPhase::NotStarted => Err(ApiError::forbidden("The contest has not started yet.")),
        ContestPhase::Ended if !settings.view_after_end => {
            Err(ApiError::forbidden("The contest has ended."))
        }
        _ => Ok(()),
    }
}

/// May a player act (submit, unlock, start an instance) now? (Admins always may.)
pub(crate) fn may_act(settings: &ContestSettings, now_ms: i64) -> Result<(), ApiError> {
    match settings.phase(now_ms) {
        ContestPhase::Running | ContestPhase::Frozen => Ok(()),
        ContestPhase::NotStarted => Err(ApiError::forbidden("The contest has not started yet.")),
        ContestPhase::Paused => Err(ApiError::forbidden("The contest is paused.")),
        ContestPhase::Ended => Err(ApiError::forbidden("The contest has ended.")),
    }
}

/// The scoreboard cut-off players see now: the freeze instant once it has passed.
pub(crate) fn player_cutoff(settings: &ContestSettings, now_ms: i64) -> Option<i64> {
    settings.freeze_ms.filter(|freeze| now_ms >= *freeze)
}

/// How long a caller waits for a busy (team, challenge) lock before being told to retry.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// A lock outlives a crashed holder by at most this.
const LOCK_TTL: Duration = Duration::from_secs(10);

/// Outcome of [`lock_or`].
pub(crate) enum Locked<T> {
    /// The lock is held; release it with [`unlock`].
    Held(LockToken),
    /// `give_up` answered while waiting (for example: already solved).
    Answered(T),
}

/// Takes the store lock `name`, waiting with jitter; every few tries `give_up` is asked
/// whether waiting is still needed. After [`LOCK_WAIT`] the caller is told to retry (429).
pub(crate) async fn lock_or<T, F, Fut>(
    store: &dyn StateStore,
    name: &str,
    mut give_up: F,
) -> Result<Locked<T>, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, ApiError>>,
{
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    let mut tries = 0u32;
    loop {
        if let Some(token) = store
            .lock_acquire(name, LOCK_TTL)
            .await
            .map_err(store_error)?
        {
            return Ok(Locked::Held(token));
        }
        tries += 1;
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::new(
                crate::error::ErrorKind::RateLimited,
                "Your team's previous request for this is still being processed; try again.",
            )
            .retry_after(1));
        }
        let pause = rand::rng().random_range(5..25);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if tries.is_multiple_of(4)
            && let Some(answer) = give_up().await?
        {
            return Ok(Locked::Answered(answer));
        }
    }
}

/// Releases a lock taken by [`lock_or`] (a lapsed lock is harmless: the database guards).
pub(crate) async fn unlock(store: &dyn StateStore, name: &str, token: &LockToken) {
    if let Err(error) = store.lock_release(name, token).await {
        tracing::warn!(%error, name, "lock release failed; it lapses on its own");
    }
}

/// Unix milliseconds as ISO 8601 UTC (`2026-01-02T03:04:05.678Z`), CTFd's `date` fields.
pub(crate) fn iso8601(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Parses a path id, 404 when it is not one (never a 500 for bad input).
pub(crate) fn parse_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::not_found("No such resource."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_database_errors_are_retryable_503s() {
        for message in [
            "error returned from database: 1213 (40001): Deadlock found when trying to get lock",
            "error returned from database: 1205 (HY000): Lock wait timeout exceeded; try restarting",
            "error returned from database: (code: 5) database is locked",
        ] {
            let answer = db_error(DbError::Query(message.to_owned()));
            assert_eq!(
                answer.kind,
                crate::error::ErrorKind::Unavailable,
                "{message}"
            );
            assert!(answer.retry_after.is_some());
        }
        assert_eq!(
            db_error(DbError::Query("syntax error".to_owned())).kind,
            crate::error::ErrorKind::Internal
        );
        assert_eq!(
            db_error(DbError::Conflict("dup".to_owned())).kind,
            crate::error::ErrorKind::Conflict
        );
    }

    #[test]
    fn iso8601_renders_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}

/// A JSON body whose rejections (malformed JSON, wrong types, unknown fields) are answered in
/// the one error shape, 400 (413 for a body over the limit), instead of axum's plain text.
#[derive(Debug)]
pub(crate) struct Body<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::new(
                    crate::error::ErrorKind::PayloadTooLarge,
                    "The request body is too large.",
                ))
            }
            Err(rejection) => Err(ApiError::bad_request(format!(
                "The request body is not valid: {}",
                rejection.body_text().chars().take(300).collect::<String>()
            ))),
        }
    }
}
