//! `/api/v1/teams` in CTFd's shapes, plus what CTFd does with forms: create (the creator is the
//! captain), join by invite code (within the size cap, race-free: see [`records`]), leave,
//! captain transfer (`PATCH /teams/me {"captain_id"}`); the admin's edit, delete and member
//! changes; and `/api/v1/brackets`.
//!
//! Rosters are frozen once the contest has ended.

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::json::{Page, PageQuery, done, ok, ok_page};
use super::records::{self, Listing, SetValue, TeamError, name_key};
use super::{
    AdminCaller, Caller, ClientIp, ContestPhase, Json, Path, Query, db_error, now_ms, sql_error,
};
use crate::contestant::AppState;
use crate::error::{ApiError, ErrorKind};

const COLUMNS: &str = "id, name, email, captain_id, invite_code, bracket_id, website, \
                       affiliation, country, hidden, banned, created_ms";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum View {
    Public,
    Member,
    Admin,
}

async fn team_json(state: &AppState, row: &AnyRow, view: View) -> Result<Value, ApiError> {
    let text = |c: &str| row.try_get::<Option<String>, _>(c).map_err(sql_error);
    let int = |c: &str| row.try_get::<Option<i64>, _>(c).map_err(sql_error);
    let id: i64 = row.try_get("id").map_err(sql_error)?;
    let members = records::member_ids(&state.db, id).await.map_err(db_error)?;
    let mut team = json!({
        "id": id,
        "name": row.try_get::<String, _>("name").map_err(sql_error)?,
        "captain_id": int("captain_id")?,
        "bracket_id": int("bracket_id")?,
        "website": text("website")?,
        "affiliation": text("affiliation")?,
        "country": text("country")?,
        "created": int("created_ms")?,
        "members": members,
    });
    if view != View::Public {
        team["invite_code"] = json!(row.try_get::<String, _>("invite_code").map_err(sql_error)?);
        team["email"] = json!(text("email")?);
    }
    if view == View::Admin {
        team["hidden"] = json!(row.try_get::<i64, _>("hidden").map_err(sql_error)? != 0);
        team["banned"] = json!(row.try_get::<i64, _>("banned").map_err(sql_error)? != 0);
    }
    Ok(team)
}

async fn fetch(state: &AppState, id: i64) -> Result<Option<AnyRow>, ApiError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM teams WHERE id = ?"
    )))
    .bind(id)
    .fetch_optional(state.db.pool())
    .await
    .map_err(sql_error)
}

fn unprocessable(message: String) -> ApiError {
    ApiError::new(ErrorKind::Unprocessable, message)
}

fn team_error(error: TeamError) -> ApiError {
    match error {
        TeamError::AlreadyInTeam => {
            ApiError::conflict("You are already in a team; leave it first.")
        }
        TeamError::Full => ApiError::conflict("That team is full."),
        TeamError::NoTeam => ApiError::not_found("No such team."),
        TeamError::NotMember => ApiError::conflict("That user is not in this team."),
        TeamError::Db(fctf_core::db::DbError::Conflict(_)) => {
            ApiError::conflict("That team name is already taken.")
        }
        TeamError::Db(e) => db_error(e),
    }
}

/// Rosters are frozen after the end.
async fn roster_open(state: &AppState) -> Result<(), ApiError> {
    if state.accounts.contest().await.phase(now_ms()) == ContestPhase::Ended {
        Err(ApiError::forbidden(
            "The contest has ended; teams can no longer change.",
        ))
    } else {
        Ok(())
    }
}

async fn check_bracket(state: &AppState, bracket: Option<i64>) -> Result<(), ApiError> {
    if let Some(id) = bracket {
        let found = sqlx::query("SELECT id FROM brackets WHERE id = ?")
            .bind(id)
            .fetch_optional(state.db.pool())
            .await
            .map_err(sql_error)?;
        if found.is_none() {
            // Well formed, refused by the current rows: 422, as the other semantic refusals.
            return Err(unprocessable("No such bracket.".to_owned()));
        }
    }
    Ok(())
}

fn forget_members(state: &AppState, members: &[i64]) {
    for id in members {
        state.accounts.forget_user(*id);
    }
}

