//! Challenge routes: the players' list and detail (visibility, prerequisites, solved markers,
//! values and solve counts of the player's view), a challenge's solves, and the admin CRUD of
//! challenges, flags, tags and topics (CTFd's shapes, so ctfcli can author through them).

use std::collections::{HashMap, HashSet};

use crate::contestant::accounts::Path;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use super::flags::{FlagKind, FlagRule};
use super::prerequisites::{Access, access};
use super::records::{self, Challenge, FlagRow, Table};
use super::snapshot::view_board;
use super::{Body, db_error, files, iso8601, may_view, now_ms, ok, parse_id, settings};
use crate::contestant::AppState;
use crate::contestant::accounts::{AdminCaller, Caller};
use crate::error::{ApiError, ApiResult};

/// What a caller may see of `challenge`, given the team's solves.
pub(crate) fn access_of(
    caller: &Caller,
    challenge: &Challenge,
    solved: &HashSet<i64>,
) -> Option<Access> {
    if caller.is_admin {
        return Some(Access::Open);
    }
    if !challenge.is_visible() {
        return None;
    }
    match access(&challenge.requirements(), solved) {
        Access::Hidden => None,
        other => Some(other),
    }
}

async fn team_solves(state: &AppState, caller: &Caller) -> ApiResult<HashSet<i64>> {
    match caller.team_id {
        Some(team) => records::solved_by(&state.db, team).await.map_err(db_error),
        None => Ok(HashSet::new()),
    }
}

/// Tags of every challenge.
async fn tags(state: &AppState) -> ApiResult<HashMap<i64, Vec<Value>>> {
    let rows = sqlx::query("SELECT id, challenge_id, value FROM tags ORDER BY id")
        .fetch_all(state.db.pool())
        .await
        .map_err(|e| db_error(e.into()))?;
    let mut out: HashMap<i64, Vec<Value>> = HashMap::new();
    for r in rows {
        let challenge: i64 = r.try_get("challenge_id").map_err(|e| db_error(e.into()))?;
        let value: String = r.try_get("value").map_err(|e| db_error(e.into()))?;
        out.entry(challenge)
            .or_default()
            .push(json!({ "value": value }));
    }
    Ok(out)
}

/// `GET /api/v1/challenges`.
async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let settings = settings(&state).await;
    if !caller.is_admin {
        may_view(&settings, now_ms())?;
    }
    let challenges = records::challenges(&state.db).await.map_err(db_error)?;
    let solved = team_solves(&state, &caller).await?;
    let board = view_board(&state, caller.is_admin).await?;
    let mut tags = tags(&state).await?;
    let mut out = Vec::new();
    for c in &challenges {
        match access_of(&caller, c, &solved) {
            None => {}
            Some(Access::Anonymized) => out.push(json!({
                "id": c.id, "type": "hidden", "name": "???", "value": 0, "solves": null,
                "solved_by_me": false, "category": "???", "tags": [], "template": "",
                "script": "",
            })),
            Some(_) => out.push(json!({
                "id": c.id,
                "type": c.kind,
                "name": c.name,
                "value": board.values.get(&c.id).copied().unwrap_or(c.value),
                "solves": board.solve_counts.get(&c.id).copied().unwrap_or(0),
                "solved_by_me": solved.contains(&c.id),
                "category": c.category,
                "tags": tags.remove(&c.id).unwrap_or_default(),
                "template": "",
                "script": "",
                "instance": c.has_instance(),
            })),
        }
    }
    Ok(ok(out))
}

/// Loads a challenge the caller may open, or answers 404 (hidden) / 403 (locked).
pub(crate) async fn open_challenge(
    state: &AppState,
    caller: &Caller,
    id: i64,
) -> ApiResult<(Challenge, HashSet<i64>)> {
    let challenge = records::challenge(&state.db, id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| ApiError::not_found("No such challenge."))?;
    let solved = team_solves(state, caller).await?;
    match access_of(caller, &challenge, &solved) {
        None => Err(ApiError::not_found("No such challenge.")),
        Some(Access::Anonymized) => Err(ApiError::forbidden(
            "This challenge is locked until you solve its prerequisites.",
        )),
        Some(_) => Ok((challenge, solved)),
    }
}

