//! The reconciler's decision: a pure function of the three views (what the runtime runs, what
//! the state store says, which tracking rows are open), the reconciler's own memory and the
//! time, to the actions that bring them in line.
//!
//! Everything is keyed by [`InstanceId`]: a record is matched to an observation only when it
//! names the same instance, so an old instance's observation can never act on a newer record
//! of the same (team, challenge). Store writes are compare-and-set on the version read, so a
//! view that went stale between the read and the write changes nothing.
//!
//! The memory (when each ghost was first seen, how many full passes in a row each instance was
//! missing) is an input and an output, so a restarted listener starts with an empty one and only
//! ever waits longer, never acts sooner.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fctf_core::config::ListenerConfig;
use fctf_core::db::tracking::TrackingRow;
use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_core::runtime::{InstanceRef, Observed, Phase};
use fctf_core::store::{DeploymentRecord, DeploymentState};

/// Player-facing reasons written into records (the status API shows them as they are).
pub mod reasons {
    pub const IMAGE_PULL: &str =
        "The challenge image could not be downloaded. Try again later or contact the organizers.";
    pub const CRASH_LOOP: &str =
        "The challenge keeps crashing while starting. Try again later or contact the organizers.";
    pub const CREATING: &str =
        "The instance took too long to be created. Try again later or contact the organizers.";
    pub const NOT_READY: &str =
        "The challenge did not become ready in time. Try again later or contact the organizers.";
    pub const EXPIRED: &str = "The instance reached the end of its lifetime.";
    pub const CONTEST_ENDED: &str = "The contest has ended.";
    pub const VANISHED: &str = "The instance stopped unexpectedly. You can start it again.";
    pub const EXITED: &str = "The instance exited. You can start it again.";
    pub const CRASHED: &str = "The challenge crashed. You can start it again.";
    pub const START_FAILED: &str =
        "The challenge stopped while starting. Try again later or contact the organizers.";
    /// Tracking-row reasons (admin-facing).
    pub const ROW_STOP_REQUESTED: &str = "stopped on request";
    pub const ROW_ENDED: &str = "ended";
    pub const ROW_GHOST: &str = "deleted as a ghost (no state record)";
    pub const ROW_ORPHAN: &str = "orphan: no instance and no active state record";
}

/// The waiting reason of an instance its runtime ended at its deadline.
pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";

/// Thresholds of the rules, from `[listener]` plus two record lifetimes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// A pod without a record is deleted once it has been seen for this long (and is this old).
    pub ghost_grace_ms: u64,
    /// Full passes in a row an instance must be missing before a row (or a Running record)
    /// without it is closed.
    pub orphan_strikes: u32,
    /// An image pull failing for longer than this fails the instance.
    pub image_pull_grace_ms: u64,
    /// More restarts than this while not ready fails the instance.
    pub crash_restarts: u32,
    /// Being created for longer than this fails the instance.
    pub creating_grace_ms: u64,
    /// Started but not ready for longer than this fails the instance.
    pub not_ready_grace_ms: u64,
    /// How long a Stopped or Failed record is kept so the status can say why.
    pub terminal_record_ttl: Duration,
    /// A Running record lives this long past its expiry, so the listener (not the TTL) ends it
    /// and the record can say Stopped.
    pub running_ttl_margin: Duration,
}

impl Rules {
    /// Default of [`Rules::terminal_record_ttl`] (the consumer keeps its terminal records as
    /// long).
    pub const TERMINAL_RECORD_TTL: Duration = Duration::from_secs(600);
    /// Default of [`Rules::running_ttl_margin`].
    pub const RUNNING_TTL_MARGIN: Duration = Duration::from_secs(600);

    /// The rules of a `[listener]` section.
    pub fn from_config(config: &ListenerConfig) -> Self {
        Self {
            ghost_grace_ms: config.ghost_grace_secs.saturating_mul(1000),
            orphan_strikes: config.orphan_strikes.max(1),
            image_pull_grace_ms: config.image_pull_grace_secs.saturating_mul(1000),
            crash_restarts: config.crash_restarts,
            creating_grace_ms: config.creating_grace_secs.saturating_mul(1000),
            not_ready_grace_ms: config.not_ready_grace_secs.saturating_mul(1000),
            terminal_record_ttl: Self::TERMINAL_RECORD_TTL,
            running_ttl_margin: Self::RUNNING_TTL_MARGIN,
        }
    }
}