/// `GET /api/v1/teams`.
pub async fn list(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Query(query): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let page = Page::of(query);
    let admin = caller.as_ref().is_some_and(|c| c.is_admin);
    let listing = if admin {
        Listing::All
    } else {
        Listing::Visible
    };
    let (total, rows) = records::listed_page(
        &state.db,
        "teams",
        COLUMNS,
        listing,
        page.limit(),
        page.offset(),
    )
    .await
    .map_err(db_error)?;
    let view = if admin { View::Admin } else { View::Public };
    let mut data = Vec::with_capacity(rows.len());
    for row in &rows {
        data.push(team_json(&state, row, view).await?);
    }
    Ok(ok_page(data, page, total))
}

/// Body of `POST /api/v1/teams`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTeam {
    pub name: String,
    #[serde(default)]
    pub bracket_id: Option<i64>,
}

/// `POST /api/v1/teams`: a player creates a team and becomes its captain; an admin creates an
/// empty team.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<NewTeam>,
) -> Result<Response, ApiError> {
    let name = records::check_name(&body.name, "team").map_err(unprocessable)?;
    check_bracket(&state, body.bracket_id).await?;
    let id = if caller.is_admin {
        records::insert_team(&state.db, &name, body.bracket_id)
            .await
            .map_err(|e| team_error(TeamError::Db(e)))?
    } else {
        roster_open(&state).await?;
        if caller.team_id.is_some() {
            return Err(team_error(TeamError::AlreadyInTeam));
        }
        let id =
            records::create_team_with_captain(&state.db, caller.user_id, &name, body.bracket_id)
                .await
                .map_err(team_error)?;
        state.accounts.forget_user(caller.user_id);
        id
    };
    let row = fetch(&state, id)
        .await?
        .ok_or_else(|| ApiError::not_found("No such team."))?;
    let view = if caller.is_admin {
        View::Admin
    } else {
        View::Member
    };
    Ok(ok(team_json(&state, &row, view).await?))
}

/// Body of `POST /api/v1/teams/join`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Join {
    pub invite_code: String,
}

/// `POST /api/v1/teams/join`: joins the team of an invite code, within the size cap.
pub async fn join(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<Join>,
) -> Result<Response, ApiError> {
    roster_open(&state).await?;
    if caller.team_id.is_some() {
        return Err(team_error(TeamError::AlreadyInTeam));
    }
    let code = body.invite_code.trim();
    let team = if code.is_empty() || code.len() > 64 {
        None
    } else {
        records::team_by_invite(&state.db, code)
            .await
            .map_err(db_error)?
    };
    let Some(team_id) = team else {
        return Err(ApiError::not_found("No team has that invite code."));
    };
    let row = fetch(&state, team_id)
        .await?
        .ok_or_else(|| ApiError::not_found("No team has that invite code."))?;
    if row.try_get::<i64, _>("banned").map_err(sql_error)? != 0 {
        return Err(ApiError::forbidden("That team is banned."));
    }
    let cap = state.accounts.contest().await.team_size;
    records::join_team(&state.db, caller.user_id, team_id, cap)
        .await
        .map_err(team_error)?;
    state.accounts.forget_user(caller.user_id);
    Ok(ok(team_json(&state, &row, View::Member).await?))
}

/// `GET /api/v1/teams/me`.
pub async fn me(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let team = caller
        .team_id
        .ok_or_else(|| ApiError::not_found("You are not in a team."))?;
    let row = fetch(&state, team)
        .await?
        .ok_or_else(|| ApiError::not_found("You are not in a team."))?;
    Ok(ok(team_json(&state, &row, View::Member).await?))
}

/// Body of `PATCH /api/v1/teams/me` (captain only).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchTeam {
    pub name: Option<String>,
    pub captain_id: Option<i64>,
    pub website: Option<String>,
    pub affiliation: Option<String>,
    pub country: Option<String>,
    /// `true`: a new invite code (the old one stops working).
    #[serde(default)]
    pub new_invite_code: bool,
}

