//! Instance tracking rows: the database's record of every instance lifetime, written by the
//! Deployment Listener (open when Running, close when gone) and read by the admin API.
//!
//! Every write is idempotent and keyed by the instance id: opening twice keeps the first row,
//! closing twice keeps the first close, and nothing here can touch another instance's row.

use std::str::FromStr;

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::{Database, DbError, DbResult};
use crate::ids::{ChallengeId, InstanceId, TeamId};

/// One instance lifetime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackingRow {
    pub instance: InstanceId,
    pub team: TeamId,
    pub challenge: ChallengeId,
    pub route: Option<String>,
    /// Unix milliseconds.
    pub started_at_ms: i64,
    /// Unix milliseconds.
    pub expires_at_ms: Option<i64>,
    /// Unix milliseconds; `None` while open.
    pub stopped_at_ms: Option<i64>,
    pub stop_reason: Option<String>,
}

const COLUMNS: &str = "instance_id, team_id, challenge_id, route, started_at_ms, expires_at_ms, \
                       stopped_at_ms, stop_reason";

fn decode(row: &AnyRow) -> DbResult<TrackingRow> {
    let id: String = row.try_get("instance_id")?;
    let instance = InstanceId::from_str(&id)
        .map_err(|_| DbError::Corrupt(format!("instance_tracking.instance_id {id:?}")))?;
    Ok(TrackingRow {
        instance,
        team: TeamId(row.try_get("team_id")?),
        challenge: ChallengeId(row.try_get("challenge_id")?),
        route: row.try_get("route")?,
        started_at_ms: row.try_get("started_at_ms")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        stopped_at_ms: row.try_get("stopped_at_ms")?,
        stop_reason: row.try_get("stop_reason")?,
    })
}

impl Database {
    /// Opens the tracking row of `row.instance` (its stop fields are ignored). Returns false when
    /// the row already existed (nothing changed).
    pub async fn tracking_open(&self, row: &TrackingRow) -> DbResult<bool> {
        let sql = format!(
            "{} INTO instance_tracking (instance_id, team_id, challenge_id, route, \
             started_at_ms, expires_at_ms) VALUES (?, ?, ?, ?, ?, ?)",
            self.dialect().insert_ignore()
        );
        let done = sqlx::query(AssertSqlSafe(sql.as_str()))
            .bind(row.instance.to_string())
            .bind(row.team.0)
            .bind(row.challenge.0)
            .bind(row.route.clone())
            .bind(row.started_at_ms)
            .bind(row.expires_at_ms)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves the expiry of an open row (an extension). Returns false when no open row matched.
    pub async fn tracking_extend(
        &self,
        instance: InstanceId,
        expires_at_ms: i64,
    ) -> DbResult<bool> {
        let done = sqlx::query(
            "UPDATE instance_tracking SET expires_at_ms = ? \
             WHERE instance_id = ? AND stopped_at_ms IS NULL",
        )
        .bind(expires_at_ms)
        .bind(instance.to_string())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Closes the row of `instance` if it is open. Returns false when it was absent or already
    /// closed (the first close wins).
    pub async fn tracking_close(
        &self,
        instance: InstanceId,
        stopped_at_ms: i64,
        reason: &str,
    ) -> DbResult<bool> {
        let done = sqlx::query(
            "UPDATE instance_tracking SET stopped_at_ms = ?, stop_reason = ? \
             WHERE instance_id = ? AND stopped_at_ms IS NULL",
        )
        .bind(stopped_at_ms)
        .bind(reason.chars().take(255).collect::<String>())
        .bind(instance.to_string())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The row of `instance`.
    pub async fn tracking_get(&self, instance: InstanceId) -> DbResult<Option<TrackingRow>> {
        let sql = format!("SELECT {COLUMNS} FROM instance_tracking WHERE instance_id = ?");
        let row = sqlx::query(AssertSqlSafe(sql.as_str()))
            .bind(instance.to_string())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Every open row (for the reconciler).
    pub async fn tracking_open_rows(&self) -> DbResult<Vec<TrackingRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM instance_tracking WHERE stopped_at_ms IS NULL \
             ORDER BY started_at_ms, instance_id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql.as_str()))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(decode).collect()
    }

    /// Rows of one team, newest first, `limit` from `offset` (admin views, the team action log).
    pub async fn tracking_of_team(
        &self,
        team: TeamId,
        limit: u32,
        offset: u32,
    ) -> DbResult<Vec<TrackingRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM instance_tracking WHERE team_id = ? \
             ORDER BY started_at_ms DESC, instance_id LIMIT ? OFFSET ?"
        );
        let rows = sqlx::query(AssertSqlSafe(sql.as_str()))
            .bind(team.0)
            .bind(i64::from(limit))
            .bind(i64::from(offset))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(decode).collect()
    }
}