/// `GET /api/v1/challenges/{id}`.
async fn detail(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let settings = settings(&state).await;
    if !caller.is_admin {
        may_view(&settings, now_ms())?;
    }
    let (c, solved) = open_challenge(&state, &caller, id).await?;
    let board = view_board(&state, caller.is_admin).await?;
    let attempts = match caller.team_id {
        Some(team) => records::wrong_attempts(&state.db, team, id)
            .await
            .map_err(db_error)?,
        None => 0,
    };
    let hints = sqlx::query("SELECT id, title, cost FROM hints WHERE challenge_id = ? ORDER BY id")
        .bind(id)
        .fetch_all(state.db.pool())
        .await
        .map_err(|e| db_error(e.into()))?
        .iter()
        .map(|r| {
            Ok(json!({
                "id": r.try_get::<i64, _>("id")?,
                "title": r.try_get::<String, _>("title")?,
                "cost": r.try_get::<i64, _>("cost")?,
            }))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(|e| db_error(e.into()))?;
    let files = files::links(&state, id).await?;
    let tags = tags(&state).await?.remove(&id).unwrap_or_default();
    let mut data = json!({
        "id": c.id,
        "name": c.name,
        "value": board.values.get(&c.id).copied().unwrap_or(c.value),
        "initial": c.initial,
        "minimum": c.minimum,
        "decay": c.decay,
        "function": c.function,
        "description": c.description,
        "connection_info": c.connection_info,
        "category": c.category,
        "state": c.state,
        "max_attempts": c.max_attempts,
        "type": c.kind,
        "type_data": {"id": c.kind, "name": c.kind, "templates": {}, "scripts": {}},
        "solves": board.solve_counts.get(&c.id).copied().unwrap_or(0),
        "solved_by_me": solved.contains(&c.id),
        "attempts": attempts,
        "files": files,
        "tags": tags,
        "hints": hints,
        "view": "",
    });
    if c.has_instance()
        && let Some(map) = data.as_object_mut()
    {
        map.insert(
            "instance".to_owned(),
            json!({"protocol": c.protocol.clone().unwrap_or_else(|| "http".to_owned())}),
        );
    }
    Ok(ok(data))
}

/// `GET /api/v1/challenges/{id}/solves`: who solved it, in database order, in the caller's view.
async fn solves(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let settings = settings(&state).await;
    if !caller.is_admin {
        may_view(&settings, now_ms())?;
    }
    open_challenge(&state, &caller, id).await?;
    let board = view_board(&state, caller.is_admin).await?;
    let mut rows: Vec<(i64, Value)> = board
        .standings
        .iter()
        .flat_map(|s| {
            s.solves.iter().filter(|v| v.challenge_id == id).map(|v| {
                (
                    v.solve_id,
                    json!({
                        "account_id": s.team_id,
                        "name": s.name,
                        "date": iso8601(v.date_ms),
                        "account_url": format!("/teams/{}", s.team_id),
                    }),
                )
            })
        })
        .collect();
    rows.sort_by_key(|(order, _)| *order);
    Ok(ok(rows.into_iter().map(|(_, v)| v).collect::<Vec<_>>()))
}

// ---- admin ----

/// A new challenge's fields before the body is merged in.
pub(crate) fn blank() -> Challenge {
    Challenge {
        id: 0,
        name: String::new(),
        category: String::new(),
        description: String::new(),
        connection_info: None,
        value: 0,
        kind: "standard".to_owned(),
        initial: None,
        minimum: None,
        decay: None,
        function: "linear".to_owned(),
        first_blood_bonus: 0,
        state: "visible".to_owned(),
        max_attempts: 0,
        cooldown_secs: 0,
        requirements: None,
        position: 0,
        image: None,
        command: None,
        port: None,
        cpu_millicores: None,
        memory_mib: None,
        lifetime_secs: None,
        protocol: None,
        harden: false,
        gvisor: false,
        team_flag: false,
    }
}

/// Why a challenge body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// Not a JSON object of known fields, or a field's value is invalid by itself: 400.
    #[error("{0}")]
    Malformed(String),
    /// Every field is valid, but together they break a rule (a dynamic challenge's minimum
    /// above its initial value): 422.
    #[error("{0}")]
    Rule(String),
}

impl From<ChallengeError> for ApiError {
    fn from(error: ChallengeError) -> Self {
        match error {
            ChallengeError::Malformed(message) => ApiError::bad_request(message),
            ChallengeError::Rule(message) => {
                ApiError::new(crate::error::ErrorKind::Unprocessable, message)
            }
        }
    }
}

/// `base` with the fields of `patch` (a JSON object of [`Challenge`] fields) applied, checked.
pub fn merge(base: &Challenge, patch: &Value) -> Result<Challenge, ChallengeError> {
    let malformed = |message: &str| ChallengeError::Malformed(message.to_owned());
    let Value::Object(patch) = patch else {
        return Err(malformed("The body must be a JSON object."));
    };
    let Ok(Value::Object(mut fields)) = serde_json::to_value(base) else {
        return Err(malformed("unreadable challenge"));
    };
    for (key, value) in patch {
        let key = match key.as_str() {
            "id" => continue,
            "decay_function" => "function",
            other => other,
        };
        if !fields.contains_key(key) {
            return Err(ChallengeError::Malformed(format!("Unknown field {key:?}.")));
        }
        let value = match (key, value) {
            ("type", Value::String(s)) if s == "static" => Value::from("standard"),
            ("harden" | "gvisor" | "team_flag", Value::Number(n)) => {
                Value::Bool(n.as_i64() != Some(0))
            }
            _ => value.clone(),
        };
        fields.insert(key.to_owned(), value);
    }
    let mut next: Challenge = serde_json::from_value(Value::Object(fields))
        .map_err(|e| ChallengeError::Malformed(format!("Invalid field: {e}.")))?;
    next.id = base.id;
    check(&mut next)?;
    Ok(next)
}

/// The rules of a stored challenge.
fn check(c: &mut Challenge) -> Result<(), ChallengeError> {
    check_fields(c).map_err(ChallengeError::Malformed)?;
    if c.kind == "dynamic" {
        let initial = c.initial.unwrap_or(c.value);
        let minimum = c.minimum.unwrap_or(0);
        if minimum < 0 || c.decay.unwrap_or(0) < 0 {
            return Err(ChallengeError::Malformed(
                "A dynamic challenge needs minimum >= 0 and decay >= 0.".to_owned(),
            ));
        }
        if initial < minimum {
            return Err(ChallengeError::Rule(
                "A dynamic challenge needs minimum <= initial.".to_owned(),
            ));
        }
        c.initial = Some(initial);
        c.minimum = Some(minimum);
        c.decay = Some(c.decay.unwrap_or(0));
    }
    Ok(())
}

/// The rules of one field at a time.
fn check_fields(c: &mut Challenge) -> Result<(), String> {
    let name_len = c.name.trim().chars().count();
    if name_len == 0 || name_len > 255 || c.category.chars().count() > 255 {
        return Err("The name must be 1-255 characters and the category at most 255.".to_owned());
    }
    if !matches!(c.kind.as_str(), "standard" | "dynamic") {
        return Err("The type must be \"standard\" or \"dynamic\".".to_owned());
    }
    if !matches!(c.state.as_str(), "visible" | "hidden") {
        return Err("The state must be \"visible\" or \"hidden\".".to_owned());
    }
    if !matches!(c.function.as_str(), "linear" | "logarithmic") {
        return Err("The function must be \"linear\" or \"logarithmic\".".to_owned());
    }
    if c.value < 0 || c.max_attempts < 0 || c.cooldown_secs < 0 || c.first_blood_bonus < 0 {
        return Err(
            "value, max_attempts, cooldown_secs and first_blood_bonus must be >= 0.".to_owned(),
        );
    }
    if c.protocol
        .as_deref()
        .is_some_and(|p| !matches!(p, "http" | "tcp"))
    {
        return Err("The protocol must be \"http\" or \"tcp\".".to_owned());
    }
    if c.port.is_some_and(|p| !(1..=65535).contains(&p)) {
        return Err("The port must be 1-65535.".to_owned());
    }
    if c.command.as_ref().is_some_and(Vec::is_empty) {
        return Err("The command must name a program.".to_owned());
    }
    if c.cpu_millicores.is_some_and(|v| v <= 0)
        || c.memory_mib.is_some_and(|v| v <= 0)
        || c.lifetime_secs.is_some_and(|v| v <= 0)
    {
        return Err("cpu_millicores, memory_mib and lifetime_secs must be positive.".to_owned());
    }
    if c.image.as_deref().is_some_and(str::is_empty) {
        c.image = None;
    }
    Ok(())
}

/// Saves `c`, sets a dynamic challenge's live value from its solves, and drops the snapshots.
async fn save(state: &AppState, mut c: Challenge) -> ApiResult<Challenge> {
    if c.kind == "dynamic" {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM solves WHERE challenge_id = ?")
            .bind(c.id)
            .fetch_one(state.db.pool())
            .await
            .map_err(|e| db_error(e.into()))?;
        let n: i64 = row.try_get("n").map_err(|e| db_error(e.into()))?;
        c.value = c.valuation().value(u64::try_from(n).unwrap_or(0));
    }
    c.id = records::save_challenge(&state.db, &c, now_ms())
        .await
        .map_err(db_error)?;
    state.play.boards.invalidate();
    state.play.challenges_changed();
    Ok(c)
}

/// `POST /api/v1/challenges` (admin).
async fn create(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Body(body): Body<Value>,
) -> ApiResult<Response> {
    let c = merge(&blank(), &body)?;
    let c = save(&state, c).await?;
    Ok(ok(c))
}

/// `PATCH /api/v1/challenges/{id}` (admin).
async fn update(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Path(id): Path<String>,
    Body(body): Body<Value>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let base = records::challenge(&state.db, id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| ApiError::not_found("No such challenge."))?;
    let c = merge(&base, &body)?;
    let c = save(&state, c).await?;
    Ok(ok(c))
}

/// `DELETE /api/v1/challenges/{id}` (admin).
async fn delete(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    if !records::delete_challenge(&state.db, id)
        .await
        .map_err(db_error)?
    {
        return Err(ApiError::not_found("No such challenge."));
    }
    state.play.boards.invalidate();
    state.play.challenge_deleted();
    Ok(ok(Value::Null))
}

/// CTFd's flag body (`challenge` or `challenge_id`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlagBody {
    #[serde(alias = "challenge")]
    challenge_id: Option<i64>,
    #[serde(rename = "type")]
    kind: Option<String>,
    content: Option<String>,
    data: Option<String>,
}

