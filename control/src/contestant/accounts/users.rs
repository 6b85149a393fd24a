//! `/api/v1/users` in CTFd's shapes: the list (paginated; hidden and banned users only for
//! admins), one user, `me` (read and edit), and the admin's create, edit and delete.

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::auth::{set_password, verify};
use super::json::{Page, PageQuery, done, ok, ok_page};
use super::passwords::check_policy;
use super::records::{self, Listing, NewUser, SetValue, name_key};
use super::{AdminCaller, Caller, Json, Path, Query, db_error, sql_error};
use crate::contestant::AppState;
use crate::error::{ApiError, ErrorKind};

const COLUMNS: &str = "id, name, email, type, verified, hidden, banned, team_id, bracket_id, \
                       website, affiliation, country, created_ms";

/// How much of a user row the caller may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum View {
    Public,
    Own,
    Admin,
}

fn user_json(row: &AnyRow, view: View) -> Result<Value, ApiError> {
    let text = |c: &str| row.try_get::<Option<String>, _>(c).map_err(sql_error);
    let int = |c: &str| row.try_get::<Option<i64>, _>(c).map_err(sql_error);
    let flag = |c: &str| row.try_get::<i64, _>(c).map(|v| v != 0).map_err(sql_error);
    let mut user = json!({
        "id": row.try_get::<i64, _>("id").map_err(sql_error)?,
        "name": row.try_get::<String, _>("name").map_err(sql_error)?,
        "team_id": int("team_id")?,
        "bracket_id": int("bracket_id")?,
        "website": text("website")?,
        "affiliation": text("affiliation")?,
        "country": text("country")?,
        "created": int("created_ms")?,
    });
    if view != View::Public {
        user["email"] = json!(text("email")?);
    }
    if view == View::Admin {
        user["type"] = json!(row.try_get::<String, _>("type").map_err(sql_error)?);
        user["verified"] = json!(flag("verified")?);
        user["hidden"] = json!(flag("hidden")?);
        user["banned"] = json!(flag("banned")?);
    }
    Ok(user)
}

async fn fetch(state: &AppState, id: i64) -> Result<Option<AnyRow>, ApiError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users WHERE id = ?"
    )))
    .bind(id)
    .fetch_optional(state.db.pool())
    .await
    .map_err(sql_error)
}

/// `GET /api/v1/users`.
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
        "users",
        COLUMNS,
        listing,
        page.limit(),
        page.offset(),
    )
    .await
    .map_err(db_error)?;
    let view = if admin { View::Admin } else { View::Public };
    let data = rows
        .iter()
        .map(|r| user_json(r, view))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ok_page(data, page, total))
}

/// `GET /api/v1/users/{id}`: hidden and banned users are 404 to players.
pub async fn get_one(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let missing = || ApiError::not_found("No such user.");
    let row = fetch(&state, id).await?.ok_or_else(missing)?;
    let view = match &caller {
        Some(c) if c.is_admin => View::Admin,
        Some(c) if c.user_id == id => View::Own,
        _ => View::Public,
    };
    let hidden = row.try_get::<i64, _>("hidden").map_err(sql_error)? != 0
        || row.try_get::<i64, _>("banned").map_err(sql_error)? != 0;
    if hidden && view == View::Public {
        return Err(missing());
    }
    Ok(ok(user_json(&row, view)?))
}

/// `GET /api/v1/users/me`.
pub async fn me(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let row = fetch(&state, caller.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("This account no longer exists."))?;
    let view = if caller.is_admin {
        View::Admin
    } else {
        View::Own
    };
    Ok(ok(user_json(&row, view)?))
}

/// Body of `PATCH /api/v1/users/me` (CTFd's fields; a new `password` needs `confirm`, the
/// current one).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchMe {
    pub name: Option<String>,
    pub email: Option<String>,
    pub website: Option<String>,
    pub affiliation: Option<String>,
    pub country: Option<String>,
    pub password: Option<String>,
    pub confirm: Option<String>,
}

fn unprocessable(message: String) -> ApiError {
    ApiError::new(ErrorKind::Unprocessable, message)
}

