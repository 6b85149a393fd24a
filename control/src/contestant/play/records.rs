//! The play tables, read and written: thin adapters, every query written once for both
//! dialects (see `fctf_core::db`). Decisions live in the pure modules; this file only moves rows.

use std::collections::{HashMap, HashSet};

use fctf_core::db::{Database, DbError, DbResult};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::flags::{FlagKind, FlagRule};
use super::prerequisites::Requirements;
use super::scoreboard::{AwardRow, BoardInput, ChallengeRule, MemberRow, SolveRow, TeamRow};
use super::scoring::{DecayFunction, Valuation};

/// A challenge, every column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub id: i64,
    pub name: String,
    pub category: String,
    pub description: String,
    pub connection_info: Option<String>,
    /// The live value (static value, or the dynamic value after the last solve).
    pub value: i64,
    /// CTFd's `type`: `standard` or `dynamic`.
    #[serde(rename = "type")]
    pub kind: String,
    pub initial: Option<i64>,
    pub minimum: Option<i64>,
    pub decay: Option<i64>,
    pub function: String,
    pub first_blood_bonus: i64,
    /// `visible` or `hidden`.
    pub state: String,
    /// 0: unlimited.
    pub max_attempts: i64,
    /// Seconds a team waits between two submissions to this challenge (0: none).
    pub cooldown_secs: i64,
    pub requirements: Option<Requirements>,
    pub position: i64,
    pub image: Option<String>,
    pub command: Option<Vec<String>>,
    pub port: Option<i64>,
    pub cpu_millicores: Option<i64>,
    pub memory_mib: Option<i64>,
    pub lifetime_secs: Option<i64>,
    /// `http` or `tcp`.
    pub protocol: Option<String>,
    pub harden: bool,
    pub gvisor: bool,
    /// The team's dynamic flag is accepted and given to its instance as `FLAG`.
    pub team_flag: bool,
}

impl Challenge {
    /// How the challenge is worth points.
    pub fn valuation(&self) -> Valuation {
        if self.kind == "dynamic" {
            let initial = self.initial.unwrap_or(self.value);
            Valuation::Dynamic {
                initial,
                minimum: self.minimum.unwrap_or(0).min(initial),
                decay: self.decay.unwrap_or(0),
                function: DecayFunction::parse(&self.function),
            }
        } else {
            Valuation::Static(self.value)
        }
    }

    /// True when players start their own instance of it.
    pub fn has_instance(&self) -> bool {
        self.image.is_some() || self.command.is_some()
    }

    /// True when players may see it at all.
    pub fn is_visible(&self) -> bool {
        self.state == "visible"
    }

    /// The prerequisites (none when unset).
    pub fn requirements(&self) -> Requirements {
        self.requirements.clone().unwrap_or_default()
    }
}

const CHALLENGE_COLUMNS: &str = "id, name, category, description, connection_info, value, type, \
    initial, minimum, decay, decay_function, first_blood_bonus, state, max_attempts, \
    cooldown_secs, requirements, position, image, command, port, cpu_millicores, memory_mib, \
    lifetime_secs, protocol, harden, gvisor, team_flag";

fn decode_challenge(row: &AnyRow) -> DbResult<Challenge> {
    let command: Option<String> = row.try_get("command")?;
    let command = match command {
        Some(text) => Some(
            serde_json::from_str::<Vec<String>>(&text)
                .map_err(|e| DbError::Corrupt(format!("challenges.command: {e}")))?,
        ),
        None => None,
    };
    let requirements: Option<String> = row.try_get("requirements")?;
    Ok(Challenge {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        category: row.try_get("category")?,
        description: row.try_get("description")?,
        connection_info: row.try_get("connection_info")?,
        value: row.try_get("value")?,
        kind: row.try_get("type")?,
        initial: row.try_get("initial")?,
        minimum: row.try_get("minimum")?,
        decay: row.try_get("decay")?,
        function: row.try_get("decay_function")?,
        first_blood_bonus: row.try_get("first_blood_bonus")?,
        state: row.try_get("state")?,
        max_attempts: row.try_get("max_attempts")?,
        cooldown_secs: row.try_get("cooldown_secs")?,
        requirements: requirements
            .as_deref()
            .map(|t| Requirements::parse(Some(t)))
            .filter(|r| !r.prerequisites.is_empty()),
        position: row.try_get("position")?,
        image: row.try_get("image")?,
        command,
        port: row.try_get("port")?,
        cpu_millicores: row.try_get("cpu_millicores")?,
        memory_mib: row.try_get("memory_mib")?,
        lifetime_secs: row.try_get("lifetime_secs")?,
        protocol: row.try_get("protocol")?,
        harden: row.try_get::<i64, _>("harden")? != 0,
        gvisor: row.try_get::<i64, _>("gvisor")? != 0,
        team_flag: row.try_get::<i64, _>("team_flag")? != 0,
    })
}

