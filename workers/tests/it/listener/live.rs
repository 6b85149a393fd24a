//! The whole listener (views, decision, executor, loop) over a scripted fake runtime, on both
//! backends: MemoryStore + SQLite, and Redis (a key prefix of its own) + MariaDB (a scratch
//! database). Time is explicit: each pass is given its `now`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fctf_core::clock;
use fctf_core::db::tracking::TrackingRow;
use fctf_core::db::{Database, ScratchDatabase};
use fctf_core::ids::InstanceId;
use fctf_core::runtime::{InstanceRef, InstanceRuntime, Phase};
use fctf_core::store::{
    DeploymentRecord, DeploymentState, MemoryStore, RedisStore, Reservation, StateStore,
    UpdateOutcome,
};
use fctf_workers::listener::decision::reasons;
use fctf_workers::listener::{
    ActionKind, ChangeFeed, ContestWindow, FixedContestWindow, Listener, Memory, Rules, ViewError,
    reconcile,
};
use futures_util::stream::BoxStream;
use tokio::sync::mpsc;

use super::support::{FakeRuntime, iref, observed, ready, row};

const HOUR_MS: u64 = 3_600_000;

fn redis_url() -> String {
    std::env::var("FCTF_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn mysql_url() -> String {
    std::env::var("FCTF_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

/// A state store and a migrated database, both fresh.
pub struct Backend {
    store: Arc<dyn StateStore>,
    db: Database,
    scratch: Option<ScratchDatabase>,
}

impl Backend {
    pub async fn memory_sqlite() -> Self {
        let db = Database::connect("sqlite::memory:", 1).await.unwrap();
        db.migrate().await.unwrap();
        Self {
            store: Arc::new(MemoryStore::new()),
            db,
            scratch: None,
        }
    }

    /// Fails (never skips) when Redis or MariaDB does not answer.
    pub async fn redis_mariadb(case: &str) -> Self {
        let prefix = format!("fctf-test:listener-{case}-{}:", InstanceId::new());
        let store = RedisStore::connect(&redis_url(), &prefix, Duration::from_secs(2))
            .await
            .expect("Redis must be running on 127.0.0.1:6379");
        let scratch = ScratchDatabase::create(&mysql_url(), 4)
            .await
            .expect("MariaDB must be running on 127.0.0.1:3306");
        scratch.db.migrate().await.unwrap();
        Self {
            store: Arc::new(store),
            db: scratch.db.clone(),
            scratch: Some(scratch),
        }
    }

    pub async fn finish(self) {
        if let Some(scratch) = self.scratch {
            scratch.drop_database().await.unwrap();
        }
    }

    fn listener(&self, runtime: &Arc<FakeRuntime>, contest_end: Option<u64>) -> Listener {
        self.listener_on(runtime.clone(), contest_end)
    }

    /// A listener over any runtime.
    pub fn listener_on(
        &self,
        runtime: Arc<dyn InstanceRuntime>,
        contest_end: Option<u64>,
    ) -> Listener {
        Listener::new(
            runtime,
            self.store.clone(),
            self.db.clone(),
            Arc::new(FixedContestWindow(contest_end)),
            Rules::default(),
        )
    }

    /// Reserves `id`'s slot and moves it to Deploying, as the Deployment Center and the
    /// consumer do.
    pub async fn deploying(&self, id: InstanceRef) -> DeploymentRecord {
        let fresh = DeploymentRecord {
            team: id.team,
            challenge: id.challenge,
            instance: id.instance,
            state: DeploymentState::Queued,
            version: 0,
            route: None,
            reason: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            expires_at_ms: None,
        };
        let Reservation::Reserved(queued) = self
            .store
            .reserve_instance(&fresh, 10, Duration::from_secs(300))
            .await
            .unwrap()
        else {
            panic!("slot taken")
        };
        let next = DeploymentRecord {
            state: DeploymentState::Deploying,
            ..queued
        };
        match self
            .store
            .update_deployment(&next, Duration::from_secs(300))
            .await
            .unwrap()
        {
            UpdateOutcome::Updated(r) => r,
            UpdateOutcome::Conflict(r) => panic!("conflict: {r:?}"),
        }
    }

    pub async fn record(&self, id: InstanceRef) -> Option<DeploymentRecord> {
        self.store
            .get_deployment(id.team, id.challenge)
            .await
            .unwrap()
    }

    async fn row(&self, id: InstanceRef) -> Option<TrackingRow> {
        self.db.tracking_get(id.instance).await.unwrap()
    }
}

/// Generates `memory_sqlite::<case>` and `redis_mariadb::<case>` for each `async fn(&Backend)`.
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod memory_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = super::Backend::memory_sqlite().await;
                    super::$case(&backend).await;
                    backend.finish().await;
                }
            )*
        }
        mod redis_mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = super::Backend::redis_mariadb(stringify!($case)).await;
                    super::$case(&backend).await;
                    backend.finish().await;
                }
            )*
        }
    };
}