fn profile_sets(body: &PatchTeam) -> Result<Vec<(&'static str, SetValue)>, ApiError> {
    let mut sets = Vec::new();
    if let Some(name) = &body.name {
        let name = records::check_name(name, "team").map_err(unprocessable)?;
        sets.push(("name_key", SetValue::Text(Some(name_key(&name)))));
        sets.push(("name", SetValue::Text(Some(name))));
    }
    for (column, value, max) in [
        ("website", &body.website, 255),
        ("affiliation", &body.affiliation, 255),
        ("country", &body.country, 32),
    ] {
        if let Some(value) = value {
            if value.chars().count() > max || value.chars().any(char::is_control) {
                return Err(unprocessable(format!("The {column} is not valid.")));
            }
            let value = Some(value.trim().to_owned()).filter(|v| !v.is_empty());
            sets.push((column, SetValue::Text(value)));
        }
    }
    if body.new_invite_code {
        sets.push(("invite_code", SetValue::Text(Some(records::invite_code()))));
    }
    Ok(sets)
}

async fn apply_patch(
    state: &AppState,
    team_id: i64,
    body: &PatchTeam,
    extra: Vec<(&'static str, SetValue)>,
) -> Result<(), ApiError> {
    let mut sets = profile_sets(body)?;
    sets.extend(extra);
    let members = records::member_ids(&state.db, team_id)
        .await
        .map_err(db_error)?;
    if let Some(captain) = body.captain_id {
        if !members.contains(&captain) {
            return Err(unprocessable(
                "The new captain must be a member of the team.".to_owned(),
            ));
        }
        sets.push(("captain_id", SetValue::Int(Some(captain))));
    }
    records::update_row(&state.db, "teams", team_id, &sets)
        .await
        .map_err(|e| team_error(TeamError::Db(e)))?;
    forget_members(state, &members);
    Ok(())
}

/// `PATCH /api/v1/teams/me`: the captain edits the team or hands the captaincy on.
pub async fn patch_me(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<PatchTeam>,
) -> Result<Response, ApiError> {
    let team = caller
        .team_id
        .ok_or_else(|| ApiError::not_found("You are not in a team."))?;
    if !caller.is_captain {
        return Err(ApiError::forbidden(
            "Only the team captain may change the team.",
        ));
    }
    apply_patch(&state, team, &body, Vec::new()).await?;
    let row = fetch(&state, team)
        .await?
        .ok_or_else(|| ApiError::not_found("No such team."))?;
    Ok(ok(team_json(&state, &row, View::Member).await?))
}

/// `POST /api/v1/teams/me/leave`: a captain must hand the captaincy on first unless alone.
pub async fn leave(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    roster_open(&state).await?;
    let team = caller
        .team_id
        .ok_or_else(|| ApiError::not_found("You are not in a team."))?;
    if caller.is_captain {
        let members = records::member_ids(&state.db, team)
            .await
            .map_err(db_error)?;
        if members.len() > 1 {
            return Err(ApiError::conflict(
                "You are the captain: make another member captain before you leave.",
            ));
        }
    }
    records::leave_team(&state.db, caller.user_id, team)
        .await
        .map_err(team_error)?;
    state.accounts.forget_user(caller.user_id);
    Ok(done())
}

/// `GET /api/v1/teams/{id}`: hidden and banned teams are 404 to players.
pub async fn get_one(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let (row, view) = visible(&state, caller.as_ref(), id).await?;
    Ok(ok(team_json(&state, &row, view).await?))
}

async fn visible(
    state: &AppState,
    caller: Option<&Caller>,
    id: i64,
) -> Result<(AnyRow, View), ApiError> {
    let missing = || ApiError::not_found("No such team.");
    let row = fetch(state, id).await?.ok_or_else(missing)?;
    let view = match caller {
        Some(c) if c.is_admin => View::Admin,
        Some(c) if c.team_id == Some(id) => View::Member,
        _ => View::Public,
    };
    let hidden = row.try_get::<i64, _>("hidden").map_err(sql_error)? != 0
        || row.try_get::<i64, _>("banned").map_err(sql_error)? != 0;
    if hidden && view == View::Public {
        return Err(missing());
    }
    Ok((row, view))
}

/// `GET /api/v1/teams/{id}/members`: member ids.
pub async fn members(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    visible(&state, caller.as_ref(), id).await?;
    Ok(ok(records::member_ids(&state.db, id)
        .await
        .map_err(db_error)?))
}

/// Body of the admin's `PATCH /api/v1/teams/{id}`: the captain's fields (see [`PatchTeam`])
/// and hide, ban, bracket.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTeam {
    pub name: Option<String>,
    pub captain_id: Option<i64>,
    pub website: Option<String>,
    pub affiliation: Option<String>,
    pub country: Option<String>,
    #[serde(default)]
    pub new_invite_code: bool,
    pub hidden: Option<bool>,
    pub banned: Option<bool>,
    pub bracket_id: Option<i64>,
}