/// The id an `INSERT ... RETURNING id` wrote. (sqlx's `Any` driver reports no last insert id
/// for SQLite; MariaDB >= 10.5 and SQLite >= 3.35 both answer `RETURNING`.)
pub fn returned_id(row: &AnyRow) -> DbResult<i64> {
    Ok(row.try_get("id")?)
}

/// Every challenge, by position then id.
pub async fn challenges(db: &Database) -> DbResult<Vec<Challenge>> {
    let sql = format!("SELECT {CHALLENGE_COLUMNS} FROM challenges ORDER BY position, id");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(decode_challenge).collect()
}

/// One challenge.
pub async fn challenge(db: &Database, id: i64) -> DbResult<Option<Challenge>> {
    let sql = format!("SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE id = ?");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(decode_challenge).transpose()
}

/// Writes every column of `c` (insert when `c.id` is 0); returns the id.
pub async fn save_challenge(db: &Database, c: &Challenge, now_ms: i64) -> DbResult<i64> {
    let command = c
        .command
        .as_ref()
        .map(|v| serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned()));
    let requirements = c.requirements.as_ref().and_then(Requirements::to_stored);
    let sql = if c.id == 0 {
        "INSERT INTO challenges (name, category, description, connection_info, value, type, \
         initial, minimum, decay, decay_function, first_blood_bonus, state, max_attempts, \
         cooldown_secs, requirements, position, image, command, port, cpu_millicores, \
         memory_mib, lifetime_secs, protocol, harden, gvisor, team_flag, created_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         RETURNING id"
    } else {
        "UPDATE challenges SET name = ?, category = ?, description = ?, connection_info = ?, \
         value = ?, type = ?, initial = ?, minimum = ?, decay = ?, decay_function = ?, \
         first_blood_bonus = ?, state = ?, max_attempts = ?, cooldown_secs = ?, \
         requirements = ?, position = ?, image = ?, command = ?, port = ?, cpu_millicores = ?, \
         memory_mib = ?, lifetime_secs = ?, protocol = ?, harden = ?, gvisor = ?, \
         team_flag = ? WHERE id = ?"
    };
    let query = sqlx::query(sql)
        .bind(c.name.clone())
        .bind(c.category.clone())
        .bind(c.description.clone())
        .bind(c.connection_info.clone())
        .bind(c.value)
        .bind(c.kind.clone())
        .bind(c.initial)
        .bind(c.minimum)
        .bind(c.decay)
        .bind(c.function.clone())
        .bind(c.first_blood_bonus)
        .bind(c.state.clone())
        .bind(c.max_attempts)
        .bind(c.cooldown_secs)
        .bind(requirements)
        .bind(c.position)
        .bind(c.image.clone())
        .bind(command)
        .bind(c.port)
        .bind(c.cpu_millicores)
        .bind(c.memory_mib)
        .bind(c.lifetime_secs)
        .bind(c.protocol.clone())
        .bind(i64::from(c.harden))
        .bind(i64::from(c.gvisor))
        .bind(i64::from(c.team_flag));
    if c.id == 0 {
        returned_id(&query.bind(now_ms).fetch_one(db.pool()).await?)
    } else {
        query.bind(c.id).execute(db.pool()).await?;
        Ok(c.id)
    }
}

