//! The scoreboard snapshot: computed by one writer per process and served from memory to every
//! reader, live for admins and cut at the freeze for players, and the scoreboard routes
//! (`/api/v1/scoreboard`, `/api/v1/scoreboard/top/{n}`, the CTFtime feed).
//!
//! A snapshot is recomputed when this process wrote something that changes scores (a solve, an
//! award, an unlock, a challenge edit: [`Boards::invalidate`]) or when it is older than
//! [`BOARD_TTL`] (writes made by another process, team changes). While one reader recomputes,
//! the others are served the previous snapshot. A frozen snapshot is the same
//! computation over the rows before the freeze, so it does not change while the freeze holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::contestant::accounts::{Path, Query};
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::scoreboard::{Board, Standing, compute};
use super::{db_error, iso8601, now_ms, ok, player_cutoff, records, settings};
use crate::contestant::AppState;
use crate::contestant::accounts::Caller;
use crate::contestant::accounts::settings::{ContestSettings, ScoreVisibility};
use crate::error::{ApiError, ApiResult};

/// Longest a snapshot is served without recomputing.
pub const BOARD_TTL: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Cached {
    version: u64,
    at: Instant,
    board: Arc<Board>,
}

/// The snapshots of one process.
#[derive(Debug, Default)]
pub struct Boards {
    version: AtomicU64,
    cached: std::sync::RwLock<HashMap<Option<i64>, Cached>>,
    writer: tokio::sync::Mutex<()>,
    computed: AtomicU64,
    /// The rendered `GET /api/v1/scoreboard` answer of the latest boards (live and frozen):
    /// with thousands of teams, building the JSON costs far more than sending it, so each
    /// snapshot is rendered once and its bytes shared by every reader.
    rendered: std::sync::Mutex<Vec<(Arc<Board>, bytes::Bytes)>>,
}

/// How many rendered boards are kept (the live one and the frozen one, with room for a
/// snapshot being replaced).
const RENDERED_KEPT: usize = 3;

impl Boards {
    /// Something that changes scores was written: the next read recomputes.
    pub fn invalidate(&self) {
        self.version.fetch_add(1, Ordering::SeqCst);
    }

    /// How many times this process computed a board (for tests and metrics).
    pub fn computations(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }

    /// The cached board of `cutoff` and whether it is still fresh.
    fn cached(&self, cutoff: Option<i64>) -> Option<(Arc<Board>, bool)> {
        let version = self.version.load(Ordering::SeqCst);
        let cached = self
            .cached
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cached.get(&cutoff).map(|c| {
            (
                c.board.clone(),
                c.version == version && c.at.elapsed() < BOARD_TTL,
            )
        })
    }

    /// The bytes `render` makes of `board`, rendered once per snapshot.
    fn rendered(
        &self,
        board: &Arc<Board>,
        render: impl FnOnce(&Board) -> bytes::Bytes,
    ) -> bytes::Bytes {
        let lock = || {
            self.rendered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some((_, bytes)) = lock().iter().find(|(b, _)| Arc::ptr_eq(b, board)) {
            return bytes.clone();
        }
        // Rendered outside the lock: two first readers may both render, which is harmless.
        let bytes = render(board);
        let mut kept = lock();
        if !kept.iter().any(|(b, _)| Arc::ptr_eq(b, board)) {
            if kept.len() >= RENDERED_KEPT {
                kept.remove(0);
            }
            kept.push((board.clone(), bytes.clone()));
        }
        bytes
    }

    /// The board over the rows before `cutoff` (all rows when `None`). A fresh snapshot is
    /// served as it is; a stale one is served while another reader recomputes it (readers
    /// never queue behind the writer once a board exists); without any, readers wait for the
    /// one writer.
    pub async fn get(
        &self,
        db: &fctf_core::db::Database,
        cutoff: Option<i64>,
    ) -> ApiResult<Arc<Board>> {
        self.read(db, cutoff, true).await
    }

    /// A fresh board, waiting for the writer if needed (decisions such as "can the team
    /// afford this hint" must not read a stale one).
    pub async fn get_fresh(
        &self,
        db: &fctf_core::db::Database,
        cutoff: Option<i64>,
    ) -> ApiResult<Arc<Board>> {
        self.read(db, cutoff, false).await
    }

    async fn read(
        &self,
        db: &fctf_core::db::Database,
        cutoff: Option<i64>,
        stale_ok: bool,
    ) -> ApiResult<Arc<Board>> {
        let stale = match self.cached(cutoff) {
            Some((board, true)) => return Ok(board),
            Some((board, false)) if stale_ok => Some(board),
            _ => None,
        };
        let _writer = match (self.writer.try_lock(), stale) {
            (Ok(guard), _) => guard,
            (Err(_), Some(stale)) => return Ok(stale),
            (Err(_), None) => self.writer.lock().await,
        };
        if let Some((board, true)) = self.cached(cutoff) {
            return Ok(board);
        }
        let version = self.version.load(Ordering::SeqCst);
        let input = records::board_input(db).await.map_err(db_error)?;
        let board = Arc::new(compute(&input, cutoff));
        self.computed.fetch_add(1, Ordering::Relaxed);
        let mut cached = self
            .cached
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cached.insert(
            cutoff,
            Cached {
                version,
                at: Instant::now(),
                board: board.clone(),
            },
        );
        Ok(board)
    }
}

/// The board `caller` may see now: live for admins, frozen for everyone else once the freeze
/// passed; refused per the score visibility setting.
pub async fn board_for(
    state: &AppState,
    caller: Option<&Caller>,
    settings: &ContestSettings,
) -> ApiResult<Arc<Board>> {
    let admin = caller.is_some_and(|c| c.is_admin);
    if !admin {
        match settings.score_visibility {
            ScoreVisibility::Public => {}
            ScoreVisibility::Private if caller.is_some() => {}
            ScoreVisibility::Private => {
                return Err(ApiError::unauthorized("Sign in to see the scoreboard."));
            }
            ScoreVisibility::Hidden => {
                return Err(ApiError::forbidden("Scores are currently hidden."));
            }
        }
    }
    let cutoff = if admin {
        None
    } else {
        player_cutoff(settings, now_ms())
    };
    state.play.boards.get(&state.db, cutoff).await
}

/// The board as players see it for challenge listings (values, solve counts), whatever the
/// score visibility.
pub async fn view_board(state: &AppState, admin: bool) -> ApiResult<Arc<Board>> {
    let settings = settings(state).await;
    let cutoff = if admin {
        None
    } else {
        player_cutoff(&settings, now_ms())
    };
    state.play.boards.get(&state.db, cutoff).await
}

#[derive(Debug, Deserialize)]
struct BoardQuery {
    bracket_id: Option<i64>,
}

/// The standings of `bracket` (renumbered), or the whole board borrowed as it is: cloning
/// thousands of standings with their solves on every read would cost more than the answer.
fn standings(board: &Board, bracket: Option<i64>) -> std::borrow::Cow<'_, [Standing]> {
    match bracket {
        Some(b) => std::borrow::Cow::Owned(board.bracket(b)),
        None => std::borrow::Cow::Borrowed(&board.standings),
    }
}