on_both_backends!(
    deploying_and_ready_becomes_running_and_a_restart_converges,
    a_failed_snapshot_changes_nothing,
    a_ghost_is_deleted_only_after_the_grace_period,
    an_orphan_row_is_closed_only_on_the_second_strike,
    an_old_instance_never_touches_the_newer_record,
    an_expired_instance_is_stopped_and_deleted,
    the_contest_end_deletes_everything,
    stuck_instances_fail_with_a_reason_and_are_cleaned,
    a_stopping_record_is_deleted_then_released,
    a_lost_record_is_rebuilt_from_the_row_and_the_runtime,
    a_lost_race_leaves_everything_to_the_next_pass,
    a_failed_remove_is_retried_on_the_next_pass,
    a_pod_seen_before_its_record_is_kept,
);

/// Makes `id` Running through one pass at `t0` (ready since `t0 - 5 s`).
async fn make_running(b: &Backend, rt: &Arc<FakeRuntime>, l: &Listener, id: InstanceRef, t0: u64) {
    rt.put(ready(id, t0 - 5_000));
    b.deploying(id).await;
    l.resync_at(t0).await.unwrap();
    assert_eq!(b.record(id).await.unwrap().state, DeploymentState::Running);
}

async fn deploying_and_ready_becomes_running_and_a_restart_converges(b: &Backend) {
    let t0 = clock::unix_now_millis();
    let rt = Arc::new(FakeRuntime::default());
    let id = iref(1, 10);
    rt.put(ready(id, t0 - 5_000));
    let before = b.deploying(id).await;
    let l = b.listener(&rt, None);

    let report = l.resync_at(t0).await.unwrap();
    assert_eq!(report.applied.done, 2, "{report:?}");
    let rec = b.record(id).await.unwrap();
    assert_eq!(rec.state, DeploymentState::Running);
    assert_eq!(rec.instance, id.instance);
    assert_eq!(rec.version, before.version + 1);
    assert_eq!(rec.expires_at_ms, Some(t0 + HOUR_MS));
    assert_eq!(rec.route.as_deref(), Some("127.0.0.1:20010"));
    let tracked = b.row(id).await.unwrap();
    assert_eq!(tracked.started_at_ms, t0 as i64);
    assert_eq!(tracked.expires_at_ms, Some((t0 + HOUR_MS) as i64));
    assert_eq!(tracked.stopped_at_ms, None);
    assert_eq!(b.store.quota_usage(id.team).await.unwrap(), 1);
    assert_eq!(
        rt.deadlines(),
        vec![(id.instance, t0 + HOUR_MS)],
        "the runtime's deadline follows the record's expiry once Running"
    );

    // Again, and from a restarted listener (empty memory): nothing more to do.
    assert!(l.resync_at(t0 + 1_000).await.unwrap().actions.is_empty());
    let restarted = b.listener(&rt, None);
    assert!(
        restarted
            .resync_at(t0 + 2_000)
            .await
            .unwrap()
            .actions
            .is_empty()
    );
    assert_eq!(b.record(id).await.unwrap(), rec);
    let m = l.metrics().snapshot();
    assert_eq!(m.applied(ActionKind::MarkRunning), 1);
    assert_eq!(m.applied(ActionKind::OpenRow), 1);
    assert_eq!(m.passes_full, 2);
}