/// Deletes a challenge and what hangs off it (solves and submissions included).
pub async fn delete_challenge(db: &Database, id: i64) -> DbResult<bool> {
    let mut tx = db.pool().begin().await?;
    for table in [
        "flags",
        "hints",
        "files",
        "tags",
        "topics",
        "submissions",
        "solves",
        "team_flags",
    ] {
        let sql = format!("DELETE FROM {table} WHERE challenge_id = ?");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    let done = sqlx::query("DELETE FROM challenges WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}

/// A stored flag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlagRow {
    pub id: i64,
    pub challenge_id: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub content: String,
    pub data: String,
}

impl FlagRow {
    /// The matching rule (an unknown type matches nothing).
    pub fn rule(&self) -> Option<FlagRule> {
        Some(FlagRule {
            kind: FlagKind::parse(&self.kind)?,
            content: self.content.clone(),
            case_insensitive: self.data == "case_insensitive",
        })
    }
}

fn decode_flag(row: &AnyRow) -> DbResult<FlagRow> {
    Ok(FlagRow {
        id: row.try_get("id")?,
        challenge_id: row.try_get("challenge_id")?,
        kind: row.try_get("type")?,
        content: row.try_get("content")?,
        data: row.try_get("data")?,
    })
}

/// The flags of a challenge (every flag when `challenge` is `None`).
pub async fn flags(db: &Database, challenge: Option<i64>) -> DbResult<Vec<FlagRow>> {
    let rows = match challenge {
        Some(id) => {
            sqlx::query(
                "SELECT id, challenge_id, type, content, data FROM flags \
                 WHERE challenge_id = ? ORDER BY id",
            )
            .bind(id)
            .fetch_all(db.pool())
            .await?
        }
        None => {
            sqlx::query("SELECT id, challenge_id, type, content, data FROM flags ORDER BY id")
                .fetch_all(db.pool())
                .await?
        }
    };
    rows.iter().map(decode_flag).collect()
}

/// One flag.
pub async fn flag(db: &Database, id: i64) -> DbResult<Option<FlagRow>> {
    let row = sqlx::query("SELECT id, challenge_id, type, content, data FROM flags WHERE id = ?")
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(decode_flag).transpose()
}

/// Inserts (id 0) or updates a flag; returns its id.
pub async fn save_flag(db: &Database, f: &FlagRow) -> DbResult<i64> {
    if f.id == 0 {
        let done = sqlx::query(
            "INSERT INTO flags (challenge_id, type, content, data) VALUES (?, ?, ?, ?) \
             RETURNING id",
        )
        .bind(f.challenge_id)
        .bind(f.kind.clone())
        .bind(f.content.clone())
        .bind(f.data.clone())
        .fetch_one(db.pool())
        .await?;
        returned_id(&done)
    } else {
        sqlx::query(
            "UPDATE flags SET challenge_id = ?, type = ?, content = ?, data = ? WHERE id = ?",
        )
        .bind(f.challenge_id)
        .bind(f.kind.clone())
        .bind(f.content.clone())
        .bind(f.data.clone())
        .bind(f.id)
        .execute(db.pool())
        .await?;
        Ok(f.id)
    }
}

/// Deletes one row of `table` by id (tables of this module only).
pub async fn delete_by_id(db: &Database, table: Table, id: i64) -> DbResult<bool> {
    let sql = format!("DELETE FROM {} WHERE id = ?", table.name());
    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The tables [`delete_by_id`] may touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Flags,
    Hints,
    Files,
    Awards,
    Notifications,
    Tickets,
    Tags,
    Topics,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Self::Flags => "flags",
            Self::Hints => "hints",
            Self::Files => "files",
            Self::Awards => "awards",
            Self::Notifications => "notifications",
            Self::Tickets => "tickets",
            Self::Tags => "tags",
            Self::Topics => "topics",
        }
    }
}