fn apply_flag(base: FlagRow, body: FlagBody) -> Result<FlagRow, ApiError> {
    let flag = FlagRow {
        id: base.id,
        challenge_id: body.challenge_id.unwrap_or(base.challenge_id),
        kind: body.kind.unwrap_or(base.kind),
        content: body.content.unwrap_or(base.content),
        data: body.data.unwrap_or(base.data),
    };
    if !matches!(flag.data.as_str(), "" | "case_insensitive") {
        return Err(ApiError::bad_request(
            "data must be \"\" or \"case_insensitive\".",
        ));
    }
    let kind = FlagKind::parse(&flag.kind)
        .ok_or_else(|| ApiError::bad_request("The type must be \"static\" or \"regex\"."))?;
    FlagRule {
        kind,
        content: flag.content.clone(),
        case_insensitive: flag.data == "case_insensitive",
    }
    .validate()
    .map_err(|e| {
        // Well-formed, but its content breaks the rule of its type (a regex that does not
        // compile, an empty flag).
        ApiError::new(
            crate::error::ErrorKind::Unprocessable,
            format!("Invalid flag: {e}."),
        )
    })?;
    Ok(flag)
}

async fn require_challenge(state: &AppState, id: i64) -> ApiResult<()> {
    records::challenge(&state.db, id)
        .await
        .map_err(db_error)?
        .map(|_| ())
        .ok_or_else(|| ApiError::not_found("No such challenge."))
}