async fn a_failed_snapshot_changes_nothing(b: &Backend) {
    let t0 = clock::unix_now_millis();
    let rt = Arc::new(FakeRuntime::default());
    let l = b.listener(&rt, None);
    let starting = iref(1, 10);
    let orphan = iref(2, 10);
    let ghost = iref(3, 10);
    rt.put(ready(starting, t0 - 5_000));
    rt.put(ready(ghost, t0 - HOUR_MS));
    let deploying = b.deploying(starting).await;
    b.db.tracking_open(&row(orphan, t0 - HOUR_MS, t0 + HOUR_MS))
        .await
        .unwrap();

    // First a complete pass: the orphan has one strike, the ghost is first seen at t0.
    l.resync_at(t0).await.unwrap();
    let after_first = l.memory();
    assert_eq!(after_first.missing_strikes.get(&orphan.instance), Some(&1));
    assert_eq!(deploying.state, DeploymentState::Deploying);
    let before = b.record(starting).await.unwrap();

    rt.fail_snapshot(true);
    for now in [t0 + 60_000, t0 + 120_000] {
        let err = l.resync_at(now).await.unwrap_err();
        assert!(matches!(err, ViewError::Runtime(_)), "{err:?}");
    }
    assert_eq!(
        l.memory(),
        after_first,
        "no strike and no sighting from a failed read"
    );
    assert!(rt.removed().is_empty());
    assert_eq!(b.record(starting).await.unwrap(), before);
    assert_eq!(b.row(orphan).await.unwrap().stopped_at_ms, None);
    assert_eq!(l.metrics().snapshot().incomplete, 2);

    // The next complete pass is the orphan's second strike.
    rt.fail_snapshot(false);
    l.resync_at(t0 + 180_000).await.unwrap();
    assert!(b.row(orphan).await.unwrap().stopped_at_ms.is_some());
    assert_eq!(rt.removed(), [ghost]);
}

async fn a_ghost_is_deleted_only_after_the_grace_period(b: &Backend) {
    let t0 = clock::unix_now_millis();
    let rt = Arc::new(FakeRuntime::default());
    let l = b.listener(&rt, None);
    let ghost = iref(1, 10);
    rt.put(ready(ghost, t0 - HOUR_MS));
    for now in [t0, t0 + 30_000, t0 + 59_999] {
        assert!(l.resync_at(now).await.unwrap().actions.is_empty());
    }
    assert!(rt.get(ghost.instance).is_some());
    l.resync_at(t0 + 60_000).await.unwrap();
    assert!(rt.get(ghost.instance).is_none());
    l.resync_at(t0 + 90_000).await.unwrap();
    assert_eq!(rt.removed(), [ghost], "deleted exactly once");
    assert_eq!(l.metrics().snapshot().applied(ActionKind::RemoveGhost), 1);
}