/// The challenges `team` solved.
pub async fn solved_by(db: &Database, team: i64) -> DbResult<HashSet<i64>> {
    let rows = sqlx::query("SELECT challenge_id FROM solves WHERE team_id = ?")
        .bind(team)
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| r.try_get::<i64, _>("challenge_id").map_err(DbError::from))
        .collect()
}

/// True when `team` solved `challenge`.
pub async fn has_solved(db: &Database, team: i64, challenge: i64) -> DbResult<bool> {
    let row = sqlx::query("SELECT id FROM solves WHERE team_id = ? AND challenge_id = ?")
        .bind(team)
        .bind(challenge)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.is_some())
}

/// Wrong submissions of `team` to `challenge` (what `max_attempts` counts).
pub async fn wrong_attempts(db: &Database, team: i64, challenge: i64) -> DbResult<i64> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM submissions \
         WHERE team_id = ? AND challenge_id = ? AND type = 'incorrect'",
    )
    .bind(team)
    .bind(challenge)
    .fetch_one(db.pool())
    .await?;
    Ok(row.try_get("n")?)
}

/// One submission to record.
#[derive(Clone, Debug)]
pub struct NewSubmission<'a> {
    pub challenge_id: i64,
    pub user_id: i64,
    pub team_id: i64,
    pub ip: &'a str,
    pub provided: &'a str,
    pub now_ms: i64,
}

/// A submission as a row to write, owned (it crosses the journal's channel), its text already
/// cut to the columns' sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmissionRow {
    pub challenge_id: i64,
    pub user_id: i64,
    pub team_id: i64,
    pub ip: String,
    pub provided: String,
    pub now_ms: i64,
}

impl NewSubmission<'_> {
    /// The row to write.
    pub fn to_row(&self) -> SubmissionRow {
        SubmissionRow {
            challenge_id: self.challenge_id,
            user_id: self.user_id,
            team_id: self.team_id,
            ip: self.ip.chars().take(64).collect(),
            provided: self.provided.chars().take(1024).collect(),
            now_ms: self.now_ms,
        }
    }
}

