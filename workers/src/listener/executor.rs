//! The adapters around the decision: reading the three views, and applying actions.
//!
//! Every write is idempotent (a remove of a gone instance is `Ok`, a row opens and closes once)
//! and tolerant of a lost race: a store write that meets another version or instance changes
//! nothing, and the rest of that instance's actions wait for the next pass, which re-reads.
//!
//! Reads and writes of different instances go out concurrently (at most [`CONCURRENCY`] at
//! once), so one instance's round trips (a database insert, a process stop) never delay
//! another's: a pass over 64 hinted instances costs about one instance's round trips, not 64.
//! Actions of one instance stay in order, as the decision emits them.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use fctf_core::db::{Database, DbError};
use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_core::runtime::{InstanceRef, InstanceRuntime, RuntimeError};
use fctf_core::store::{DeploymentRecord, Reservation, StateStore, StoreError, UpdateOutcome};
use futures_util::{StreamExt, TryStreamExt, stream};

use super::ContestWindow;
use super::decision::{Action, Cause, Scope, Views};
use super::metrics::ListenerMetrics;

/// Most reads, or instances' actions, under way at once in one pass.
pub const CONCURRENCY: usize = 16;

/// Why a view could not be read (the pass is skipped).
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What applying one pass's actions did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Actions that took effect (or found their effect already there).
    pub done: usize,
    /// Store writes that lost a race.
    pub conflicts: usize,
    /// Actions that failed.
    pub errors: usize,
    /// Actions not attempted because an earlier one of the same instance lost or failed.
    pub skipped: usize,
    /// The instances whose store write lost a race (worth re-reading at once).
    pub lost: Vec<InstanceId>,
}

impl Applied {
    fn add(&mut self, other: Applied) {
        self.done += other.done;
        self.conflicts += other.conflicts;
        self.errors += other.errors;
        self.skipped += other.skipped;
        self.lost.extend(other.lost);
    }
}

/// The I/O side of the listener: where views come from and where actions go.
#[derive(Clone, Debug)]
pub struct Executor {
    pub runtime: Arc<dyn InstanceRuntime>,
    pub store: Arc<dyn StateStore>,
    pub db: Database,
    pub contest: Arc<dyn ContestWindow>,
    pub metrics: Arc<ListenerMetrics>,
}

impl Executor {
    /// Complete views of everything: runtime first, then store, then database.
    pub async fn views(&self) -> Result<Views, ViewError> {
        let observed = self.runtime.snapshot().await?;
        let records = self.store.list_deployments().await?;
        let rows = self.db.tracking_open_rows().await?;
        Ok(Views {
            observed,
            records,
            rows,
            contest_ends_at_ms: self.contest.ends_at_ms().await,
            scope: Scope::All,
        })
    }

    /// Complete views of some instances (event hints): one runtime snapshot, the record of each
    /// one's slot, each one's row.
    pub async fn views_of(&self, ids: &[InstanceRef]) -> Result<Views, ViewError> {
        let wanted: BTreeSet<InstanceId> = ids.iter().map(|id| id.instance).collect();
        let observed = self
            .runtime
            .snapshot()
            .await?
            .into_iter()
            .filter(|o| wanted.contains(&o.id.instance))
            .collect();
        let slots: BTreeSet<(TeamId, ChallengeId)> =
            ids.iter().map(|id| (id.team, id.challenge)).collect();
        // The futures are made first, then streamed: a stream of a closure that borrows `self`
        // would make this future not `Send` (a higher-ranked lifetime the compiler cannot prove).
        let reads: Vec<_> = slots
            .into_iter()
            .map(|(team, challenge)| self.store.get_deployment(team, challenge))
            .collect();
        let records: Vec<DeploymentRecord> = stream::iter(reads)
            .buffered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .flatten()
            .collect();
        let reads: Vec<_> = wanted.iter().map(|id| self.db.tracking_get(*id)).collect();
        let rows = stream::iter(reads)
            .buffered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .flatten()
            .filter(|r| r.stopped_at_ms.is_none())
            .collect();
        Ok(Views {
            observed,
            records,
            rows,
            contest_ends_at_ms: self.contest.ends_at_ms().await,
            scope: Scope::Instances(wanted),
        })
    }