/// `PATCH /api/v1/teams/{id}` (admin): also hide, ban, bracket.
pub async fn admin_patch(
    State(state): State<AppState>,
    AdminCaller(_admin): AdminCaller,
    Path(id): Path<i64>,
    Json(body): Json<AdminTeam>,
) -> Result<Response, ApiError> {
    if fetch(&state, id).await?.is_none() {
        return Err(ApiError::not_found("No such team."));
    }
    check_bracket(&state, body.bracket_id).await?;
    let mut extra = Vec::new();
    for (column, value) in [("hidden", body.hidden), ("banned", body.banned)] {
        if let Some(value) = value {
            extra.push((column, SetValue::Int(Some(i64::from(value)))));
        }
    }
    if let Some(bracket) = body.bracket_id {
        extra.push(("bracket_id", SetValue::Int(Some(bracket))));
    }
    let patch = PatchTeam {
        name: body.name,
        captain_id: body.captain_id,
        website: body.website,
        affiliation: body.affiliation,
        country: body.country,
        new_invite_code: body.new_invite_code,
    };
    apply_patch(&state, id, &patch, extra).await?;
    let row = fetch(&state, id)
        .await?
        .ok_or_else(|| ApiError::not_found("No such team."))?;
    Ok(ok(team_json(&state, &row, View::Admin).await?))
}

/// `DELETE /api/v1/teams/{id}` (admin): members are left without a team.
pub async fn admin_delete(
    State(state): State<AppState>,
    AdminCaller(_admin): AdminCaller,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    if fetch(&state, id).await?.is_none() {
        return Err(ApiError::not_found("No such team."));
    }
    let members = records::member_ids(&state.db, id).await.map_err(db_error)?;
    sqlx::query("UPDATE users SET team_id = NULL WHERE team_id = ?")
        .bind(id)
        .execute(state.db.pool())
        .await
        .map_err(sql_error)?;
    sqlx::query("DELETE FROM teams WHERE id = ?")
        .bind(id)
        .execute(state.db.pool())
        .await
        .map_err(sql_error)?;
    forget_members(&state, &members);
    Ok(done())
}

/// Body of the admin's member routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub user_id: i64,
}

/// `POST /api/v1/teams/{id}/members` (admin): adds a user without a team (the size cap does not
/// bind admins).
pub async fn admin_add_member(
    State(state): State<AppState>,
    AdminCaller(_admin): AdminCaller,
    Path(id): Path<i64>,
    Json(body): Json<Member>,
) -> Result<Response, ApiError> {
    let exists = sqlx::query("SELECT id FROM users WHERE id = ?")
        .bind(body.user_id)
        .fetch_optional(state.db.pool())
        .await
        .map_err(sql_error)?;
    if exists.is_none() {
        return Err(ApiError::not_found("No such user."));
    }
    records::join_team(&state.db, body.user_id, id, u32::MAX)
        .await
        .map_err(team_error)?;
    state.accounts.forget_user(body.user_id);
    Ok(ok(records::member_ids(&state.db, id)
        .await
        .map_err(db_error)?))
}

/// `DELETE /api/v1/teams/{id}/members` (admin).
pub async fn admin_remove_member(
    State(state): State<AppState>,
    AdminCaller(_admin): AdminCaller,
    Path(id): Path<i64>,
    Json(body): Json<Member>,
) -> Result<Response, ApiError> {
    records::leave_team(&state.db, body.user_id, id)
        .await
        .map_err(team_error)?;
    state.accounts.forget_user(body.user_id);
    Ok(ok(records::member_ids(&state.db, id)
        .await
        .map_err(db_error)?))
}

fn bracket_json(row: &AnyRow) -> Result<Value, ApiError> {
    Ok(json!({
        "id": row.try_get::<i64, _>("id").map_err(sql_error)?,
        "name": row.try_get::<String, _>("name").map_err(sql_error)?,
        "description": row.try_get::<Option<String>, _>("description").map_err(sql_error)?,
        "type": row.try_get::<String, _>("type").map_err(sql_error)?,
    }))
}