/// Records a wrong submission, its action-log line and, when `cheat_owner` names another team
/// whose dynamic flag was submitted, the flag-sharing event, in one transaction (one commit);
/// returns the submission's id.
pub async fn record_wrong(
    db: &Database,
    s: &NewSubmission<'_>,
    cheat_owner: Option<i64>,
) -> DbResult<i64> {
    let mut tx = db.pool().begin().await?;
    let id = returned_id(
        &insert_submission(s, "incorrect")
            .fetch_one(&mut *tx)
            .await?,
    )?;
    super::actions::insert(
        s.team_id,
        s.user_id,
        super::actions::Action::SubmitIncorrect,
        Some(s.challenge_id),
        None,
        s.now_ms,
    )
    .execute(&mut *tx)
    .await?;
    if let Some(owner) = cheat_owner {
        insert_cheat(s, id, owner).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(id)
}

/// Most rows of one multi-row `INSERT` of [`record_wrong_batch`]. Batches are cut into chunks of
/// powers of two up to this, so each connection prepares at most 7 statement shapes per table.
pub const MAX_INSERT_ROWS: usize = 64;

/// Why [`record_wrong_batch`] failed, and whether anything may have been written.
#[derive(Debug)]
pub struct BatchError {
    pub error: DbError,
    /// False: the transaction failed before its commit was sent, so nothing was written and the
    /// rows may be written again. True: the commit itself failed, and whether it took effect is
    /// unknown.
    pub at_commit: bool,
}

/// Power-of-two chunk sizes (largest first, at most [`MAX_INSERT_ROWS`]) that add up to `n`.
pub fn chunk_sizes(mut n: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    while n > 0 {
        let size = if n >= MAX_INSERT_ROWS {
            MAX_INSERT_ROWS
        } else {
            1 << (usize::BITS - 1 - n.leading_zeros())
        };
        sizes.push(size);
        n -= size;
    }
    sizes
}

/// `head` followed by `n` copies of `row`, comma-separated.
fn multi_row(head: &str, row: &str, n: usize) -> String {
    let mut sql = String::with_capacity(head.len() + n * (row.len() + 1));
    sql.push_str(head);
    for i in 0..n {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(row);
    }
    sql
}

/// Records wrong submissions and their action-log lines in one transaction (one commit), with
/// multi-row inserts: the journal's group commit.
pub async fn record_wrong_batch(db: &Database, rows: &[SubmissionRow]) -> Result<(), BatchError> {
    let before = |error: sqlx::Error| BatchError {
        error: error.into(),
        at_commit: false,
    };
    let mut tx = db.pool().begin().await.map_err(before)?;
    let mut at = 0;
    for size in chunk_sizes(rows.len()) {
        let chunk = &rows[at..at + size];
        at += size;
        let sql = multi_row(
            "INSERT INTO submissions (challenge_id, user_id, team_id, ip, provided, type, \
             created_ms) VALUES ",
            "(?, ?, ?, ?, ?, 'incorrect', ?)",
            size,
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            query = query
                .bind(r.challenge_id)
                .bind(r.user_id)
                .bind(r.team_id)
                .bind(r.ip.clone())
                .bind(r.provided.clone())
                .bind(r.now_ms);
        }
        query.execute(&mut *tx).await.map_err(before)?;
        let sql = multi_row(
            "INSERT INTO team_actions (team_id, user_id, action, challenge_id, detail, \
             created_ms) VALUES ",
            "(?, ?, 'submit_incorrect', ?, NULL, ?)",
            size,
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            query = query
                .bind(r.team_id)
                .bind(r.user_id)
                .bind(r.challenge_id)
                .bind(r.now_ms);
        }
        query.execute(&mut *tx).await.map_err(before)?;
    }
    tx.commit().await.map_err(|error| BatchError {
        error: error.into(),
        at_commit: true,
    })
}

fn insert_submission<'q>(
    s: &NewSubmission<'_>,
    kind: &'static str,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(
        "INSERT INTO submissions (challenge_id, user_id, team_id, ip, provided, type, created_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(s.challenge_id)
    .bind(s.user_id)
    .bind(s.team_id)
    .bind(s.ip.chars().take(64).collect::<String>())
    .bind(s.provided.chars().take(1024).collect::<String>())
    .bind(kind)
    .bind(s.now_ms)
}

/// What recording a correct submission did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SolveOutcome {
    /// The solve row was written; `solve_id` is its database-stamped order and `value` the
    /// challenge's live value after it.
    Solved { solve_id: i64, value: i64 },
    /// The team had already solved it (the unique key refused the second row).
    AlreadySolved,
    /// The challenge is gone, or its row or flags are not those the verdict was taken on (an
    /// admin changed them since): nothing was written; decide again on fresh rows.
    Stale,
}

