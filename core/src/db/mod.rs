//! The database: one schema in two dialects, MariaDB (production) and SQLite (the embedded
//! default of `fctf up`), behind one sqlx `Any` pool so every query is written once.
//!
//! The schema belongs here, not to one service, because two services write it: the Contestant
//! Service (teams, challenges, solves) and the Deployment Listener (instance tracking rows).
//! Migrations are plain SQL files in `core/migrations/{mysql,sqlite}/`, one pair per version with
//! the same intent, embedded in the binary and applied in order by [`Database::migrate`].
//!
//! Writing queries that run on both:
//! - placeholders are `?` in both dialects; values are `i64`, `f64`, `String`, `bool` or bytes
//!   (the types the `Any` driver carries); times are Unix milliseconds in `BIGINT` columns;
//! - `INSERT IGNORE` / `INSERT OR IGNORE` differ: use [`Dialect::insert_ignore`];
//! - a unique-constraint violation is [`DbError::Conflict`] in both, so "exactly once" guards
//!   (one solve per team and challenge) are written as an insert that may conflict.

mod migrations;
pub mod tracking;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, AssertSqlSafe, Executor};

pub use self::migrations::{MIGRATIONS, Migration};

/// Which SQL dialect a [`Database`] speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// MariaDB (or MySQL).
    MySql,
    /// SQLite.
    Sqlite,
}

impl Dialect {
    /// The dialect of a database URL (`mysql://`, `mariadb://`, `sqlite:`), if known.
    pub fn of_url(url: &str) -> Option<Self> {
        let scheme = url.split(':').next()?.to_ascii_lowercase();
        match scheme.as_str() {
            "mysql" | "mariadb" => Some(Self::MySql),
            "sqlite" => Some(Self::Sqlite),
            _ => None,
        }
    }

    /// `INSERT IGNORE` (MariaDB) or `INSERT OR IGNORE` (SQLite): an insert that silently skips
    /// a row whose key already exists.
    pub fn insert_ignore(self) -> &'static str {
        match self {
            Self::MySql => "INSERT IGNORE",
            Self::Sqlite => "INSERT OR IGNORE",
        }
    }
}

/// Why a database call failed. Callers branch on the kind: `Unavailable` is retried or reported
/// as 503, `Conflict` is an expected answer (a duplicate), `Query` is a bug or a bad schema.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database could not be reached, or the pool had no connection in time.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A unique or primary-key constraint refused the write.
    #[error("database constraint refused the write: {0}")]
    Conflict(String),
    /// The database refused or failed the statement for another reason.
    #[error("database query failed: {0}")]
    Query(String),
    /// A stored row could not be decoded.
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    /// A migration failed; the schema is at the version before it.
    #[error("migration {version} ({name}) failed: {message}")]
    Migration {
        version: u32,
        name: &'static str,
        message: String,
    },
}

impl From<sqlx::Error> for DbError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Self::Unavailable(error.to_string()),
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                Self::Conflict(db.message().to_owned())
            }
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::Decode(_) => Self::Corrupt(error.to_string()),
            _ => Self::Query(error.to_string()),
        }
    }
}

/// Result of a database call.
pub type DbResult<T> = Result<T, DbError>;

/// A connection pool to the one database of a deployment, and its dialect.
#[derive(Clone, Debug)]
pub struct Database {
    pool: AnyPool,
    dialect: Dialect,
}

impl Database {
    /// Connects to `url` with at most `max_connections` connections. A SQLite file (and its
    /// directory) is created when missing and put in WAL mode; `sqlite::memory:` gets one
    /// connection (each connection would otherwise see its own empty database).
    pub async fn connect(url: &str, max_connections: u32) -> DbResult<Self> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::of_url(url).ok_or_else(|| {
            DbError::Query(format!(
                "unsupported database URL scheme in {:?}",
                url.split(':').next().unwrap_or("")
            ))
        })?;
        let mut url = url.to_owned();
        let mut max = max_connections.max(1);
        if dialect == Dialect::Sqlite {
            if url.contains(":memory:") {
                max = 1;
            } else {
                prepare_sqlite_path(&url)?;
                if !url.contains('?') {
                    url.push_str("?mode=rwc");
                }
            }
        }
        if url.starts_with("mariadb:") {
            url = url.replacen("mariadb:", "mysql:", 1);
        }
        let options = AnyConnectOptions::from_str(&url).map_err(DbError::from)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // Foreign keys are per connection in SQLite; the busy timeout makes a
                        // writer wait for another instead of failing with "database is locked".
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        if dialect == Dialect::Sqlite && !url.contains(":memory:") {
            // WAL lets readers go on while one writer writes; it is a property of the file.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        Ok(Self { pool, dialect })
    }

    /// The pool, for queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The dialect, for the few statements written differently.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// One round trip (readiness checks).
    pub async fn ping(&self) -> DbResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Applies every migration not yet applied, in order; returns the versions applied now.
    /// Safe to run from several processes at once (MariaDB: a named lock; SQLite: one file,
    /// one writer).
    pub async fn migrate(&self) -> DbResult<Vec<u32>> {
        migrations::apply(self).await
    }

    /// The highest migration version applied, 0 for an empty database.
    pub async fn schema_version(&self) -> DbResult<u32> {
        migrations::current_version(self).await
    }

    /// Closes every connection (graceful shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates the directory of a `sqlite://PATH` database file.
fn prepare_sqlite_path(url: &str) -> DbResult<()> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or("");
    if let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            DbError::Unavailable(format!("cannot create directory {}: {e}", dir.display()))
        })?;
    }
    Ok(())
}

/// A database of its own for one test run on a MariaDB server: created on [`Self::create`],
/// dropped by [`Self::drop_database`]. `admin_url` names the server and a database to connect
/// to first (e.g. `mysql://root@127.0.0.1:3306/test`).
#[derive(Debug)]
pub struct ScratchDatabase {
    pub db: Database,
    pub name: String,
    admin_url: String,
}

impl ScratchDatabase {
    /// Creates `fctf_t_<random>` on the server of `admin_url` and connects to it.
    pub async fn create(admin_url: &str, max_connections: u32) -> DbResult<Self> {
        sqlx::any::install_default_drivers();
        let name = format!("fctf_t_{}", uuid::Uuid::new_v4().simple());
        let admin = AnyPoolOptions::new()
            .max_connections(1)
            .connect(admin_url)
            .await?;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
            .execute(&admin)
            .await?;
        admin.close().await;
        let base = admin_url
            .rsplit_once('/')
            .map(|(base, _)| base)
            .unwrap_or(admin_url);
        let db = Database::connect(&format!("{base}/{name}"), max_connections).await?;
        Ok(Self {
            db,
            name,
            admin_url: admin_url.to_owned(),
        })
    }

    /// Drops the database (call at the end of the test; a leftover one is harmless).
    pub async fn drop_database(self) -> DbResult<()> {
        self.db.close().await;
        let admin = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&self.admin_url)
            .await?;
        sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS `{}`",
            self.name
        )))
        .execute(&admin)
        .await?;
        admin.close().await;
        Ok(())
    }
}