async fn an_orphan_row_is_closed_only_on_the_second_strike(b: &Backend) {
    let t0 = clock::unix_now_millis();
    let rt = Arc::new(FakeRuntime::default());
    let l = b.listener(&rt, None);
    let orphan = iref(1, 10);
    b.db.tracking_open(&row(orphan, t0 - HOUR_MS, t0 + HOUR_MS))
        .await
        .unwrap();
    l.resync_at(t0).await.unwrap();
    assert_eq!(b.row(orphan).await.unwrap().stopped_at_ms, None);
    // A restarted listener starts counting again.
    let restarted = b.listener(&rt, None);
    restarted.resync_at(t0 + 30_000).await.unwrap();
    assert_eq!(b.row(orphan).await.unwrap().stopped_at_ms, None);
    restarted.resync_at(t0 + 60_000).await.unwrap();
    let closed = b.row(orphan).await.unwrap();
    assert_eq!(closed.stopped_at_ms, Some((t0 + 60_000) as i64));
    assert_eq!(closed.stop_reason.as_deref(), Some(reasons::ROW_ORPHAN));
    assert_eq!(
        restarted
            .metrics()
            .snapshot()
            .applied(ActionKind::CloseOrphan),
        1
    );
}

async fn an_old_instance_never_touches_the_newer_record(b: &Backend) {
    let t0 = clock::unix_now_millis();
    let rt = Arc::new(FakeRuntime::default());
    let l = b.listener(&rt, None);
    let old = iref(1, 10);
    let new = InstanceRef {
        instance: InstanceId::new(),
        ..old
    };
    // The old instance still runs (ready) and still has its row; the slot is the new one's.
    rt.put(ready(old, t0 - HOUR_MS));
    b.db.tracking_open(&row(old, t0 - HOUR_MS, t0 + HOUR_MS))
        .await
        .unwrap();
    let deploying = b.deploying(new).await;
    l.resync_at(t0).await.unwrap();
    assert_eq!(b.record(new).await.unwrap(), deploying);
    // Its hint is just as harmless.
    l.reconcile_instance_at(&old, t0 + 1_000).await.unwrap();
    assert_eq!(b.record(new).await.unwrap(), deploying);

    l.resync_at(t0 + 60_000).await.unwrap();
    assert_eq!(rt.removed(), [old]);
    assert!(b.row(old).await.unwrap().stopped_at_ms.is_some());
    assert_eq!(b.record(new).await.unwrap(), deploying);

    // The new one comes up and is marked, untouched by the old one's history.
    rt.put(ready(new, t0 + 60_000));
    l.resync_at(t0 + 61_000).await.unwrap();
    let rec = b.record(new).await.unwrap();
    assert_eq!(
        (rec.instance, rec.state),
        (new.instance, DeploymentState::Running)
    );
}

async fn an_expired_instance_is_stopped_and_deleted(b: &Backend) {
    let t0 = clock::unix_now_millis();
    let rt = Arc::new(FakeRuntime::default());
    let l = b.listener(&rt, None);
    let id = iref(1, 10);
    make_running(b, &rt, &l, id, t0).await;
    assert!(
        l.resync_at(t0 + HOUR_MS - 1)
            .await
            .unwrap()
            .actions
            .is_empty()
    );
    l.resync_at(t0 + HOUR_MS).await.unwrap();
    let rec = b.record(id).await.unwrap();
    assert_eq!(rec.state, DeploymentState::Stopped);
    assert_eq!(rec.reason.as_deref(), Some(reasons::EXPIRED));
    assert_eq!(rt.removed(), [id]);
    let closed = b.row(id).await.unwrap();
    assert_eq!(closed.stopped_at_ms, Some((t0 + HOUR_MS) as i64));
    assert_eq!(b.store.quota_usage(id.team).await.unwrap(), 0);
    assert!(
        l.resync_at(t0 + HOUR_MS + 1)
            .await
            .unwrap()
            .actions
            .is_empty()
    );
}