/// Records a correct submission, its solve and its action-log line in one transaction, and
/// recomputes the live dynamic value from the solve count inside it. The unique key on
/// (challenge, team) makes a second solve impossible whatever the callers did before.
///
/// The verdict is confirmed on fresh rows: `still` is given the challenge row (read inside the
/// transaction, under its row lock on MariaDB) and its flags (read just before the
/// transaction), and must answer whether they are those the caller decided on; if not (or the
/// challenge is gone) nothing is written ([`SolveOutcome::Stale`]). So a cached copy can never
/// make a flag score that no longer should, nor a hidden challenge be solved.
///
/// What runs under the challenge's row lock is kept to what needs it (the solve, the count,
/// the value): the flags are read before the transaction and the action-log line is written
/// before the lock is taken, so solves of one challenge queue no longer than they must.
pub async fn record_solve(
    db: &Database,
    s: &NewSubmission<'_>,
    still: impl FnOnce(&Challenge, &[FlagRow]) -> bool,
) -> DbResult<SolveOutcome> {
    let mysql = db.dialect() == fctf_core::db::Dialect::MySql;
    let read_challenge = || {
        let lock = if mysql { " FOR UPDATE" } else { "" };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE id = ?{lock}"
        )))
        .bind(s.challenge_id)
    };
    let flags = flags(db, Some(s.challenge_id)).await?;
    let mut tx = db.pool().begin().await?;
    // Not a read, so it neither waits for the row lock nor fixes the snapshot the count uses.
    super::actions::insert(
        s.team_id,
        s.user_id,
        super::actions::Action::SubmitCorrect,
        Some(s.challenge_id),
        None,
        s.now_ms,
    )
    .execute(&mut *tx)
    .await?;
    let mut fresh = None;
    if mysql {
        // Solves of one challenge queue on its row, so the count below (the transaction's first
        // plain read, taken while holding the lock) sees every earlier solve. SQLite has one
        // writer at a time already, and reads after its first write (a read first would let two
        // writers deadlock on the upgrade).
        fresh = Some(read_challenge().fetch_optional(&mut *tx).await?);
    }
    let submission_id = returned_id(&insert_submission(s, "correct").fetch_one(&mut *tx).await?)?;
    let inserted = sqlx::query(
        "INSERT INTO solves (submission_id, challenge_id, user_id, team_id, created_ms) \
         VALUES (?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(submission_id)
    .bind(s.challenge_id)
    .bind(s.user_id)
    .bind(s.team_id)
    .bind(s.now_ms)
    .fetch_one(&mut *tx)
    .await;
    let solve_id = match inserted {
        Ok(row) => returned_id(&row)?,
        Err(e) => {
            let e = DbError::from(e);
            tx.rollback().await?;
            return match e {
                DbError::Conflict(_) => Ok(SolveOutcome::AlreadySolved),
                other => Err(other),
            };
        }
    };
    let fresh = match fresh {
        Some(row) => row,
        None => read_challenge().fetch_optional(&mut *tx).await?,
    };
    let challenge = match fresh.as_ref().map(decode_challenge).transpose()? {
        Some(challenge) if still(&challenge, &flags) => challenge,
        _ => {
            tx.rollback().await?;
            return Ok(SolveOutcome::Stale);
        }
    };
    let mut value = challenge.value;
    if let Valuation::Dynamic { .. } = challenge.valuation() {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM solves WHERE challenge_id = ?")
            .bind(s.challenge_id)
            .fetch_one(&mut *tx)
            .await?;
        let n: i64 = row.try_get("n")?;
        value = challenge.valuation().value(u64::try_from(n).unwrap_or(0));
        sqlx::query("UPDATE challenges SET value = ? WHERE id = ?")
            .bind(value)
            .bind(s.challenge_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(SolveOutcome::Solved { solve_id, value })
}

/// The team whose handed-out dynamic flag for `challenge` is `flag`, if any.
pub async fn team_of_flag(db: &Database, challenge: i64, flag: &str) -> DbResult<Option<i64>> {
    let row = sqlx::query("SELECT team_id FROM team_flags WHERE challenge_id = ? AND flag = ?")
        .bind(challenge)
        .bind(flag)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.map(|r| r.try_get("team_id")).transpose()?)
}

/// Remembers that `team` was handed `flag` for `challenge` (idempotent).
pub async fn remember_team_flag(
    db: &Database,
    challenge: i64,
    team: i64,
    flag: &str,
) -> DbResult<()> {
    let sql = format!(
        "{} INTO team_flags (challenge_id, team_id, flag) VALUES (?, ?, ?)",
        db.dialect().insert_ignore()
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(challenge)
        .bind(team)
        .bind(flag)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// The insert of a flag-sharing event: `s.team_id` submitted the dynamic flag of `owner`.
fn insert_cheat<'q>(
    s: &NewSubmission<'_>,
    submission_id: i64,
    owner: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(
        "INSERT INTO cheat_events (challenge_id, team_id, user_id, flag_owner_team_id, \
         submission_id, created_ms) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(s.challenge_id)
    .bind(s.team_id)
    .bind(s.user_id)
    .bind(owner)
    .bind(submission_id)
    .bind(s.now_ms)
}

/// The secret `name`, created with `fresh` when absent (the first writer wins).
pub async fn secret(db: &Database, name: &str, fresh: &str) -> DbResult<String> {
    let sql = format!(
        "{} INTO play_secrets (name, value) VALUES (?, ?)",
        db.dialect().insert_ignore()
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(name)
        .bind(fresh)
        .execute(db.pool())
        .await?;
    let row = sqlx::query("SELECT value FROM play_secrets WHERE name = ?")
        .bind(name)
        .fetch_one(db.pool())
        .await?;
    Ok(row.try_get("value")?)
}

/// Everything the scoreboard is computed from: visible, unbanned teams and users.
pub async fn board_input(db: &Database) -> DbResult<BoardInput> {
    let teams = sqlx::query(
        "SELECT t.id, t.name, t.bracket_id, b.name AS bracket_name FROM teams t \
         LEFT JOIN brackets b ON b.id = t.bracket_id \
         WHERE t.hidden = 0 AND t.banned = 0 ORDER BY t.id",
    )
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(|r| {
        Ok(TeamRow {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            bracket_id: r.try_get("bracket_id")?,
            bracket_name: r.try_get("bracket_name")?,
        })
    })
    .collect::<DbResult<Vec<_>>>()?;
    let members = sqlx::query(
        "SELECT id, team_id, name FROM users \
         WHERE team_id IS NOT NULL AND hidden = 0 AND banned = 0 ORDER BY id",
    )
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(|r| {
        Ok(MemberRow {
            id: r.try_get("id")?,
            team_id: r.try_get("team_id")?,
            name: r.try_get("name")?,
        })
    })
    .collect::<DbResult<Vec<_>>>()?;
    let challenges = challenges(db)
        .await?
        .into_iter()
        .map(|c| ChallengeRule {
            id: c.id,
            valuation: c.valuation(),
            first_blood_bonus: c.first_blood_bonus,
        })
        .collect();
    let solves = sqlx::query("SELECT id, challenge_id, team_id, user_id, created_ms FROM solves")
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(|r| {
            Ok(SolveRow {
                id: r.try_get("id")?,
                challenge_id: r.try_get("challenge_id")?,
                team_id: r.try_get("team_id")?,
                user_id: r.try_get("user_id")?,
                created_ms: r.try_get("created_ms")?,
            })
        })
        .collect::<DbResult<Vec<_>>>()?;
    let awards = sqlx::query("SELECT id, team_id, user_id, value, created_ms FROM awards")
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(|r| {
            Ok(AwardRow {
                id: r.try_get("id")?,
                team_id: r.try_get("team_id")?,
                user_id: r.try_get("user_id")?,
                value: r.try_get("value")?,
                created_ms: r.try_get("created_ms")?,
            })
        })
        .collect::<DbResult<Vec<_>>>()?;
    Ok(BoardInput {
        teams,
        members,
        challenges,
        solves,
        awards,
    })
}

/// Names of teams and users by id (for listings).
pub async fn names(db: &Database, table: NameTable) -> DbResult<HashMap<i64, String>> {
    let sql = match table {
        NameTable::Teams => "SELECT id, name FROM teams",
        NameTable::Users => "SELECT id, name FROM users",
    };
    sqlx::query(sql)
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(|r| Ok((r.try_get("id")?, r.try_get("name")?)))
        .collect()
}

/// Which names [`names`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameTable {
    Teams,
    Users,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_cut_into_few_power_of_two_chunks() {
        assert_eq!(chunk_sizes(0), Vec::<usize>::new());
        assert_eq!(chunk_sizes(1), vec![1]);
        assert_eq!(chunk_sizes(37), vec![32, 4, 1]);
        assert_eq!(chunk_sizes(64), vec![64]);
        assert_eq!(chunk_sizes(200), vec![64, 64, 64, 8]);
        for n in 0..600 {
            let sizes = chunk_sizes(n);
            assert_eq!(sizes.iter().sum::<usize>(), n);
            assert!(
                sizes
                    .iter()
                    .all(|s| s.is_power_of_two() && *s <= MAX_INSERT_ROWS)
            );
        }
        assert_eq!(multi_row("V ", "(?)", 3), "V (?),(?),(?)");
    }
}