    /// Applies `actions`: each instance's in order, different instances concurrently;
    /// `now_ms` stamps closed rows.
    pub async fn apply(&self, actions: &[Action], now_ms: u64) -> Applied {
        let mut order: Vec<InstanceId> = Vec::new();
        let mut by_instance: HashMap<InstanceId, Vec<&Action>> = HashMap::new();
        for action in actions {
            let instance = action.instance();
            by_instance
                .entry(instance)
                .or_insert_with(|| {
                    order.push(instance);
                    Vec::new()
                })
                .push(action);
        }
        let groups: Vec<_> = order
            .iter()
            .filter_map(|instance| by_instance.remove(instance))
            .map(|group| self.apply_instance(group, now_ms))
            .collect();
        let mut out = Applied::default();
        let mut results = stream::iter(groups).buffer_unordered(CONCURRENCY);
        while let Some(applied) = results.next().await {
            out.add(applied);
        }
        out
    }

    /// Applies one instance's actions in order, stopping at a lost race or a failed write.
    async fn apply_instance(&self, actions: Vec<&Action>, now_ms: u64) -> Applied {
        let mut out = Applied::default();
        let mut held = false;
        for action in actions {
            let instance = action.instance();
            if held {
                out.skipped += 1;
                continue;
            }
            match self.apply_one(action, now_ms).await {
                Ok(true) => {
                    out.done += 1;
                    self.metrics.applied(action.kind());
                    if action.is_destructive() {
                        tracing::info!(%instance, ?action, "listener: applied");
                    } else {
                        tracing::debug!(%instance, ?action, "listener: applied");
                    }
                }
                Ok(false) => {
                    out.conflicts += 1;
                    out.lost.push(instance);
                    self.metrics.conflict();
                    held = true;
                    tracing::debug!(%instance, ?action, "listener: lost a race; re-read next pass");
                }
                Err(error) => {
                    out.errors += 1;
                    self.metrics.error();
                    tracing::warn!(%instance, ?action, %error, "listener: action failed");
                    // A failed remove does not hold back the record or the row: the decision
                    // to end the instance stands, and the next pass removes it again.
                    if !matches!(action, Action::Remove { .. }) {
                        held = true;
                    }
                }
            }
        }
        out
    }

    /// Once an instance is Running, its runtime deadline (set at deploy from the spawn) is moved
    /// to the record's expiry (plus the runtime's margin), so the record governs from the start.
    /// Best effort: the runtime's own deadline stays a backstop, and the listener removes the
    /// instance at the record's expiry anyway.
    async fn align_deadline(&self, record: &DeploymentRecord) {
        let Some(ends_at_ms) = record.expires_at_ms else {
            return;
        };
        let id = InstanceRef {
            team: record.team,
            challenge: record.challenge,
            instance: record.instance,
        };
        if let Err(error) = self.runtime.set_deadline(&id, ends_at_ms).await {
            tracing::warn!(instance = %record.instance, %error, "listener: could not align the runtime deadline");
        }
    }

    /// Ok(false): a store write found another version or instance.
    async fn apply_one(&self, action: &Action, now_ms: u64) -> Result<bool, ViewError> {
        match action {
            Action::Update { record, ttl, cause } => {
                match self.store.update_deployment(record, *ttl).await? {
                    UpdateOutcome::Updated(_) => {
                        if *cause == Cause::Ready {
                            self.align_deadline(record).await;
                        }
                        Ok(true)
                    }
                    UpdateOutcome::Conflict(_) => Ok(false),
                }
            }
            Action::Restore { record, ttl } => {
                match self.store.reserve_instance(record, u32::MAX, *ttl).await? {
                    Reservation::Reserved(_) => Ok(true),
                    Reservation::AlreadyActive(_) | Reservation::QuotaExceeded { .. } => Ok(false),
                }
            }
            Action::Remove { id, .. } => {
                self.runtime.remove(id).await?;
                Ok(true)
            }
            Action::Release {
                team,
                challenge,
                instance,
            } => {
                self.store
                    .release_instance(*team, *challenge, *instance)
                    .await?;
                Ok(true)
            }
            Action::OpenRow(row) => {
                self.db.tracking_open(row).await?;
                Ok(true)
            }
            Action::ExtendRow {
                instance,
                expires_at_ms,
            } => {
                self.db.tracking_extend(*instance, *expires_at_ms).await?;
                Ok(true)
            }
            Action::CloseRow {
                instance, reason, ..
            } => {
                let at = i64::try_from(now_ms).unwrap_or(i64::MAX);
                self.db.tracking_close(*instance, at, reason).await?;
                Ok(true)
            }
        }
    }
}