async fn the_contest_end_deletes_everything(b: &Backend) {
    let t0 = clock::unix_now_millis();
    let end = t0 + 10_000;
    let rt = Arc::new(FakeRuntime::default());
    let l = b.listener(&rt, Some(end));
    let a = iref(1, 10);
    let c = iref(2, 11);
    let ghost = iref(3, 12);
    make_running(b, &rt, &l, a, t0).await;
    assert_eq!(
        b.record(a).await.unwrap().expires_at_ms,
        Some(end),
        "capped at the end"
    );
    rt.put(observed(c, Phase::Creating, t0));
    b.deploying(c).await;
    rt.put(ready(ghost, t0));
    l.resync_at(end - 1).await.unwrap();
    assert!(rt.removed().is_empty());

    l.resync_at(end).await.unwrap();
    let mut removed: Vec<_> = rt.removed().iter().map(|r| r.instance).collect();
    removed.sort();
    let mut all = vec![a.instance, c.instance, ghost.instance];
    all.sort();
    assert_eq!(removed, all);
    for id in [a, c] {
        let rec = b.record(id).await.unwrap();
        assert_eq!(rec.state, DeploymentState::Stopped);
        assert_eq!(rec.reason.as_deref(), Some(reasons::CONTEST_ENDED));
        assert_eq!(b.store.quota_usage(id.team).await.unwrap(), 0);
    }
    assert!(b.row(a).await.unwrap().stopped_at_ms.is_some());
    assert!(l.resync_at(end + 1).await.unwrap().actions.is_empty());
}

async fn stuck_instances_fail_with_a_reason_and_are_cleaned(b: &Backend) {
    let t0 = clock::unix_now_millis();
    let rt = Arc::new(FakeRuntime::default());
    let l = b.listener(&rt, None);
    let pulling = iref(1, 10);
    let crashing = iref(2, 10);
    let mut o = observed(pulling, Phase::Creating, t0);
    o.waiting_reason = Some("ImagePullBackOff".to_owned());
    rt.put(o);
    let mut o = observed(crashing, Phase::Started { ready: false }, t0 + 30_001);
    o.waiting_reason = Some("CrashLoopBackOff".to_owned());
    o.restarts = 2;
    rt.put(o.clone());
    b.deploying(pulling).await;
    b.deploying(crashing).await;

    assert!(l.resync_at(t0 + 30_000).await.unwrap().actions.is_empty());
    l.resync_at(t0 + 30_001).await.unwrap();
    let rec = b.record(pulling).await.unwrap();
    assert_eq!(rec.state, DeploymentState::Failed);
    assert_eq!(rec.reason.as_deref(), Some(reasons::IMAGE_PULL));
    assert_eq!(rt.removed(), [pulling]);
    assert_eq!(b.store.quota_usage(pulling.team).await.unwrap(), 0);
    assert_eq!(
        b.record(crashing).await.unwrap().state,
        DeploymentState::Deploying
    );

    o.restarts = 3;
    rt.put(o);
    l.resync_at(t0 + 31_000).await.unwrap();
    let rec = b.record(crashing).await.unwrap();
    assert_eq!(rec.state, DeploymentState::Failed);
    assert_eq!(rec.reason.as_deref(), Some(reasons::CRASH_LOOP));
    assert_eq!(rt.removed(), [pulling, crashing]);
    assert_eq!(l.metrics().snapshot().applied(ActionKind::MarkFailed), 2);
}

async fn a_stopping_record_is_deleted_then_released(b: &Backend) {
    let t0 = clock::unix_now_millis();
    let rt = Arc::new(FakeRuntime::default());
    rt.slow_delete(true);
    let l = b.listener(&rt, None);
    let id = iref(1, 10);
    make_running(b, &rt, &l, id, t0).await;
    // The Deployment Center asks for a stop.
    let running = b.record(id).await.unwrap();
    let stopping = DeploymentRecord {
        state: DeploymentState::Stopping,
        ..running
    };
    assert!(matches!(
        b.store
            .update_deployment(&stopping, Duration::from_secs(300))
            .await
            .unwrap(),
        UpdateOutcome::Updated(_)
    ));

    l.resync_at(t0 + 1_000).await.unwrap();
    assert_eq!(rt.removed(), [id]);
    assert!(rt.get(id.instance).unwrap().terminating);
    assert!(b.row(id).await.unwrap().stopped_at_ms.is_some());
    assert_eq!(b.record(id).await.unwrap().state, DeploymentState::Stopping);
    assert_eq!(
        b.store.quota_usage(id.team).await.unwrap(),
        1,
        "held until gone"
    );

    // Still terminating: nothing more. Gone: released.
    assert!(l.resync_at(t0 + 2_000).await.unwrap().actions.is_empty());
    rt.drop_instance(id.instance);
    l.resync_at(t0 + 3_000).await.unwrap();
    assert_eq!(b.record(id).await, None);
    assert_eq!(b.store.quota_usage(id.team).await.unwrap(), 0);
    assert_eq!(rt.removed(), [id], "removed once");
}