/// The profile fields common to `me` and the admin edit.
fn profile_sets(
    name: Option<&str>,
    email: Option<&str>,
    website: Option<&str>,
    affiliation: Option<&str>,
    country: Option<&str>,
) -> Result<Vec<(&'static str, SetValue)>, ApiError> {
    let mut sets = Vec::new();
    if let Some(name) = name {
        let name = records::check_name(name, "user").map_err(unprocessable)?;
        sets.push(("name_key", SetValue::Text(Some(name_key(&name)))));
        sets.push(("name", SetValue::Text(Some(name))));
    }
    if let Some(email) = email {
        if email.trim().is_empty() {
            sets.push(("email", SetValue::Text(None)));
            sets.push(("email_key", SetValue::Text(None)));
        } else {
            let email = records::check_email(email).map_err(unprocessable)?;
            sets.push(("email_key", SetValue::Text(Some(email.to_lowercase()))));
            sets.push(("email", SetValue::Text(Some(email))));
        }
    }
    for (column, value, max) in [
        ("website", website, 255),
        ("affiliation", affiliation, 255),
        ("country", country, 32),
    ] {
        if let Some(value) = value {
            if value.chars().count() > max || value.chars().any(char::is_control) {
                return Err(unprocessable(format!("The {column} is not valid.")));
            }
            let value = Some(value.trim().to_owned()).filter(|v| !v.is_empty());
            sets.push((column, SetValue::Text(value)));
        }
    }
    Ok(sets)
}

fn taken(error: fctf_core::db::DbError) -> ApiError {
    match error {
        fctf_core::db::DbError::Conflict(_) => {
            ApiError::conflict("That name or email address is already taken.")
        }
        other => db_error(other),
    }
}

/// `PATCH /api/v1/users/me`.
pub async fn patch_me(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<PatchMe>,
) -> Result<Response, ApiError> {
    let sets = profile_sets(
        body.name.as_deref(),
        body.email.as_deref(),
        body.website.as_deref(),
        body.affiliation.as_deref(),
        body.country.as_deref(),
    )?;
    if let Some(password) = body.password {
        let Some(confirm) = body.confirm else {
            return Err(unprocessable(
                "Send your current password as `confirm` to change it.".to_owned(),
            ));
        };
        let row = sqlx::query("SELECT password FROM users WHERE id = ?")
            .bind(caller.user_id)
            .fetch_one(state.db.pool())
            .await
            .map_err(sql_error)?;
        let stored: String = row.try_get("password").map_err(sql_error)?;
        if !verify(&state, confirm, Some(stored)).await? {
            return Err(ApiError::forbidden("The current password is wrong."));
        }
        check_policy(&password, state.accounts.config.password_min_len).map_err(unprocessable)?;
        set_password(&state, caller.user_id, password).await?;
    }
    records::update_row(&state.db, "users", caller.user_id, &sets)
        .await
        .map_err(taken)?;
    state.accounts.forget_user(caller.user_id);
    let row = fetch(&state, caller.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("No such user."))?;
    Ok(ok(user_json(&row, View::Own)?))
}

/// Body of the admin's `POST /api/v1/users` and `PATCH /api/v1/users/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminUser {
    pub name: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
    /// `user` or `admin`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub verified: Option<bool>,
    pub hidden: Option<bool>,
    pub banned: Option<bool>,
    pub bracket_id: Option<i64>,
    pub website: Option<String>,
    pub affiliation: Option<String>,
    pub country: Option<String>,
}

fn kind_is_admin(kind: Option<&str>) -> Result<Option<bool>, ApiError> {
    match kind {
        None => Ok(None),
        Some("user") => Ok(Some(false)),
        Some("admin") => Ok(Some(true)),
        Some(_) => Err(ApiError::bad_request("`type` is `user` or `admin`.")),
    }
}