fn entry(s: &Standing) -> Value {
    json!({
        "pos": s.pos,
        "account_id": s.team_id,
        "account_url": format!("/teams/{}", s.team_id),
        "account_type": "team",
        "oauth_id": null,
        "name": s.name,
        "score": s.score,
        "bracket_id": s.bracket_id,
        "bracket_name": s.bracket_name,
        "members": s.members.iter().map(|m| json!({
            "id": m.id,
            "oauth_id": null,
            "name": m.name,
            "score": m.score,
            "bracket_id": s.bracket_id,
            "bracket_name": s.bracket_name,
        })).collect::<Vec<_>>(),
    })
}

/// `GET /api/v1/scoreboard`: CTFd's list.
async fn scoreboard(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Query(query): Query<BoardQuery>,
) -> ApiResult<Response> {
    let settings = settings(&state).await;
    let board = board_for(&state, caller.as_ref(), &settings).await?;
    if query.bracket_id.is_some() {
        let list: Vec<Value> = standings(&board, query.bracket_id)
            .iter()
            .map(entry)
            .collect();
        return Ok(ok(list));
    }
    let body = state.play.boards.rendered(&board, |board| {
        let list: Vec<Value> = board.standings.iter().map(entry).collect();
        bytes::Bytes::from(json!({"success": true, "data": list}).to_string())
    });
    Ok(axum::response::IntoResponse::into_response((
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )))
}

/// `GET /api/v1/scoreboard/top/{n}`: CTFd's top-N with each team's solves (for the graph).
async fn top(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Path(count): Path<String>,
    Query(query): Query<BoardQuery>,
) -> ApiResult<Response> {
    let count: usize = count
        .parse()
        .ok()
        .filter(|n| (1..=1000).contains(n))
        .ok_or_else(|| ApiError::bad_request("The count must be between 1 and 1000."))?;
    let settings = settings(&state).await;
    let board = board_for(&state, caller.as_ref(), &settings).await?;
    let mut out = Map::new();
    for s in standings(&board, query.bracket_id).iter().take(count) {
        out.insert(
            s.pos.to_string(),
            json!({
                "id": s.team_id,
                "account_url": format!("/teams/{}", s.team_id),
                "name": s.name,
                "score": s.score,
                "bracket_id": s.bracket_id,
                "bracket_name": s.bracket_name,
                "solves": s.solves.iter().map(|v| json!({
                    "challenge_id": v.challenge_id,
                    "account_id": v.account_id,
                    "team_id": v.team_id,
                    "user_id": v.user_id,
                    "value": v.value,
                    "date": iso8601(v.date_ms),
                })).collect::<Vec<_>>(),
            }),
        );
    }
    Ok(ok(Value::Object(out)))
}

/// `GET /api/v1/ctftime`: the CTFtime scoreboard feed (`{"standings": [{pos, team, score}]}`),
/// frozen like every player view.
async fn ctftime(State(state): State<AppState>, caller: Option<Caller>) -> ApiResult<Response> {
    let settings = settings(&state).await;
    let board = board_for(&state, caller.as_ref(), &settings).await?;
    let standings: Vec<Value> = board
        .standings
        .iter()
        .map(|s| json!({"pos": s.pos, "team": s.name, "score": s.score}))
        .collect();
    Ok(axum::response::IntoResponse::into_response(axum::Json(
        json!({ "standings": standings }),
    )))
}

/// The scoreboard routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/scoreboard", get(scoreboard))
        .route("/api/v1/scoreboard/top/{count}", get(top))
        .route("/api/v1/ctftime", get(ctftime))
}
