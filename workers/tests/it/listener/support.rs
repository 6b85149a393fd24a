//! Builders of views for the decision tests, and a scripted in-memory runtime.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use fctf_core::db::tracking::TrackingRow;
use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_core::queue::DeploySpec;
use fctf_core::runtime::{
    InstanceRef, InstanceRuntime, Observed, Phase, Placement, RuntimeError, RuntimeResult,
};
use fctf_core::store::{DeploymentRecord, DeploymentState};
use fctf_workers::listener::{Rules, Scope, Views};

/// A fixed "now" for the pure tests (Unix milliseconds, 2027).
pub const T0: u64 = 1_800_000_000_000;

pub const LIFETIME: Duration = Duration::from_secs(3600);

pub fn iref(team: i64, challenge: i64) -> InstanceRef {
    InstanceRef {
        team: TeamId(team),
        challenge: ChallengeId(challenge),
        instance: InstanceId::new(),
    }
}

/// An instance created at `since` and in `phase` since then.
pub fn observed(id: InstanceRef, phase: Phase, since: u64) -> Observed {
    Observed {
        id,
        route: Some(format!("127.0.0.1:{}", 20_000 + id.challenge.0)),
        phase,
        restarts: 0,
        waiting_reason: None,
        created_at_ms: since,
        phase_since_ms: since,
        lifetime: LIFETIME,
        terminating: false,
    }
}

pub fn ready(id: InstanceRef, since: u64) -> Observed {
    observed(id, Phase::Started { ready: true }, since)
}

pub fn record(id: InstanceRef, state: DeploymentState, version: u64) -> DeploymentRecord {
    DeploymentRecord {
        team: id.team,
        challenge: id.challenge,
        instance: id.instance,
        state,
        version,
        route: None,
        reason: None,
        created_at_ms: T0 - 60_000,
        updated_at_ms: T0 - 60_000,
        expires_at_ms: None,
    }
}

pub fn running(id: InstanceRef, version: u64, expires_at_ms: u64) -> DeploymentRecord {
    DeploymentRecord {
        route: Some(format!("127.0.0.1:{}", 20_000 + id.challenge.0)),
        expires_at_ms: Some(expires_at_ms),
        ..record(id, DeploymentState::Running, version)
    }
}

pub fn row(id: InstanceRef, started_at_ms: u64, expires_at_ms: u64) -> TrackingRow {
    TrackingRow {
        instance: id.instance,
        team: id.team,
        challenge: id.challenge,
        route: Some(format!("127.0.0.1:{}", 20_000 + id.challenge.0)),
        started_at_ms: i64::try_from(started_at_ms).unwrap(),
        expires_at_ms: Some(i64::try_from(expires_at_ms).unwrap()),
        stopped_at_ms: None,
        stop_reason: None,
    }
}

pub fn views(
    observed: Vec<Observed>,
    records: Vec<DeploymentRecord>,
    rows: Vec<TrackingRow>,
) -> Views {
    Views {
        observed,
        records,
        rows,
        contest_ends_at_ms: None,
        scope: Scope::All,
    }
}

/// The `[listener]` defaults: ghost grace 60 s, 2 strikes, image pull 30 s, 2 restarts,
/// creating 300 s, not ready 180 s.
pub fn rules() -> Rules {
    Rules::default()
}

/// A runtime in memory whose observations the test writes, and whose failures it scripts.
#[derive(Debug, Default)]
pub struct FakeRuntime {
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    instances: BTreeMap<InstanceId, Observed>,
    fail_snapshot: bool,
    fail_remove: bool,
    /// A remove leaves the instance terminating instead of gone (a namespace being deleted).
    slow_delete: bool,
    removed: Vec<InstanceRef>,
    snapshots: u32,
    deadlines: Vec<(InstanceId, u64)>,
}

impl FakeRuntime {
    pub fn put(&self, o: Observed) {
        self.state
            .lock()
            .unwrap()
            .instances
            .insert(o.id.instance, o);
    }

    pub fn drop_instance(&self, id: InstanceId) {
        self.state.lock().unwrap().instances.remove(&id);
    }

    pub fn get(&self, id: InstanceId) -> Option<Observed> {
        self.state.lock().unwrap().instances.get(&id).cloned()
    }

    pub fn fail_snapshot(&self, fail: bool) {
        self.state.lock().unwrap().fail_snapshot = fail;
    }

    pub fn fail_remove(&self, fail: bool) {
        self.state.lock().unwrap().fail_remove = fail;
    }

    pub fn slow_delete(&self, slow: bool) {
        self.state.lock().unwrap().slow_delete = slow;
    }

    /// Every successful remove call, in order.
    pub fn removed(&self) -> Vec<InstanceRef> {
        self.state.lock().unwrap().removed.clone()
    }

    pub fn snapshots(&self) -> u32 {
        self.state.lock().unwrap().snapshots
    }

    /// Every `set_deadline` call, in order.
    pub fn deadlines(&self) -> Vec<(InstanceId, u64)> {
        self.state.lock().unwrap().deadlines.clone()
    }
}

#[async_trait]
impl InstanceRuntime for FakeRuntime {
    fn kind(&self) -> &'static str {
        "fake"
    }

    async fn deploy(
        &self,
        id: &InstanceRef,
        _spec: &DeploySpec,
        started_at_ms: u64,
    ) -> RuntimeResult<Placement> {
        let o = observed(*id, Phase::Creating, started_at_ms);
        let route = o.route.clone().unwrap();
        self.state
            .lock()
            .unwrap()
            .instances
            .entry(id.instance)
            .or_insert(o);
        Ok(Placement { route })
    }

    async fn remove(&self, id: &InstanceRef) -> RuntimeResult<()> {
        let mut state = self.state.lock().unwrap();
        if state.fail_remove {
            return Err(RuntimeError::Unavailable("scripted remove failure".into()));
        }
        state.removed.push(*id);
        if state.slow_delete {
            if let Some(o) = state.instances.get_mut(&id.instance) {
                o.terminating = true;
            }
        } else {
            state.instances.remove(&id.instance);
        }
        Ok(())
    }

    async fn in_progress(&self) -> RuntimeResult<u32> {
        let state = self.state.lock().unwrap();
        let n = state
            .instances
            .values()
            .filter(|o| o.phase != (Phase::Started { ready: true }))
            .count();
        Ok(u32::try_from(n).unwrap())
    }

    async fn snapshot(&self) -> RuntimeResult<Vec<Observed>> {
        let mut state = self.state.lock().unwrap();
        state.snapshots += 1;
        if state.fail_snapshot {
            return Err(RuntimeError::Unavailable(
                "scripted snapshot failure".into(),
            ));
        }
        Ok(state.instances.values().cloned().collect())
    }

    async fn logs(&self, _id: &InstanceRef, _tail: u32) -> RuntimeResult<String> {
        Err(RuntimeError::NotFound)
    }

    async fn set_deadline(&self, id: &InstanceRef, ends_at_ms: u64) -> RuntimeResult<()> {
        let mut state = self.state.lock().unwrap();
        if !state.instances.contains_key(&id.instance) {
            return Err(RuntimeError::NotFound);
        }
        state.deadlines.push((id.instance, ends_at_ms));
        Ok(())
    }
}
