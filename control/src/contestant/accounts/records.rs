//! The account rows and the writes that must hold under concurrency: the team size cap is a
//! conditional increment of `teams.member_count` in the same transaction as the member's
//! `team_id`, so concurrent joins can never pass the cap; a user's team is set only when they
//! have none (`team_id IS NULL`), so concurrent creates or joins by one user leave them in one
//! team.

use fctf_core::db::{Database, DbError, DbResult};
use sqlx::Row;
use unicode_normalization::UnicodeNormalization as _;

use super::now_ms;

/// Longest user or team name, in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// The key names are unique by: NFKC, trimmed, lower case (so "Team", "team " and "ｔｅａｍ" are
/// one name).
pub fn name_key(name: &str) -> String {
    name.nfkc().collect::<String>().trim().to_lowercase()
}

/// A name as stored (trimmed), or why it is refused.
pub fn check_name(name: &str, what: &str) -> Result<String, String> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(format!("The {what} name must not be empty."));
    }
    if trimmed.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "The {what} name must be at most {MAX_NAME_CHARS} characters."
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(format!(
            "The {what} name must not contain control characters."
        ));
    }
    Ok(trimmed.to_owned())
}

/// An email as stored, or why it is refused (a light check: one `@`, something on each side).
pub fn check_email(email: &str) -> Result<String, String> {
    let email = email.trim();
    match email.split_once('@') {
        Some((user, host))
            if !user.is_empty()
                && host.contains('.')
                && !host.contains('@')
                && email.len() <= 255
                && !email.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Ok(email.to_owned())
        }
        _ => Err("The email address is not valid.".to_owned()),
    }
}

/// The id of the row `result` inserted on `conn`: the driver's (MariaDB), or SQLite's
/// `last_insert_rowid()` on the same connection (the Any driver does not carry SQLite's).
pub async fn inserted_id(
    result: &sqlx::any::AnyQueryResult,
    conn: &mut sqlx::AnyConnection,
) -> DbResult<i64> {
    if let Some(id) = result.last_insert_id() {
        return Ok(id);
    }
    Ok(sqlx::query_scalar("SELECT last_insert_rowid()")
        .fetch_one(conn)
        .await?)
}

/// A user to insert.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub name: String,
    pub email: Option<String>,
    pub password_hash: String,
    pub admin: bool,
    pub verified: bool,
    pub hidden: bool,
}

/// Inserts a user; [`DbError::Conflict`] when the name or email is taken.
pub async fn insert_user(db: &Database, user: &NewUser) -> DbResult<i64> {
    let mut conn = db.pool().acquire().await?;
    let result = sqlx::query(
        "INSERT INTO users (name, name_key, email, email_key, password, type, verified, hidden, \
         banned, session_uuid, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
    )
    .bind(user.name.clone())
    .bind(name_key(&user.name))
    .bind(user.email.clone())
    .bind(user.email.as_deref().map(str::to_lowercase))
    .bind(user.password_hash.clone())
    .bind(if user.admin { "admin" } else { "user" })
    .bind(i64::from(user.verified))
    .bind(i64::from(user.hidden))
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    inserted_id(&result, &mut conn).await
}

/// Registered users (the registration cap counts these).
/// Which rows of `users` or `teams` a listing shows: all to admins, others the visible ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Every row (admins).
    All,
    /// Rows neither hidden nor banned (players and anonymous callers).
    Visible,
}

/// One page of `table` (`users` or `teams`, columns `columns`) in id order, and the number of
/// rows the listing has in all.
pub async fn listed_page(
    db: &Database,
    table: &'static str,
    columns: &'static str,
    listing: Listing,
    limit: i64,
    offset: i64,
) -> DbResult<(i64, Vec<sqlx::any::AnyRow>)> {
    let filter = match listing {
        Listing::All => "",
        Listing::Visible => "WHERE hidden = 0 AND banned = 0",
    };
    let total: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) AS n FROM {table} {filter}"
    )))
    .fetch_one(db.pool())
    .await?
    .try_get("n")?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {columns} FROM {table} {filter} ORDER BY id LIMIT ? OFFSET ?"
    )))
    .bind(limit)
    .bind(offset)
    .fetch_all(db.pool())
    .await?;
    Ok((total, rows))
}