async fn a_lost_record_is_rebuilt_from_the_row_and_the_runtime(b: &Backend) {
    let t0 = clock::unix_now_millis();
    let rt = Arc::new(FakeRuntime::default());
    let l = b.listener(&rt, None);
    let id = iref(1, 10);
    make_running(b, &rt, &l, id, t0).await;
    // The state store loses it (a flushed Redis).
    assert!(
        b.store
            .release_instance(id.team, id.challenge, id.instance)
            .await
            .unwrap()
    );

    let report = l.resync_at(t0 + 1_000).await.unwrap();
    assert_eq!(report.applied.done, 1, "{report:?}");
    let rec = b.record(id).await.unwrap();
    assert_eq!(
        (rec.instance, rec.state),
        (id.instance, DeploymentState::Running)
    );
    assert_eq!(rec.expires_at_ms, Some(t0 + HOUR_MS));
    assert_eq!(rec.route.as_deref(), Some("127.0.0.1:20010"));
    assert!(rt.removed().is_empty());
    assert_eq!(b.store.quota_usage(id.team).await.unwrap(), 1);
    assert!(l.resync_at(t0 + 2_000).await.unwrap().actions.is_empty());
}

async fn a_lost_race_leaves_everything_to_the_next_pass(b: &Backend) {
    let t0 = clock::unix_now_millis();
    let rt = Arc::new(FakeRuntime::default());
    let l = b.listener(&rt, None);
    let id = iref(1, 10);
    make_running(b, &rt, &l, id, t0).await;

    // The listener reads its views and decides the expiry...
    let executor = fctf_workers::listener::Executor {
        runtime: rt.clone(),
        store: b.store.clone(),
        db: b.db.clone(),
        contest: Arc::new(FixedContestWindow(None)),
        metrics: l.metrics(),
    };
    let views = executor.views().await.unwrap();
    let decision = reconcile(&views, &Memory::default(), t0 + HOUR_MS, &Rules::default());
    assert_eq!(decision.actions.len(), 3);
    // ...while the player extends the instance.
    let running = b.record(id).await.unwrap();
    let extended = DeploymentRecord {
        expires_at_ms: Some(t0 + 2 * HOUR_MS),
        ..running
    };
    assert!(matches!(
        b.store
            .update_deployment(&extended, Duration::from_secs(7200))
            .await
            .unwrap(),
        UpdateOutcome::Updated(_)
    ));

    let applied = executor.apply(&decision.actions, t0 + HOUR_MS).await;
    assert_eq!(
        (applied.conflicts, applied.skipped, applied.done),
        (1, 2, 0)
    );
    assert!(rt.removed().is_empty());
    assert_eq!(b.row(id).await.unwrap().stopped_at_ms, None);
    assert_eq!(b.record(id).await.unwrap().state, DeploymentState::Running);

    // The next pass re-reads: the row follows the extension, nothing is deleted.
    let report = l.resync_at(t0 + HOUR_MS).await.unwrap();
    assert_eq!(report.actions.len(), 1);
    assert_eq!(
        b.row(id).await.unwrap().expires_at_ms,
        Some((t0 + 2 * HOUR_MS) as i64)
    );
}