impl Default for Rules {
    fn default() -> Self {
        Self::from_config(&ListenerConfig::default())
    }
}

/// Which instances a pass decides about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// A full resync: every instance in the views; missing-instance strikes are counted.
    All,
    /// Event hints: only these instances (strikes are neither counted nor dropped for them, so
    /// hints cannot speed up an orphan close).
    Instances(BTreeSet<InstanceId>),
}

impl Scope {
    /// The scope of one instance.
    pub fn instance(id: InstanceId) -> Self {
        Self::Instances(BTreeSet::from([id]))
    }
}

/// Complete views, read in this order: runtime, state store, database (so an instance created
/// between two reads looks like a fresh ghost, which the grace period protects, never like a
/// missing one). Only a complete read becomes a `Views`: a failed read means no pass at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Views {
    /// Everything the runtime runs (or, for [`Scope::Instances`], at least those).
    pub observed: Vec<Observed>,
    /// Deployment records (for [`Scope::Instances`]: at least the records of their slots).
    pub records: Vec<DeploymentRecord>,
    /// Open tracking rows.
    pub rows: Vec<TrackingRow>,
    /// The contest end (Unix milliseconds), if one is set.
    pub contest_ends_at_ms: Option<u64>,
    pub scope: Scope,
}

/// What the reconciler remembers between passes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// When each instance without a record was first seen (Unix milliseconds).
    pub ghosts_first_seen: BTreeMap<InstanceId, u64>,
    /// Full passes in a row each instance was missing from the runtime while a tracking row or
    /// a Running record still claimed it.
    pub missing_strikes: BTreeMap<InstanceId, u32>,
}

/// Why an action is taken (for logs and metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// Deploying (or Queued) and observed ready.
    Ready,
    /// A stuck rule fired.
    Stuck(Stuck),
    /// The record's (or the row's) lifetime is over.
    Expired,
    /// The contest is over: everything goes.
    ContestEnded,
    /// The instance ended on its own (exited, failed).
    Ended,
    /// The instance is missing from the runtime while its record says Running.
    Vanished,
    /// Observed with no record for it, past the grace period.
    Ghost,
    /// The record is Stopped or Failed but the instance is still there (or its row open).
    Terminal,
    /// The record is Stopping.
    StopRequested,
    /// An open row with no instance and no active record, past the strikes.
    Orphan,
    /// The record was lost (state store flushed) while the row and the instance remain.
    Lost,
    /// The record is Running and its row is missing or disagrees.
    Track,
}

/// Which stuck rule fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stuck {
    ImagePull,
    CrashLoop,
    Creating,
    NotReady,
}

impl Stuck {
    /// What the player is told.
    pub fn reason(self) -> &'static str {
        match self {
            Self::ImagePull => reasons::IMAGE_PULL,
            Self::CrashLoop => reasons::CRASH_LOOP,
            Self::Creating => reasons::CREATING,
            Self::NotReady => reasons::NOT_READY,
        }
    }
}

/// One correction. Actions of one instance come together and in order: store write first (the
/// gateway stops routing), then the runtime, then the database. The executor skips the rest of
/// an instance's actions when its store write loses a race.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Compare-and-set: write `record` over the stored record of the same instance and
    /// `record.version`.
    Update {
        record: DeploymentRecord,
        ttl: Duration,
        cause: Cause,
    },
    /// Re-create a lost record (only if the slot is empty).
    Restore {
        record: DeploymentRecord,
        ttl: Duration,
    },
    /// Delete the instance from the runtime.
    Remove { id: InstanceRef, cause: Cause },
    /// Free the quota slot and delete the record, if it is still this instance's.
    Release {
        team: TeamId,
        challenge: ChallengeId,
        instance: InstanceId,
    },
    /// Open the tracking row.
    OpenRow(TrackingRow),
    /// Move an open row's expiry to the record's.
    ExtendRow {
        instance: InstanceId,
        expires_at_ms: i64,
    },
    /// Close an open row.
    CloseRow {
        instance: InstanceId,
        reason: &'static str,
        cause: Cause,
    },
}

/// Metric buckets of actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ActionKind {
    MarkRunning,
    MarkFailed,
    MarkStopped,
    Restore,
    Remove,
    RemoveGhost,
    Release,
    OpenRow,
    ExtendRow,
    CloseRow,
    CloseOrphan,
}