/// `GET /api/v1/flags` (admin).
async fn flag_list(State(state): State<AppState>, _admin: AdminCaller) -> ApiResult<Response> {
    Ok(ok(records::flags(&state.db, None)
        .await
        .map_err(db_error)?))
}

/// `GET /api/v1/challenges/{id}/flags` (admin).
async fn challenge_flags(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    Ok(ok(records::flags(&state.db, Some(id))
        .await
        .map_err(db_error)?))
}

/// `POST /api/v1/flags` (admin).
async fn flag_create(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Body(body): Body<FlagBody>,
) -> ApiResult<Response> {
    let base = FlagRow {
        id: 0,
        challenge_id: 0,
        kind: "static".to_owned(),
        content: String::new(),
        data: String::new(),
    };
    let mut flag = apply_flag(base, body)?;
    require_challenge(&state, flag.challenge_id).await?;
    flag.id = records::save_flag(&state.db, &flag)
        .await
        .map_err(db_error)?;
    state.play.challenges_changed();
    Ok(ok(flag))
}

/// `GET /api/v1/flags/{id}` (admin).
async fn flag_get(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let flag = records::flag(&state.db, id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| ApiError::not_found("No such flag."))?;
    Ok(ok(flag))
}

/// `PATCH /api/v1/flags/{id}` (admin).
async fn flag_update(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Path(id): Path<String>,
    Body(body): Body<FlagBody>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let base = records::flag(&state.db, id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| ApiError::not_found("No such flag."))?;
    let flag = apply_flag(base, body)?;
    require_challenge(&state, flag.challenge_id).await?;
    records::save_flag(&state.db, &flag)
        .await
        .map_err(db_error)?;
    state.play.challenges_changed();
    Ok(ok(flag))
}