async fn a_failed_remove_is_retried_on_the_next_pass(b: &Backend) {
    let t0 = clock::unix_now_millis();
    let rt = Arc::new(FakeRuntime::default());
    let l = b.listener(&rt, None);
    let id = iref(1, 10);
    make_running(b, &rt, &l, id, t0).await;
    rt.fail_remove(true);
    let report = l.resync_at(t0 + HOUR_MS).await.unwrap();
    assert_eq!(
        (report.applied.errors, report.applied.done),
        (1, 2),
        "{report:?}"
    );
    // The decision stands: the record says Stopped and the row is closed.
    assert_eq!(b.record(id).await.unwrap().state, DeploymentState::Stopped);
    assert!(b.row(id).await.unwrap().stopped_at_ms.is_some());
    assert!(rt.get(id.instance).is_some());
    assert_eq!(l.metrics().snapshot().errors, 1);

    rt.fail_remove(false);
    l.resync_at(t0 + HOUR_MS + 30_000).await.unwrap();
    assert!(rt.get(id.instance).is_none());
    assert_eq!(rt.removed(), [id]);
}

async fn a_pod_seen_before_its_record_is_kept(b: &Backend) {
    let t0 = clock::unix_now_millis();
    let rt = Arc::new(FakeRuntime::default());
    let l = b.listener(&rt, None);
    let id = iref(1, 10);
    // The deploy race: the runtime shows the instance before the listener reads its record.
    rt.put(observed(id, Phase::Creating, t0));
    assert!(l.resync_at(t0).await.unwrap().actions.is_empty());
    rt.put(ready(id, t0 + 20_000));
    assert!(l.resync_at(t0 + 30_000).await.unwrap().actions.is_empty());
    b.deploying(id).await;
    l.resync_at(t0 + 61_000).await.unwrap();
    assert!(rt.removed().is_empty());
    assert_eq!(b.record(id).await.unwrap().state, DeploymentState::Running);
    assert!(l.memory().ghosts_first_seen.is_empty());
}

#[test]
fn hints_of_one_instance_always_go_to_the_same_shard() {
    let ids: Vec<_> = (0..500).map(|k| iref(k, 10)).collect();
    let mut used = std::collections::BTreeSet::new();
    for id in &ids {
        let shard = fctf_workers::listener::shard_of(id, 8);
        assert!(shard < 8);
        assert_eq!(shard, fctf_workers::listener::shard_of(id, 8));
        used.insert(shard);
    }
    assert_eq!(used.len(), 8, "500 instances spread over every shard");
}

/// Hints from a channel the test feeds.
#[derive(Debug)]
struct ChannelFeed(Mutex<Option<mpsc::UnboundedReceiver<InstanceRef>>>);

impl ChangeFeed for ChannelFeed {
    fn changes(&self) -> BoxStream<'static, InstanceRef> {
        let rx = self.0.lock().unwrap().take().expect("one subscription");
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|id| (id, rx))
        }))
    }
}