impl ActionKind {
    /// Every kind, in a fixed order (metrics).
    pub const ALL: [ActionKind; 11] = [
        Self::MarkRunning,
        Self::MarkFailed,
        Self::MarkStopped,
        Self::Restore,
        Self::Remove,
        Self::RemoveGhost,
        Self::Release,
        Self::OpenRow,
        Self::ExtendRow,
        Self::CloseRow,
        Self::CloseOrphan,
    ];

    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            Self::MarkRunning => "mark_running",
            Self::MarkFailed => "mark_failed",
            Self::MarkStopped => "mark_stopped",
            Self::Restore => "restore",
            Self::Remove => "remove",
            Self::RemoveGhost => "remove_ghost",
            Self::Release => "release",
            Self::OpenRow => "open_row",
            Self::ExtendRow => "extend_row",
            Self::CloseRow => "close_row",
            Self::CloseOrphan => "close_orphan",
        }
    }

    /// Position in [`Self::ALL`].
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

impl Action {
    /// The instance the action is about.
    pub fn instance(&self) -> InstanceId {
        match self {
            Self::Update { record, .. } | Self::Restore { record, .. } => record.instance,
            Self::Remove { id, .. } => id.instance,
            Self::Release { instance, .. }
            | Self::ExtendRow { instance, .. }
            | Self::CloseRow { instance, .. } => *instance,
            Self::OpenRow(row) => row.instance,
        }
    }

    /// The metric bucket.
    pub fn kind(&self) -> ActionKind {
        match self {
            Self::Update { record, .. } => match record.state {
                DeploymentState::Running => ActionKind::MarkRunning,
                DeploymentState::Failed => ActionKind::MarkFailed,
                _ => ActionKind::MarkStopped,
            },
            Self::Restore { .. } => ActionKind::Restore,
            Self::Remove {
                cause: Cause::Ghost,
                ..
            } => ActionKind::RemoveGhost,
            Self::Remove { .. } => ActionKind::Remove,
            Self::Release { .. } => ActionKind::Release,
            Self::OpenRow(_) => ActionKind::OpenRow,
            Self::ExtendRow { .. } => ActionKind::ExtendRow,
            Self::CloseRow {
                cause: Cause::Orphan,
                ..
            } => ActionKind::CloseOrphan,
            Self::CloseRow { .. } => ActionKind::CloseRow,
        }
    }

    /// True for actions that end something (delete, fail, stop, release, close).
    pub fn is_destructive(&self) -> bool {
        match self {
            Self::Update { record, .. } => !record.state.is_active(),
            Self::Remove { .. } | Self::Release { .. } | Self::CloseRow { .. } => true,
            Self::Restore { .. } | Self::OpenRow(_) | Self::ExtendRow { .. } => false,
        }
    }
}

/// The outcome of one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub actions: Vec<Action>,
    pub memory: Memory,
}

/// Decides one pass. Pure: same inputs, same output; no action names an instance that is in
/// none of the views.
pub fn reconcile(views: &Views, memory: &Memory, now_ms: u64, rules: &Rules) -> Decision {
    let observed: BTreeMap<InstanceId, &Observed> =
        views.observed.iter().map(|o| (o.id.instance, o)).collect();
    let records: BTreeMap<InstanceId, &DeploymentRecord> =
        views.records.iter().map(|r| (r.instance, r)).collect();
    let slots: BTreeMap<(TeamId, ChallengeId), &DeploymentRecord> = views
        .records
        .iter()
        .map(|r| ((r.team, r.challenge), r))
        .collect();
    let rows: BTreeMap<InstanceId, &TrackingRow> =
        views.rows.iter().map(|r| (r.instance, r)).collect();

    let mut ids: BTreeSet<InstanceId> = observed.keys().copied().collect();
    ids.extend(records.keys().copied());
    ids.extend(rows.keys().copied());

    let mut next = Memory::default();
    let full = match &views.scope {
        Scope::All => true,
        Scope::Instances(only) => {
            ids.retain(|id| only.contains(id));
            next = memory.clone();
            for id in only {
                next.ghosts_first_seen.remove(id);
                next.missing_strikes.remove(id);
            }
            false
        }
    };

    let mut pass = Pass {
        now: now_ms,
        rules,
        contest_ends_at_ms: views.contest_ends_at_ms,
        full,
        memory,
        next,
        actions: Vec::new(),
    };
    for id in ids {
        let obs = observed.get(&id).copied();
        let rec = records.get(&id).copied();
        let row = rows.get(&id).copied();
        // The record holding the slot this instance would belong to, if it is another one.
        let slot_taken = obs
            .map(|o| (o.id.team, o.id.challenge))
            .or(row.map(|r| (r.team, r.challenge)))
            .and_then(|slot| slots.get(&slot))
            .is_some_and(|r| r.instance != id);
        pass.instance(id, obs, rec, row, slot_taken);
    }
    Decision {
        actions: pass.actions,
        memory: pass.next,
    }
}

