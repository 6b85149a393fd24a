//! Ticket rules: a ticket that repeats one of the user's earlier tickets is refused, so a
//! player cannot flood the organisers with the same question.

use std::collections::HashSet;

/// Two tickets whose word sets overlap at least this much (Jaccard) are near-duplicates.
pub const DUPLICATE_SIMILARITY: f64 = 0.8;

/// The words of a ticket: lowercase alphanumeric runs.
fn words(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Jaccard similarity of the word sets of `a` and `b` (1.0 for two empty texts).
pub fn similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (words(a), words(b));
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let common = a.intersection(&b).count() as f64;
    let all = a.union(&b).count() as f64;
    common / all
}

/// True when the ticket `title` + `content` nearly repeats one of `earlier` (title, content).
pub fn is_near_duplicate<'a>(
    title: &str,
    content: &str,
    earlier: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> bool {
    let text = format!("{title} {content}");
    earlier
        .into_iter()
        .any(|(t, c)| similarity(&text, &format!("{t} {c}")) >= DUPLICATE_SIMILARITY)
}

// ---- routes: `/api/v1/tickets` (open, list, read, close) ----

use crate::contestant::accounts::Path;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use super::{Body, db_error, iso8601, now_ms, ok, parse_id};
use crate::contestant::AppState;
use crate::contestant::accounts::Caller;
use crate::error::{ApiError, ApiResult};

/// How many of the user's latest tickets a new one is compared with.
const COMPARED: i64 = 50;

fn ticket_json(r: &sqlx::any::AnyRow) -> Result<Value, sqlx::Error> {
    Ok(json!({
        "id": r.try_get::<i64, _>("id")?,
        "user_id": r.try_get::<i64, _>("user_id")?,
        "team_id": r.try_get::<Option<i64>, _>("team_id")?,
        "challenge_id": r.try_get::<Option<i64>, _>("challenge_id")?,
        "title": r.try_get::<String, _>("title")?,
        "content": r.try_get::<String, _>("content")?,
        "state": r.try_get::<String, _>("state")?,
        "response": r.try_get::<Option<String>, _>("response")?,
        "date": iso8601(r.try_get::<i64, _>("created_ms")?),
    }))
}

const TICKET_COLUMNS: &str =
    "id, user_id, team_id, challenge_id, title, content, state, response, created_ms";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTicket {
    title: String,
    content: String,
    #[serde(default)]
    challenge_id: Option<i64>,
}

/// `POST /api/v1/tickets`.
async fn open(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<NewTicket>,
) -> ApiResult<Response> {
    let title = body.title.trim();
    let content = body.content.trim();
    if title.is_empty() || title.chars().count() > 255 {
        return Err(ApiError::bad_request("The title must be 1-255 characters."));
    }
    if content.is_empty() || content.len() > 8192 {
        return Err(ApiError::bad_request("The text must be 1-8192 bytes."));
    }
    let earlier = sqlx::query(
        "SELECT title, content FROM tickets WHERE user_id = ? ORDER BY id DESC LIMIT ?",
    )
    .bind(caller.user_id)
    .bind(COMPARED)
    .fetch_all(state.db.pool())
    .await
    .map_err(|e| db_error(e.into()))?
    .iter()
    .map(|r| {
        Ok((
            r.try_get::<String, _>("title")?,
            r.try_get::<String, _>("content")?,
        ))
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()
    .map_err(|e| db_error(e.into()))?;
    if is_near_duplicate(
        title,
        content,
        earlier.iter().map(|(t, c)| (t.as_str(), c.as_str())),
    ) {
        return Err(ApiError::conflict(
            "You already opened a ticket that says nearly the same; please wait for its answer.",
        ));
    }
    let done = sqlx::query(
        "INSERT INTO tickets (user_id, team_id, challenge_id, title, content, state, created_ms) \
         VALUES (?, ?, ?, ?, ?, 'open', ?) RETURNING id",
    )
    .bind(caller.user_id)
    .bind(caller.team_id)
    .bind(body.challenge_id)
    .bind(title.to_owned())
    .bind(content.to_owned())
    .bind(now_ms())
    .fetch_one(state.db.pool())
    .await
    .map_err(|e| db_error(e.into()))?;
    let id = super::records::returned_id(&done).map_err(db_error)?;
    read_one(&state, &caller, id).await
}

async fn read_one(state: &AppState, caller: &Caller, id: i64) -> ApiResult<Response> {
    let sql = format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE id = ?");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(state.db.pool())
        .await
        .map_err(|e| db_error(e.into()))?
        .ok_or_else(|| ApiError::not_found("No such ticket."))?;
    let owner: i64 = row.try_get("user_id").map_err(|e| db_error(e.into()))?;
    if owner != caller.user_id && !caller.is_admin {
        return Err(ApiError::not_found("No such ticket."));
    }
    Ok(ok(ticket_json(&row).map_err(|e| db_error(e.into()))?))
}

/// `GET /api/v1/tickets`: the caller's tickets (admins: every ticket), newest first.
async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let sql = format!(
        "SELECT {TICKET_COLUMNS} FROM tickets WHERE ? = 1 OR user_id = ? ORDER BY id DESC LIMIT 500"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(i64::from(caller.is_admin))
        .bind(caller.user_id)
        .fetch_all(state.db.pool())
        .await
        .map_err(|e| db_error(e.into()))?;
    let data = rows
        .iter()
        .map(ticket_json)
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(|e| db_error(e.into()))?;
    Ok(ok(data))
}

/// `GET /api/v1/tickets/{id}`.
async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    read_one(&state, &caller, parse_id(&id)?).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    #[serde(default)]
    response: Option<String>,
}

/// `POST /api/v1/tickets/{id}/close`: by its author or an admin (who may answer).
async fn close(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    read_one(&state, &caller, id).await?;
    let body: CloseBody = if body.iter().all(u8::is_ascii_whitespace) {
        CloseBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("The request body is not valid: {e}")))?
    };
    let response = body.response.filter(|_| caller.is_admin);
    sqlx::query(
        "UPDATE tickets SET state = 'closed', closed_ms = ?, response = COALESCE(?, response) \
         WHERE id = ?",
    )
    .bind(now_ms())
    .bind(response)
    .bind(id)
    .execute(state.db.pool())
    .await
    .map_err(|e| db_error(e.into()))?;
    read_one(&state, &caller, id).await
}

/// The ticket routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tickets", get(list).post(open))
        .route("/api/v1/tickets/{id}", get(read))
        .route("/api/v1/tickets/{id}/close", post(close))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_refused_and_new_questions_pass() {
        let earlier = [("Web 1 is down", "The instance of web 1 answers 502.")];
        assert!(is_near_duplicate(
            "web 1 is DOWN",
            "the instance of Web 1 answers 502!",
            earlier
        ));
        assert!(is_near_duplicate(
            "Web 1 is down",
            "The instance of web 1 answers 502 again.",
            earlier
        ));
        assert!(!is_near_duplicate(
            "Crypto 3 hint",
            "Is the modulus supposed to be prime?",
            earlier
        ));
        assert!(!is_near_duplicate("anything", "at all", []));
    }
}