/// Polls `check` every 20 ms for up to 10 s (a bound on a hang, not a speed assertion).
pub async fn eventually<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not reached in 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_converges_by_resync_alone() {
    let b = Backend::memory_sqlite().await;
    let rt = Arc::new(FakeRuntime::default());
    let id = iref(1, 10);
    let config = fctf_core::config::ListenerConfig {
        resync_secs: 1,
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(fctf_workers::listener::run(
        rt.clone(),
        b.store.clone(),
        b.db.clone(),
        Arc::new(FixedContestWindow(None)) as Arc<dyn ContestWindow>,
        None,
        config,
        async move {
            let _ = stopped.await;
        },
    ));
    // It comes up after the loop's first pass: only a later resync can see it.
    eventually(|| async { rt.snapshots() >= 1 }).await;
    rt.put(ready(id, clock::unix_now_millis()));
    b.deploying(id).await;
    eventually(|| async {
        b.record(id)
            .await
            .is_some_and(|r| r.state == DeploymentState::Running)
    })
    .await;
    assert!(b.row(id).await.is_some());
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hint_reconciles_its_instance_between_resyncs() {
    let b = Backend::memory_sqlite().await;
    let rt = Arc::new(FakeRuntime::default());
    let (hints, rx) = mpsc::unbounded_channel();
    let feed: Arc<dyn ChangeFeed> = Arc::new(ChannelFeed(Mutex::new(Some(rx))));
    let listener = Arc::new(b.listener(&rt, None));
    let metrics = listener.metrics();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(listener.clone().run(
        Some(feed),
        Duration::from_secs(3600),
        4,
        async move {
            let _ = stopped.await;
        },
    ));
    eventually(|| async { metrics.snapshot().passes_full == 1 }).await;

    let ids: Vec<_> = (0..8).map(|k| iref(k + 1, 10)).collect();
    for id in &ids {
        rt.put(ready(*id, clock::unix_now_millis()));
        b.deploying(*id).await;
        hints.send(*id).unwrap();
    }
    for id in &ids {
        eventually(|| async {
            b.record(*id)
                .await
                .is_some_and(|r| r.state == DeploymentState::Running)
        })
        .await;
    }
    let m = metrics.snapshot();
    assert_eq!(m.passes_full, 1, "the hints did it, not a resync");
    assert_eq!(m.hints, 8);
    assert!(m.passes_instance >= 1);
    assert_eq!(m.applied(ActionKind::MarkRunning), 8);
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_hints_over_many_instances_end_in_the_state_of_the_world() {
    let b = Backend::memory_sqlite().await;
    let rt = Arc::new(FakeRuntime::default());
    let (hints, rx) = mpsc::unbounded_channel();
    let feed: Arc<dyn ChangeFeed> = Arc::new(ChannelFeed(Mutex::new(Some(rx))));
    let listener = Arc::new(b.listener(&rt, None));
    let metrics = listener.metrics();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(listener.clone().run(
        Some(feed),
        Duration::from_secs(3600),
        8,
        async move {
            let _ = stopped.await;
        },
    ));
    eventually(|| async { metrics.snapshot().passes_full == 1 }).await;

    // 200 instances, 10 hints each, interleaved; half of them are stopped after the 5th round.
    let ids: Vec<_> = (0..200).map(|k| iref(k + 1, 10)).collect();
    for id in &ids {
        rt.put(ready(*id, clock::unix_now_millis()));
        b.deploying(*id).await;
    }
    for round in 0..10 {
        for (k, id) in ids.iter().enumerate() {
            if round == 5 && k % 2 == 0 {
                // Stopped: gone from the runtime, the record Stopping (retried until the
                // write wins over a pass that marks it Running meanwhile).
                rt.drop_instance(id.instance);
                loop {
                    let rec = b.record(*id).await.unwrap();
                    let stopping = DeploymentRecord {
                        state: DeploymentState::Stopping,
                        ..rec
                    };
                    let written = b
                        .store
                        .update_deployment(&stopping, Duration::from_secs(300))
                        .await
                        .unwrap();
                    if matches!(written, UpdateOutcome::Updated(_)) {
                        break;
                    }
                }
            }
            hints.send(*id).unwrap();
        }
    }
    // The last hint of each instance is followed by a pass that sees the final world.
    for (k, id) in ids.iter().enumerate() {
        if k % 2 == 1 {
            eventually(|| async {
                b.record(*id)
                    .await
                    .is_some_and(|r| r.state == DeploymentState::Running)
            })
            .await;
        } else {
            eventually(|| async { b.record(*id).await.is_none() }).await;
        }
    }
    let m = metrics.snapshot();
    assert_eq!(m.hints, 2000);
    assert_eq!(m.hints_dropped, 0);
    assert_eq!(m.passes_full, 1);
    stop.send(()).unwrap();
    task.await.unwrap();
}