pub async fn count_users(db: &Database) -> DbResult<i64> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE type = 'user'")
        .fetch_one(db.pool())
        .await?;
    Ok(row.try_get("n")?)
}

/// A fresh invite code.
pub fn invite_code() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 12]>())
}

/// Why a team write was refused.
#[derive(Debug, thiserror::Error)]
pub enum TeamError {
    #[error("the user already has a team")]
    AlreadyInTeam,
    #[error("the team is full")]
    Full,
    #[error("no such team")]
    NoTeam,
    #[error("the user is not in that team")]
    NotMember,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for TeamError {
    fn from(error: sqlx::Error) -> Self {
        Self::Db(DbError::from(error))
    }
}

/// Inserts a team without members (admin); [`DbError::Conflict`] when the name is taken.
pub async fn insert_team(db: &Database, name: &str, bracket_id: Option<i64>) -> DbResult<i64> {
    let mut conn = db.pool().acquire().await?;
    let result = sqlx::query(
        "INSERT INTO teams (name, name_key, invite_code, member_count, bracket_id, created_ms) \
         VALUES (?, ?, ?, 0, ?, ?)",
    )
    .bind(name.to_owned())
    .bind(name_key(name))
    .bind(invite_code())
    .bind(bracket_id)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    inserted_id(&result, &mut conn).await
}

/// Creates a team with `user_id` as its captain and only member, if the user has no team.
pub async fn create_team_with_captain(
    db: &Database,
    user_id: i64,
    name: &str,
    bracket_id: Option<i64>,
) -> Result<i64, TeamError> {
    let mut tx = db.pool().begin().await?;
    let result = sqlx::query(
        "INSERT INTO teams (name, name_key, captain_id, invite_code, member_count, bracket_id, \
         created_ms) VALUES (?, ?, ?, ?, 1, ?, ?)",
    )
    .bind(name.to_owned())
    .bind(name_key(name))
    .bind(user_id)
    .bind(invite_code())
    .bind(bracket_id)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    let team_id = inserted_id(&result, &mut tx).await?;
    let moved = sqlx::query("UPDATE users SET team_id = ? WHERE id = ? AND team_id IS NULL")
        .bind(team_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    if moved.rows_affected() != 1 {
        tx.rollback().await?;
        return Err(TeamError::AlreadyInTeam);
    }
    tx.commit().await?;
    Ok(team_id)
}

/// Adds `user_id` to `team_id` if the user has no team and the team has fewer than `cap`
/// members. The first member of a team without a captain becomes its captain.
pub async fn join_team(
    db: &Database,
    user_id: i64,
    team_id: i64,
    cap: u32,
) -> Result<(), TeamError> {
    let mut tx = db.pool().begin().await?;
    let counted = sqlx::query(
        "UPDATE teams SET member_count = member_count + 1 WHERE id = ? AND member_count < ?",
    )
    .bind(team_id)
    .bind(i64::from(cap))
    .execute(&mut *tx)
    .await?;
    if counted.rows_affected() != 1 {
        let exists = sqlx::query("SELECT id FROM teams WHERE id = ?")
            .bind(team_id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.rollback().await?;
        return Err(if exists.is_some() {
            TeamError::Full
        } else {
            TeamError::NoTeam
        });
    }
    let moved = sqlx::query("UPDATE users SET team_id = ? WHERE id = ? AND team_id IS NULL")
        .bind(team_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    if moved.rows_affected() != 1 {
        tx.rollback().await?;
        return Err(TeamError::AlreadyInTeam);
    }
    sqlx::query("UPDATE teams SET captain_id = ? WHERE id = ? AND captain_id IS NULL")
        .bind(user_id)
        .bind(team_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Removes `user_id` from `team_id`. A captain who leaves leaves the team without a captain
/// (callers refuse that while other members remain).
pub async fn leave_team(db: &Database, user_id: i64, team_id: i64) -> Result<(), TeamError> {
    let mut tx = db.pool().begin().await?;
    let moved = sqlx::query("UPDATE users SET team_id = NULL WHERE id = ? AND team_id = ?")
        .bind(user_id)
        .bind(team_id)
        .execute(&mut *tx)
        .await?;
    if moved.rows_affected() != 1 {
        tx.rollback().await?;
        return Err(TeamError::NotMember);
    }
    sqlx::query(
        "UPDATE teams SET member_count = member_count - 1, \
         captain_id = CASE WHEN captain_id = ? THEN NULL ELSE captain_id END WHERE id = ?",
    )
    .bind(user_id)
    .bind(team_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The team id named by an invite code.
pub async fn team_by_invite(db: &Database, code: &str) -> DbResult<Option<i64>> {
    let row = sqlx::query("SELECT id FROM teams WHERE invite_code = ?")
        .bind(code.to_owned())
        .fetch_optional(db.pool())
        .await?;
    row.map(|r| r.try_get("id"))
        .transpose()
        .map_err(DbError::from)
}

/// The team id named `name` (by its normalised key).
pub async fn team_by_name(db: &Database, name: &str) -> DbResult<Option<i64>> {
    let row = sqlx::query("SELECT id FROM teams WHERE name_key = ?")
        .bind(name_key(name))
        .fetch_optional(db.pool())
        .await?;
    row.map(|r| r.try_get("id"))
        .transpose()
        .map_err(DbError::from)
}

/// Members of a team (ids).
pub async fn member_ids(db: &Database, team_id: i64) -> DbResult<Vec<i64>> {
    let rows = sqlx::query("SELECT id FROM users WHERE team_id = ? ORDER BY id")
        .bind(team_id)
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| r.try_get("id").map_err(DbError::from))
        .collect()
}

/// Gives the user a new session uuid: every session issued before is invalid from now on.
pub async fn rotate_session(db: &Database, user_id: i64) -> DbResult<String> {
    let sid = uuid::Uuid::new_v4().to_string();
    sqlx::query("UPDATE users SET session_uuid = ? WHERE id = ?")
        .bind(sid.clone())
        .bind(user_id)
        .execute(db.pool())
        .await?;
    Ok(sid)
}

/// One value of a dynamic `UPDATE` (only the column names are built into the SQL text, and
/// those are fixed names from the code).
#[derive(Clone, Debug)]
pub enum SetValue {
    Text(Option<String>),
    Int(Option<i64>),
}

/// `UPDATE table SET col = ?, ... WHERE id = ?`; returns the rows changed.
pub async fn update_row(
    db: &Database,
    table: &'static str,
    id: i64,
    sets: &[(&'static str, SetValue)],
) -> DbResult<u64> {
    if sets.is_empty() {
        return Ok(0);
    }
    let columns: Vec<String> = sets.iter().map(|(c, _)| format!("{c} = ?")).collect();
    let sql = format!("UPDATE {table} SET {} WHERE id = ?", columns.join(", "));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (_, value) in sets {
        query = match value.clone() {
            SetValue::Text(v) => query.bind(v),
            SetValue::Int(v) => query.bind(v),
        };
    }
    Ok(query.bind(id).execute(db.pool()).await?.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_collide_after_case_width_and_space_folding() {
        assert_eq!(name_key(" Team "), name_key("team"));
        assert_eq!(name_key("ｔｅａｍ"), name_key("TEAM"));
        assert_ne!(name_key("team1"), name_key("team2"));
    }

    #[test]
    fn names_and_emails_are_checked() {
        assert_eq!(check_name("  alice ", "user").unwrap(), "alice");
        assert!(check_name("   ", "user").is_err());
        assert!(check_name("a\u{0}b", "user").is_err());
        assert!(check_name(&"x".repeat(129), "user").is_err());
        assert!(check_email("a@b.io").is_ok());
        assert!(check_email("a@b").is_err());
        assert!(check_email("a b@c.io").is_err());
        assert!(check_email("@c.io").is_err());
    }
}