/// The state of one pass while it walks the instances.
struct Pass<'a> {
    now: u64,
    rules: &'a Rules,
    contest_ends_at_ms: Option<u64>,
    full: bool,
    memory: &'a Memory,
    next: Memory,
    actions: Vec<Action>,
}

impl Pass<'_> {
    fn instance(
        &mut self,
        id: InstanceId,
        obs: Option<&Observed>,
        rec: Option<&DeploymentRecord>,
        row: Option<&TrackingRow>,
        slot_taken: bool,
    ) {
        let live = obs.filter(|o| !o.terminating);

        if self.contest_ends_at_ms.is_some_and(|end| self.now >= end) {
            self.contest_over(rec, obs, live, row);
            return;
        }

        match rec {
            None => self.without_record(id, obs, live, row, slot_taken),
            Some(rec) => match rec.state {
                DeploymentState::Stopping => {
                    // The row closes when the delete starts; the record (and the quota slot)
                    // goes only once the runtime no longer has the instance, so a new start
                    // cannot meet the old one's objects.
                    if let Some(o) = live {
                        self.remove(o, Cause::StopRequested);
                    } else if obs.is_none() {
                        self.actions.push(Action::Release {
                            team: rec.team,
                            challenge: rec.challenge,
                            instance: rec.instance,
                        });
                    }
                    self.close(row, reasons::ROW_STOP_REQUESTED, Cause::StopRequested);
                }
                DeploymentState::Stopped | DeploymentState::Failed => {
                    if let Some(o) = live {
                        self.remove(o, Cause::Terminal);
                    }
                    self.close(row, reasons::ROW_ENDED, Cause::Terminal);
                }
                DeploymentState::Queued | DeploymentState::Deploying | DeploymentState::Running => {
                    self.active(rec, obs, live, row);
                }
            },
        }
    }

    /// Contest over: every instance goes, every active record is Stopped, every row closed.
    fn contest_over(
        &mut self,
        rec: Option<&DeploymentRecord>,
        obs: Option<&Observed>,
        live: Option<&Observed>,
        row: Option<&TrackingRow>,
    ) {
        if let Some(rec) = rec {
            match rec.state {
                DeploymentState::Queued | DeploymentState::Deploying | DeploymentState::Running => {
                    self.end(
                        rec,
                        DeploymentState::Stopped,
                        reasons::CONTEST_ENDED,
                        Cause::ContestEnded,
                    );
                }
                DeploymentState::Stopping if obs.is_none() => {
                    self.actions.push(Action::Release {
                        team: rec.team,
                        challenge: rec.challenge,
                        instance: rec.instance,
                    });
                }
                _ => {}
            }
        }
        if let Some(o) = live {
            self.remove(o, Cause::ContestEnded);
        }
        self.close(row, reasons::CONTEST_ENDED, Cause::ContestEnded);
    }

    /// A record of this instance in Queued, Deploying or Running.
    fn active(
        &mut self,
        rec: &DeploymentRecord,
        obs: Option<&Observed>,
        live: Option<&Observed>,
        row: Option<&TrackingRow>,
    ) {
        let running = rec.state == DeploymentState::Running;
        if running && rec.expires_at_ms.is_some_and(|at| self.now >= at) {
            self.end(
                rec,
                DeploymentState::Stopped,
                reasons::EXPIRED,
                Cause::Expired,
            );
            if let Some(o) = live {
                self.remove(o, Cause::Expired);
            }
            self.close(row, reasons::EXPIRED, Cause::Expired);
            return;
        }
        let Some(o) = obs else {
            // Queued and Deploying may not be visible yet (their provisional TTL bounds them);
            // a Running one that is missing is counted, and ended on the last strike.
            if running && self.strike(rec.instance) {
                self.end(
                    rec,
                    DeploymentState::Stopped,
                    reasons::VANISHED,
                    Cause::Vanished,
                );
                self.close(row, reasons::VANISHED, Cause::Vanished);
            }
            return;
        };
        if live.is_none() {
            return; // someone is deleting it; decide once it is gone
        }
        match o.phase {
            // The runtime's own deadline (a Job's activeDeadlineSeconds, the local runtime's
            // lifetime kill) ended it: that is the end of its lifetime, not a crash.
            Phase::Ended { .. } if o.waiting_reason.as_deref() == Some(DEADLINE_EXCEEDED) => {
                self.end(
                    rec,
                    DeploymentState::Stopped,
                    reasons::EXPIRED,
                    Cause::Expired,
                );
                self.remove(o, Cause::Expired);
                self.close(row, reasons::EXPIRED, Cause::Expired);
                return;
            }
            Phase::Ended { succeeded } => {
                let (state, reason) = match (running, succeeded) {
                    (true, true) => (DeploymentState::Stopped, reasons::EXITED),
                    (true, false) => (DeploymentState::Failed, reasons::CRASHED),
                    (false, _) => (DeploymentState::Failed, reasons::START_FAILED),
                };
                self.end(rec, state, reason, Cause::Ended);
                self.remove(o, Cause::Ended);
                self.close(row, reason, Cause::Ended);
                return;
            }
            Phase::Failed => {
                let reason = if running {
                    reasons::CRASHED
                } else {
                    reasons::START_FAILED
                };
                self.end(rec, DeploymentState::Failed, reason, Cause::Ended);
                self.remove(o, Cause::Ended);
                self.close(row, reason, Cause::Ended);
                return;
            }
            Phase::Creating | Phase::Started { .. } => {}
        }
        if let Some(stuck) = stuck(o, self.now, self.rules) {
            self.end(
                rec,
                DeploymentState::Failed,
                stuck.reason(),
                Cause::Stuck(stuck),
            );
            self.remove(o, Cause::Stuck(stuck));
            self.close(row, stuck.reason(), Cause::Stuck(stuck));
            return;
        }
        if running {
            match row {
                None => self.open_row(rec, self.now),
                Some(row) => {
                    if let Some(at) = rec.expires_at_ms.map(ms_i64)
                        && row.expires_at_ms != Some(at)
                    {
                        self.actions.push(Action::ExtendRow {
                            instance: rec.instance,
                            expires_at_ms: at,
                        });
                    }
                }
            }
        } else if o.phase == (Phase::Started { ready: true }) {
            let Some(route) = o.route.clone().or_else(|| rec.route.clone()) else {
                return; // the gateway could not reach it yet
            };
            let mut expires = self.now.saturating_add(ms_u64(o.lifetime));
            if let Some(end) = self.contest_ends_at_ms {
                expires = expires.min(end);
            }
            let mut next = rec.clone();
            next.state = DeploymentState::Running;
            next.route = Some(route);
            next.reason = None;
            next.expires_at_ms = Some(expires);
            let ttl = self.running_ttl(expires);
            self.actions.push(Action::Update {
                record: next.clone(),
                ttl,
                cause: Cause::Ready,
            });
            if row.is_none() {
                self.open_row(&next, self.now);
            }
        }
    }

    /// No record names this instance.
    fn without_record(
        &mut self,
        id: InstanceId,
        obs: Option<&Observed>,
        live: Option<&Observed>,
        row: Option<&TrackingRow>,
        slot_taken: bool,
    ) {
        let Some(o) = obs else {
            // An open row and nothing else: an orphan, closed on the last strike.
            if row.is_some() && self.strike(id) {
                self.close(row, reasons::ROW_ORPHAN, Cause::Orphan);
            }
            return;
        };
        if live.is_none() {
            return; // being deleted
        }
        if let Some(row) = row {
            // The row says it ran. What the instance itself shows decides first: ended, stuck
            // or past the row's expiry, it goes at once (no grace is needed for that).
            let ended = matches!(o.phase, Phase::Ended { .. } | Phase::Failed);
            let expired = row.expires_at_ms.is_some_and(|at| ms_i64(self.now) >= at);
            if ended || expired || stuck(o, self.now, self.rules).is_some() {
                let cause = if expired { Cause::Expired } else { Cause::Lost };
                self.remove(o, cause);
                self.close(Some(row), reasons::ROW_ENDED, cause);
                return;
            }
            // The record was lost (a flushed store) while the instance lives: rebuild it, if
            // its slot is free (otherwise a newer instance owns it and this one is a ghost).
            if let Some(at) = row.expires_at_ms
                && !slot_taken
            {
                let expires = u64::try_from(at).unwrap_or(0);
                let record = DeploymentRecord {
                    team: row.team,
                    challenge: row.challenge,
                    instance: row.instance,
                    state: DeploymentState::Running,
                    version: 1,
                    route: o.route.clone().or_else(|| row.route.clone()),
                    reason: None,
                    created_at_ms: u64::try_from(row.started_at_ms).unwrap_or(0),
                    updated_at_ms: self.now,
                    expires_at_ms: Some(expires),
                };
                let ttl = self.running_ttl(expires);
                self.actions.push(Action::Restore { record, ttl });
                return;
            }
        }
        // A ghost: deleted once seen for the whole grace period and at least that old.
        let first = self
            .memory
            .ghosts_first_seen
            .get(&id)
            .copied()
            .unwrap_or(self.now)
            .min(self.now);
        let grace = self.rules.ghost_grace_ms;
        if self.now >= first.saturating_add(grace)
            && self.now >= o.created_at_ms.saturating_add(grace)
        {
            self.remove(o, Cause::Ghost);
            self.close(row, reasons::ROW_GHOST, Cause::Ghost);
        }
        // Remembered until it is gone, so a failed delete is retried at once next pass.
        self.next.ghosts_first_seen.insert(id, first);
    }

    /// Counts one more pass with `id` missing; true when that is the last allowed.
    fn strike(&mut self, id: InstanceId) -> bool {
        let before = self.memory.missing_strikes.get(&id).copied().unwrap_or(0);
        if !self.full {
            if before > 0 {
                self.next.missing_strikes.insert(id, before);
            }
            return false;
        }
        let now = before.saturating_add(1);
        if now >= self.rules.orphan_strikes {
            true
        } else {
            self.next.missing_strikes.insert(id, now);
            false
        }
    }

    fn end(&mut self, rec: &DeploymentRecord, state: DeploymentState, reason: &str, cause: Cause) {
        let mut next = rec.clone();
        next.state = state;
        next.reason = Some(reason.to_owned());
        self.actions.push(Action::Update {
            record: next,
            ttl: self.rules.terminal_record_ttl,
            cause,
        });
    }

    fn remove(&mut self, o: &Observed, cause: Cause) {
        self.actions.push(Action::Remove { id: o.id, cause });
    }

    fn close(&mut self, row: Option<&TrackingRow>, reason: &'static str, cause: Cause) {
        if let Some(row) = row {
            self.actions.push(Action::CloseRow {
                instance: row.instance,
                reason,
                cause,
            });
        }
    }

    fn open_row(&mut self, rec: &DeploymentRecord, started_at_ms: u64) {
        self.actions.push(Action::OpenRow(TrackingRow {
            instance: rec.instance,
            team: rec.team,
            challenge: rec.challenge,
            route: rec.route.clone(),
            started_at_ms: ms_i64(started_at_ms),
            expires_at_ms: rec.expires_at_ms.map(ms_i64),
            stopped_at_ms: None,
            stop_reason: None,
        }));
    }

    fn running_ttl(&self, expires_at_ms: u64) -> Duration {
        Duration::from_millis(expires_at_ms.saturating_sub(self.now))
            + self.rules.running_ttl_margin
    }
}

/// The stuck rule `o` breaks at `now`, if any ("past" a threshold: strictly longer than it).
pub fn stuck(o: &Observed, now_ms: u64, rules: &Rules) -> Option<Stuck> {
    let ready = o.phase == (Phase::Started { ready: true });
    if ready {
        return None;
    }
    let in_phase = now_ms.saturating_sub(o.phase_since_ms);
    let pulling = o.waiting_reason.as_deref().is_some_and(|w| {
        matches!(
            w,
            "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName" | "ErrImageNeverPull"
        )
    });
    if pulling && in_phase > rules.image_pull_grace_ms {
        return Some(Stuck::ImagePull);
    }
    if o.restarts > rules.crash_restarts {
        return Some(Stuck::CrashLoop);
    }
    match o.phase {
        Phase::Creating if in_phase > rules.creating_grace_ms => Some(Stuck::Creating),
        Phase::Started { ready: false } if in_phase > rules.not_ready_grace_ms => {
            Some(Stuck::NotReady)
        }
        _ => None,
    }
}

fn ms_u64(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn ms_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}