/// `DELETE /api/v1/flags/{id}` (admin).
async fn flag_delete(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    delete_row(&state, Table::Flags, &id).await
}

/// Deletes one row by its path id, 404 when absent.
pub(crate) async fn delete_row(state: &AppState, table: Table, id: &str) -> ApiResult<Response> {
    let id = parse_id(id)?;
    if records::delete_by_id(&state.db, table, id)
        .await
        .map_err(db_error)?
    {
        state.play.boards.invalidate();
        if table == Table::Flags {
            state.play.challenges_changed();
        }
        Ok(ok(Value::Null))
    } else {
        Err(ApiError::not_found("No such resource."))
    }
}

/// Body of tags and topics (CTFd: `{"challenge": id, "value": "..."}`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelBody {
    #[serde(alias = "challenge")]
    challenge_id: i64,
    value: String,
    #[serde(rename = "type", default)]
    _kind: Option<String>,
}

async fn add_label(state: &AppState, table: &'static str, body: LabelBody) -> ApiResult<Response> {
    let value = body.value.trim().to_owned();
    if value.is_empty() || value.chars().count() > 255 {
        return Err(ApiError::bad_request("The value must be 1-255 characters."));
    }
    require_challenge(state, body.challenge_id).await?;
    let sql = format!("INSERT INTO {table} (challenge_id, value) VALUES (?, ?) RETURNING id");
    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(body.challenge_id)
        .bind(value.clone())
        .fetch_one(state.db.pool())
        .await
        .map_err(|e| db_error(e.into()))?;
    Ok(ok(json!({
        "id": records::returned_id(&done).map_err(db_error)?,
        "challenge_id": body.challenge_id,
        "challenge": body.challenge_id,
        "value": value,
    })))
}

async fn tag_create(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Body(body): Body<LabelBody>,
) -> ApiResult<Response> {
    add_label(&state, "tags", body).await
}

async fn tag_delete(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    delete_row(&state, Table::Tags, &id).await
}

async fn topic_create(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Body(body): Body<LabelBody>,
) -> ApiResult<Response> {
    add_label(&state, "topics", body).await
}

async fn topic_delete(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    delete_row(&state, Table::Topics, &id).await
}

