//! The schema's migrations, embedded, applied in order, each recorded in `fctf_migrations`.
//!
//! Each version is one file per dialect with the same intent. Statements are separated by a `;`
//! at the end of a line; every statement is written to be re-runnable (`IF NOT EXISTS`), because
//! MariaDB commits DDL statement by statement, so a migration cut halfway is simply run again.

use sqlx::{AssertSqlSafe, Row};

use super::{Database, DbError, DbResult, Dialect};

/// One schema version.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    mysql: &'static str,
    sqlite: &'static str,
}

impl Migration {
    /// The SQL of this version in `dialect`.
    pub fn sql(&self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::MySql => self.mysql,
            Dialect::Sqlite => self.sqlite,
        }
    }
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            mysql: include_str!(concat!("../../migrations/mysql/", $name, ".sql")),
            sqlite: include_str!(concat!("../../migrations/sqlite/", $name, ".sql")),
        }
    };
}

/// Every migration, in order. Never edit a released one: add a version.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_tracking"),
    migration!(2, "0002_accounts"),
    migration!(3, "0003_play"),
    migration!(4, "0004_operations"),
];

const LEDGER: &str = "CREATE TABLE IF NOT EXISTS fctf_migrations (\
     version BIGINT NOT NULL PRIMARY KEY, \
     name VARCHAR(128) NOT NULL, \
     applied_at_ms BIGINT NOT NULL)";

/// The statements of one migration file: split at `;` ending a line, comments and blanks dropped.
pub(crate) fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with("--") {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            let statement = current.trim().trim_end_matches(';').trim().to_owned();
            if !statement.is_empty() {
                out.push(statement);
            }
            current.clear();
        }
    }
    let rest = current.trim();
    if !rest.is_empty() {
        out.push(rest.to_owned());
    }
    out
}

pub(crate) async fn current_version(db: &Database) -> DbResult<u32> {
    sqlx::query(LEDGER).execute(db.pool()).await?;
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM fctf_migrations")
        .fetch_one(db.pool())
        .await?;
    let v: i64 = row.try_get("v").map_err(DbError::from)?;
    u32::try_from(v).map_err(|_| DbError::Corrupt(format!("migration version {v}")))
}

pub(crate) async fn apply(db: &Database) -> DbResult<Vec<u32>> {
    let mut conn = db.pool().acquire().await?;
    if db.dialect() == Dialect::MySql {
        // One migrator at a time across processes; the lock is the connection's.
        let row = sqlx::query("SELECT GET_LOCK('fctf_migrate', 60) AS got")
            .fetch_one(&mut *conn)
            .await?;
        let got: Option<i64> = row.try_get("got").map_err(DbError::from)?;
        if got != Some(1) {
            return Err(DbError::Unavailable(
                "another process holds the migration lock".to_owned(),
            ));
        }
    }
    let result = apply_locked(db.dialect(), &mut conn).await;
    if db.dialect() == Dialect::MySql {
        let _ = sqlx::query("SELECT RELEASE_LOCK('fctf_migrate')")
            .execute(&mut *conn)
            .await;
    }
    result
}

async fn apply_locked(dialect: Dialect, conn: &mut sqlx::AnyConnection) -> DbResult<Vec<u32>> {
    sqlx::query(LEDGER).execute(&mut *conn).await?;
    let rows = sqlx::query("SELECT version FROM fctf_migrations")
        .fetch_all(&mut *conn)
        .await?;
    let mut done = Vec::with_capacity(rows.len());
    for row in rows {
        let v: i64 = row.try_get("version").map_err(DbError::from)?;
        done.push(v);
    }
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        if done.contains(&i64::from(migration.version)) {
            continue;
        }
        for statement in statements(migration.sql(dialect)) {
            sqlx::query(AssertSqlSafe(statement.as_str()))
                .execute(&mut *conn)
                .await
                .map_err(|e| DbError::Migration {
                    version: migration.version,
                    name: migration.name,
                    message: format!("{e} in statement: {}", first_line(&statement)),
                })?;
        }
        sqlx::query("INSERT INTO fctf_migrations (version, name, applied_at_ms) VALUES (?, ?, ?)")
            .bind(i64::from(migration.version))
            .bind(migration.name)
            .bind(now_ms())
            .execute(&mut *conn)
            .await?;
        applied.push(migration.version);
    }
    Ok(applied)
}

fn first_line(statement: &str) -> &str {
    statement.lines().next().unwrap_or("")
}

fn now_ms() -> i64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    i64::try_from(ms).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_line_end_semicolons_and_skip_comments() {
        let sql =
            "-- a comment\nCREATE TABLE a (x INT);\n\nCREATE TABLE b (\n  y INT\n);\n-- end\n";
        assert_eq!(
            statements(sql),
            vec!["CREATE TABLE a (x INT)", "CREATE TABLE b (\n  y INT\n)"]
        );
    }

    #[test]
    fn every_migration_has_both_dialects_and_increasing_versions() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
        for m in MIGRATIONS {
            // A version is either empty in both dialects or written in both.
            assert_eq!(
                statements(m.mysql).is_empty(),
                statements(m.sqlite).is_empty(),
                "{}",
                m.name
            );
        }
    }
}