/// `POST /api/v1/users` (admin).
pub async fn create(
    State(state): State<AppState>,
    AdminCaller(_admin): AdminCaller,
    Json(body): Json<AdminUser>,
) -> Result<Response, ApiError> {
    let name =
        records::check_name(body.name.as_deref().unwrap_or(""), "user").map_err(unprocessable)?;
    let email = body
        .email
        .as_deref()
        .filter(|e| !e.trim().is_empty())
        .map(records::check_email)
        .transpose()
        .map_err(unprocessable)?;
    let Some(password) = body.password.clone() else {
        return Err(ApiError::bad_request("A password is required."));
    };
    check_policy(&password, state.accounts.config.password_min_len).map_err(unprocessable)?;
    let admin = kind_is_admin(body.kind.as_deref())?.unwrap_or(false);
    let password_hash = super::auth::hash(&state, password).await?;
    let id = records::insert_user(
        &state.db,
        &NewUser {
            name,
            email,
            password_hash,
            admin,
            verified: body.verified.unwrap_or(true),
            hidden: body.hidden.unwrap_or(false),
        },
    )
    .await
    .map_err(taken)?;
    let rest = AdminUser {
        banned: body.banned,
        bracket_id: body.bracket_id,
        website: body.website,
        affiliation: body.affiliation,
        country: body.country,
        ..AdminUser::default()
    };
    apply_admin_sets(&state, id, &rest).await?;
    let row = fetch(&state, id)
        .await?
        .ok_or_else(|| ApiError::not_found("No such user."))?;
    Ok(ok(user_json(&row, View::Admin)?))
}

async fn apply_admin_sets(state: &AppState, id: i64, body: &AdminUser) -> Result<(), ApiError> {
    let mut sets = profile_sets(
        body.name.as_deref(),
        body.email.as_deref(),
        body.website.as_deref(),
        body.affiliation.as_deref(),
        body.country.as_deref(),
    )?;
    if let Some(admin) = kind_is_admin(body.kind.as_deref())? {
        let kind = if admin { "admin" } else { "user" };
        sets.push(("type", SetValue::Text(Some(kind.to_owned()))));
    }
    for (column, value) in [
        ("verified", body.verified),
        ("hidden", body.hidden),
        ("banned", body.banned),
    ] {
        if let Some(value) = value {
            sets.push((column, SetValue::Int(Some(i64::from(value)))));
        }
    }
    if let Some(bracket) = body.bracket_id {
        sets.push(("bracket_id", SetValue::Int(Some(bracket))));
    }
    records::update_row(&state.db, "users", id, &sets)
        .await
        .map_err(taken)?;
    Ok(())
}

/// `PATCH /api/v1/users/{id}` (admin). A ban takes effect in this process at once.
pub async fn admin_patch(
    State(state): State<AppState>,
    AdminCaller(_admin): AdminCaller,
    Path(id): Path<i64>,
    Json(body): Json<AdminUser>,
) -> Result<Response, ApiError> {
    if fetch(&state, id).await?.is_none() {
        return Err(ApiError::not_found("No such user."));
    }
    if let Some(password) = body.password.clone() {
        check_policy(&password, state.accounts.config.password_min_len).map_err(unprocessable)?;
        set_password(&state, id, password).await?;
    }
    apply_admin_sets(&state, id, &body).await?;
    state.accounts.forget_user(id);
    let row = fetch(&state, id)
        .await?
        .ok_or_else(|| ApiError::not_found("No such user."))?;
    Ok(ok(user_json(&row, View::Admin)?))
}

/// `DELETE /api/v1/users/{id}` (admin): the user leaves their team, their tokens are revoked.
pub async fn admin_delete(
    State(state): State<AppState>,
    AdminCaller(_admin): AdminCaller,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let row = fetch(&state, id)
        .await?
        .ok_or_else(|| ApiError::not_found("No such user."))?;
    if let Some(team) = row
        .try_get::<Option<i64>, _>("team_id")
        .map_err(sql_error)?
    {
        match records::leave_team(&state.db, id, team).await {
            Ok(()) | Err(records::TeamError::NotMember) => {}
            Err(records::TeamError::Db(e)) => return Err(db_error(e)),
            Err(e) => return Err(ApiError::internal(&e)),
        }
    }
    state.accounts.tokens.invalidate_all();
    sqlx::query("DELETE FROM tokens WHERE user_id = ?")
        .bind(id)
        .execute(state.db.pool())
        .await
        .map_err(sql_error)?;
    sqlx::query("DELETE FROM users WHERE id = ?")
        .bind(id)
        .execute(state.db.pool())
        .await
        .map_err(sql_error)?;
    state.accounts.forget_user(id);
    Ok(done())
}