/// `GET /api/v1/challenges/{id}/{tags|topics|hints|files|requirements}` (admin): what hangs off
/// a challenge, as ctfcli's sync reads it.
async fn parts(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Path((id, part)): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let c = records::challenge(&state.db, id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| ApiError::not_found("No such challenge."))?;
    let (sql, columns): (&str, &[&str]) = match part.as_str() {
        "tags" => (
            "SELECT id, challenge_id, value FROM tags WHERE challenge_id = ? ORDER BY id",
            &["value"],
        ),
        "topics" => (
            "SELECT id, challenge_id, value FROM topics WHERE challenge_id = ? ORDER BY id",
            &["value"],
        ),
        "hints" => (
            "SELECT id, challenge_id, title, content, cost FROM hints WHERE challenge_id = ? ORDER BY id",
            &["title", "content", "cost"],
        ),
        "files" => (
            "SELECT id, challenge_id, type, location, sha1sum FROM files WHERE challenge_id = ? ORDER BY id",
            &["type", "location", "sha1sum"],
        ),
        "requirements" => return Ok(ok(c.requirements().clone())),
        _ => return Err(ApiError::not_found("No such resource.")),
    };
    let rows = sqlx::query(sql)
        .bind(id)
        .fetch_all(state.db.pool())
        .await
        .map_err(|e| db_error(e.into()))?;
    let mut out = Vec::new();
    for r in &rows {
        let mut item = serde_json::Map::new();
        for key in ["id", "challenge_id"] {
            let v: i64 = r.try_get(key).map_err(|e| db_error(e.into()))?;
            item.insert(key.to_owned(), json!(v));
        }
        item.insert("challenge".to_owned(), json!(id));
        for key in columns {
            let v = if *key == "cost" {
                json!(r.try_get::<i64, _>(*key).map_err(|e| db_error(e.into()))?)
            } else {
                json!(
                    r.try_get::<String, _>(*key)
                        .map_err(|e| db_error(e.into()))?
                )
            };
            item.insert((*key).to_owned(), v);
        }
        out.push(Value::Object(item));
    }
    Ok(ok(out))
}

/// The challenge routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/challenges", get(list).post(create))
        .route(
            "/api/v1/challenges/{id}",
            get(detail).patch(update).delete(delete),
        )
        .route("/api/v1/challenges/{id}/solves", get(solves))
        .route("/api/v1/challenges/{id}/flags", get(challenge_flags))
        .route("/api/v1/challenges/{id}/{part}", get(parts))
        .route("/api/v1/flags", get(flag_list).post(flag_create))
        .route(
            "/api/v1/flags/{id}",
            get(flag_get).patch(flag_update).delete(flag_delete),
        )
        .route("/api/v1/tags", axum::routing::post(tag_create))
        .route("/api/v1/tags/{id}", axum::routing::delete(tag_delete))
        .route("/api/v1/topics", axum::routing::post(topic_create))
        .route("/api/v1/topics/{id}", axum::routing::delete(topic_delete))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_applies_known_fields_and_refuses_the_rest() {
        let c = merge(
            &blank(),
            &json!({"name": "web", "type": "dynamic", "initial": 500, "minimum": 100, "decay": 10,
                    "function": "logarithmic", "command": ["python3", "app.py"], "port": 8000}),
        )
        .unwrap();
        assert_eq!(c.kind, "dynamic");
        assert_eq!(c.initial, Some(500));
        assert!(c.has_instance());
        assert!(merge(&blank(), &json!({"name": "x", "bogus": 1})).is_err());
        assert!(merge(&blank(), &json!({"name": ""})).is_err());
        // Each field valid, together not: a rule (422), not a malformed body (400).
        assert!(matches!(
            merge(
                &blank(),
                &json!({"name": "x", "type": "dynamic", "initial": 10, "minimum": 20})
            ),
            Err(ChallengeError::Rule(_))
        ));
        assert!(matches!(
            merge(
                &blank(),
                &json!({"name": "x", "type": "dynamic", "minimum": -1})
            ),
            Err(ChallengeError::Malformed(_))
        ));
        assert!(merge(&blank(), &json!({"name": "x", "protocol": "udp"})).is_err());
        assert_eq!(
            merge(&blank(), &json!({"name": "x", "type": "static"}))
                .unwrap()
                .kind,
            "standard"
        );
        assert!(merge(&blank(), &json!([1])).is_err());
    }
}