/// `GET /api/v1/brackets`.
pub async fn brackets(
    State(state): State<AppState>,
    _client: ClientIp,
) -> Result<Response, ApiError> {
    let rows = sqlx::query("SELECT id, name, description, type FROM brackets ORDER BY id")
        .fetch_all(state.db.pool())
        .await
        .map_err(sql_error)?;
    let data = rows
        .iter()
        .map(bracket_json)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ok(data))
}

/// Body of the admin's bracket routes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bracket {
    pub name: Option<String>,
    pub description: Option<String>,
    /// `users` or `teams` (CTFd's bracket types).
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

fn bracket_kind(kind: Option<&str>) -> Result<Option<String>, ApiError> {
    match kind {
        None => Ok(None),
        Some(k @ ("users" | "teams")) => Ok(Some(k.to_owned())),
        Some(_) => Err(ApiError::bad_request(
            "A bracket's `type` is `users` or `teams`.",
        )),
    }
}

/// `POST /api/v1/brackets` (admin).
pub async fn create_bracket(
    State(state): State<AppState>,
    AdminCaller(_admin): AdminCaller,
    Json(body): Json<Bracket>,
) -> Result<Response, ApiError> {
    let name = records::check_name(body.name.as_deref().unwrap_or(""), "bracket")
        .map_err(unprocessable)?;
    let kind = bracket_kind(body.kind.as_deref())?.unwrap_or_else(|| "teams".to_owned());
    let mut conn = state.db.pool().acquire().await.map_err(sql_error)?;
    let result = sqlx::query("INSERT INTO brackets (name, description, type) VALUES (?, ?, ?)")
        .bind(name.clone())
        .bind(body.description.clone())
        .bind(kind.clone())
        .execute(&mut *conn)
        .await
        .map_err(sql_error)?;
    let id = records::inserted_id(&result, &mut conn)
        .await
        .map_err(db_error)?;
    Ok(ok(
        json!({"id": id, "name": name, "description": body.description, "type": kind}),
    ))
}

/// `PATCH /api/v1/brackets/{id}` (admin).
pub async fn patch_bracket(
    State(state): State<AppState>,
    AdminCaller(_admin): AdminCaller,
    Path(id): Path<i64>,
    Json(body): Json<Bracket>,
) -> Result<Response, ApiError> {
    let mut sets = Vec::new();
    if let Some(name) = &body.name {
        let name = records::check_name(name, "bracket").map_err(unprocessable)?;
        sets.push(("name", SetValue::Text(Some(name))));
    }
    if let Some(description) = &body.description {
        sets.push(("description", SetValue::Text(Some(description.clone()))));
    }
    if let Some(kind) = bracket_kind(body.kind.as_deref())? {
        sets.push(("type", SetValue::Text(Some(kind))));
    }
    let row = sqlx::query("SELECT id FROM brackets WHERE id = ?")
        .bind(id)
        .fetch_optional(state.db.pool())
        .await
        .map_err(sql_error)?;
    if row.is_none() {
        return Err(ApiError::not_found("No such bracket."));
    }
    records::update_row(&state.db, "brackets", id, &sets)
        .await
        .map_err(db_error)?;
    let row = sqlx::query("SELECT id, name, description, type FROM brackets WHERE id = ?")
        .bind(id)
        .fetch_one(state.db.pool())
        .await
        .map_err(sql_error)?;
    Ok(ok(bracket_json(&row)?))
}

/// `DELETE /api/v1/brackets/{id}` (admin): users and teams in it are left without one.
pub async fn delete_bracket(
    State(state): State<AppState>,
    AdminCaller(_admin): AdminCaller,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let deleted = sqlx::query("DELETE FROM brackets WHERE id = ?")
        .bind(id)
        .execute(state.db.pool())
        .await
        .map_err(sql_error)?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::not_found("No such bracket."));
    }
    for table in ["users", "teams"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET bracket_id = NULL WHERE bracket_id = ?"
        )))
        .bind(id)
        .execute(state.db.pool())
        .await
        .map_err(sql_error)?;
    }
    Ok(done())
}
