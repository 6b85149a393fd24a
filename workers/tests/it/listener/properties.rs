//! Properties of the decision function over random views (TEST-PLAN T67): safety of every
//! single pass, and convergence of repeated passes against a model of the three stores.

use std::collections::BTreeSet;
use std::time::Duration;

use fctf_core::db::tracking::TrackingRow;
use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_core::runtime::{InstanceRef, Observed, Phase};
use fctf_core::store::{DeploymentRecord, DeploymentState};
use fctf_workers::listener::decision::{Cause, reasons};
use fctf_workers::listener::{Action, Memory, Scope, Views, reconcile};
use proptest::prelude::*;

use super::support::{T0, rules};

const NOW: u64 = T0;
/// Instances per case; instance k lives in slot (team k % 3 + 1, challenge 10), so two
/// instances can compete for one slot.
const POOL: u128 = 6;

fn id_of(k: u128) -> InstanceRef {
    InstanceRef {
        team: TeamId(i64::try_from(k % 3).unwrap() + 1),
        challenge: ChallengeId(10),
        instance: InstanceId(uuid::Uuid::from_u128(k + 1)),
    }
}

fn at(offset: i64) -> u64 {
    NOW.checked_add_signed(offset).unwrap()
}

const STATES: [DeploymentState; 6] = [
    DeploymentState::Queued,
    DeploymentState::Deploying,
    DeploymentState::Running,
    DeploymentState::Stopping,
    DeploymentState::Stopped,
    DeploymentState::Failed,
];

const WAITING: [Option<&str>; 4] = [
    None,
    Some("ImagePullBackOff"),
    Some("CrashLoopBackOff"),
    Some("ContainerCreating"),
];

/// Offsets from now that straddle every threshold of the default rules.
fn offset() -> impl Strategy<Value = i64> {
    prop_oneof![
        -400_000_i64..400_000,
        prop::sample::select(vec![
            -300_001, -300_000, -180_001, -180_000, -60_001, -60_000, -59_999, -30_001, -30_000, 0,
            1,
        ]),
    ]
}

fn observation(k: u128) -> impl Strategy<Value = Observed> {
    (
        0_usize..5,
        0_u32..5,
        0_usize..4,
        offset(),
        offset(),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.9),
    )
        .prop_map(
            move |(phase, restarts, waiting, created, since, terminating, routed)| {
                let phase = match phase {
                    0 => Phase::Creating,
                    1 => Phase::Started { ready: false },
                    2 => Phase::Started { ready: true },
                    3 => Phase::Ended {
                        succeeded: restarts % 2 == 0,
                    },
                    _ => Phase::Failed,
                };
                let created = at(created.min(0));
                Observed {
                    id: id_of(k),
                    route: routed.then(|| format!("route-{k}")),
                    phase,
                    restarts,
                    waiting_reason: WAITING[waiting].map(str::to_owned),
                    created_at_ms: created,
                    phase_since_ms: at(since.min(0)).max(created),
                    lifetime: Duration::from_secs(3600),
                    terminating,
                }
            },
        )
}

fn stored_record(k: u128) -> impl Strategy<Value = DeploymentRecord> {
    (0_usize..6, 1_u64..5, offset()).prop_map(move |(state, version, expires)| {
        let id = id_of(k);
        let state = STATES[state];
        DeploymentRecord {
            team: id.team,
            challenge: id.challenge,
            instance: id.instance,
            state,
            version,
            route: Some(format!("route-{k}")),
            reason: None,
            created_at_ms: at(-500_000),
            updated_at_ms: at(-400_000),
            expires_at_ms: (state == DeploymentState::Running
                || state == DeploymentState::Stopping)
                .then(|| at(expires)),
        }
    })
}

fn open_row(k: u128) -> impl Strategy<Value = TrackingRow> {
    offset().prop_map(move |expires| {
        let id = id_of(k);
        TrackingRow {
            instance: id.instance,
            team: id.team,
            challenge: id.challenge,
            route: Some(format!("route-{k}")),
            started_at_ms: i64::try_from(at(-500_000)).unwrap(),
            expires_at_ms: Some(i64::try_from(at(expires)).unwrap()),
            stopped_at_ms: None,
            stop_reason: None,
        }
    })
}

#[derive(Clone, Debug)]
struct World {
    views: Views,
    memory: Memory,
}

fn world() -> impl Strategy<Value = World> {
    let per_instance = (0..POOL)
        .map(|k| {
            (
                prop::option::of(observation(k)),
                prop::option::of(stored_record(k)),
                prop::option::of(open_row(k)),
                prop::option::of(-120_000_i64..=0),
                prop::bool::weighted(0.3),
            )
        })
        .collect::<Vec<_>>();
    (
        per_instance,
        prop::option::weighted(0.2, -10_000_i64..10_000),
    )
        .prop_map(|(instances, contest_end)| {
            let mut views = Views {
                observed: Vec::new(),
                records: Vec::new(),
                rows: Vec::new(),
                contest_ends_at_ms: contest_end.map(at),
                scope: Scope::All,
            };
            let mut memory = Memory::default();
            for (k, (obs, rec, row, first_seen, strike)) in instances.into_iter().enumerate() {
                let id = id_of(u128::try_from(k).unwrap());
                views.observed.extend(obs);
                // One record per slot, as the store keys them.
                if let Some(rec) = rec
                    && !views
                        .records
                        .iter()
                        .any(|r| (r.team, r.challenge) == (rec.team, rec.challenge))
                {
                    views.records.push(rec);
                }
                views.rows.extend(row);
                if let Some(first) = first_seen {
                    memory.ghosts_first_seen.insert(id.instance, at(first));
                }
                if strike {
                    memory.missing_strikes.insert(id.instance, 1);
                }
            }
            World { views, memory }
        })
}

/// The three stores as the executor changes them (store CAS included).
fn apply(views: &mut Views, actions: &[Action]) {
    for action in actions {
        match action {
            Action::Update { record, .. } => {
                if let Some(stored) = views
                    .records
                    .iter_mut()
                    .find(|r| r.instance == record.instance && r.version == record.version)
                {
                    *stored = DeploymentRecord {
                        version: record.version + 1,
                        ..record.clone()
                    };
                }
            }
            Action::Restore { record, .. } => {
                if !views
                    .records
                    .iter()
                    .any(|r| (r.team, r.challenge) == (record.team, record.challenge))
                {
                    views.records.push(record.clone());
                }
            }
            Action::Remove { id, .. } => views.observed.retain(|o| o.id.instance != id.instance),
            Action::Release { instance, .. } => views.records.retain(|r| r.instance != *instance),
            Action::OpenRow(row) => {
                if !views.rows.iter().any(|r| r.instance == row.instance) {
                    views.rows.push(row.clone());
                }
            }
            Action::ExtendRow {
                instance,
                expires_at_ms,
            } => {
                for row in views.rows.iter_mut().filter(|r| r.instance == *instance) {
                    row.expires_at_ms = Some(*expires_at_ms);
                }
            }
            Action::CloseRow { instance, .. } => views.rows.retain(|r| r.instance != *instance),
        }
    }
}

fn ids_in(views: &Views) -> BTreeSet<InstanceId> {
    views
        .observed
        .iter()
        .map(|o| o.id.instance)
        .chain(views.records.iter().map(|r| r.instance))
        .chain(views.rows.iter().map(|r| r.instance))
        .collect()
}

fn check_one_pass(w: &World) -> Result<(), TestCaseError> {
    let rules = rules();
    let v = &w.views;
    let d = reconcile(v, &w.memory, NOW, &rules);
    prop_assert_eq!(&d, &reconcile(v, &w.memory, NOW, &rules), "deterministic");
    let ids = ids_in(v);
    let contest_over = v.contest_ends_at_ms.is_some_and(|end| NOW >= end);
    for action in &d.actions {
        let x = action.instance();
        prop_assert!(
            ids.contains(&x),
            "action on an unknown instance: {:?}",
            action
        );
        let obs = v.observed.iter().find(|o| o.id.instance == x);
        let rec = v.records.iter().find(|r| r.instance == x);
        match action {
            Action::Update { record, .. } => {
                let read = rec.unwrap();
                prop_assert_eq!(
                    (read.team, read.challenge, read.instance, read.version),
                    (
                        record.team,
                        record.challenge,
                        record.instance,
                        record.version
                    ),
                    "an update is a CAS on exactly the record read"
                );
            }
            Action::Restore { record, .. } => {
                prop_assert!(
                    !v.records
                        .iter()
                        .any(|r| (r.team, r.challenge) == (record.team, record.challenge)),
                    "restore only into an empty slot"
                );
            }
            Action::Remove { cause, .. } => {
                let o = obs.unwrap();
                prop_assert!(!o.terminating, "no second delete of a terminating instance");
                let healthy = o.phase == (Phase::Started { ready: true })
                    && rec.is_some_and(|r| {
                        r.state == DeploymentState::Running
                            && r.expires_at_ms.is_some_and(|e| e > NOW)
                    });
                prop_assert!(
                    !healthy || contest_over,
                    "deleted a healthy Running instance: {:?}",
                    action
                );
                if *cause == Cause::Ghost {
                    let grace = rules.ghost_grace_ms;
                    let first = w.memory.ghosts_first_seen.get(&x).copied().unwrap_or(NOW);
                    prop_assert!(NOW >= o.created_at_ms + grace && NOW >= first + grace);
                }
            }
            _ => {}
        }
        // Live provisional state within every grace is never ended (the contest aside).
        if let (Some(o), Some(r)) = (obs, rec)
            && matches!(
                r.state,
                DeploymentState::Queued | DeploymentState::Deploying
            )
            && matches!(o.phase, Phase::Creating | Phase::Started { .. })
            && o.restarts <= rules.crash_restarts
            && NOW - o.phase_since_ms <= rules.image_pull_grace_ms
            && !contest_over
        {
            prop_assert!(
                !action.is_destructive(),
                "ended provisional state: {:?}",
                action
            );
        }
        // Nothing missing is ended before its last strike.
        let strike_based = match action {
            Action::CloseRow { cause, .. } => *cause == Cause::Orphan,
            Action::Update { record, .. } => record.reason.as_deref() == Some(reasons::VANISHED),
            _ => false,
        };
        if strike_based {
            let before = w.memory.missing_strikes.get(&x).copied().unwrap_or(0);
            prop_assert!(
                before + 1 >= rules.orphan_strikes,
                "acted on absence {} of {}: {:?}",
                before + 1,
                rules.orphan_strikes,
                action
            );
        }
    }
    Ok(())
}

fn check_convergence(w: &World) -> Result<(), TestCaseError> {
    let rules = rules();
    let mut views = w.views.clone();
    let first = reconcile(&views, &w.memory, NOW, &rules);

    // Applying a decision twice is applying it once.
    let mut once = views.clone();
    apply(&mut once, &first.actions);
    let mut twice = once.clone();
    apply(&mut twice, &first.actions);
    prop_assert_eq!(&once, &twice);

    views = once;
    let second = reconcile(&views, &first.memory, NOW, &rules);
    let done: BTreeSet<_> = first
        .actions
        .iter()
        .map(|a| (a.kind(), a.instance()))
        .collect();
    for action in second.actions.iter().filter(|a| a.is_destructive()) {
        prop_assert!(
            !done.contains(&(action.kind(), action.instance())),
            "repeated: {:?}",
            action
        );
        // The only destructive follow-ups: releasing a Stopping record once its instance is
        // gone, and a strike reaching its count.
        let follow_up = match action {
            Action::Release { .. } => true,
            Action::CloseRow { cause, .. } | Action::Update { cause, .. } => {
                matches!(cause, Cause::Orphan | Cause::Vanished)
            }
            _ => false,
        };
        prop_assert!(follow_up, "new destructive action on pass 2: {:?}", action);
    }

    // Converged within orphan_strikes + 1 passes.
    apply(&mut views, &second.actions);
    let mut memory = second.memory;
    for _ in 0..rules.orphan_strikes {
        let d = reconcile(&views, &memory, NOW, &rules);
        apply(&mut views, &d.actions);
        memory = d.memory;
    }
    let last = reconcile(&views, &memory, NOW, &rules);
    prop_assert!(last.actions.is_empty(), "not converged: {:?}", last.actions);
    Ok(())
}

/// A hint pass for instance `k` acts on `k` alone, agrees with the full pass about `k` (strikes
/// aside), and carries every other instance's memory.
fn check_hint_pass(w: &World, k: u128) -> Result<(), TestCaseError> {
    let rules = rules();
    let x = id_of(k).instance;
    let mut hinted = w.views.clone();
    hinted.scope = Scope::instance(x);
    let d = reconcile(&hinted, &w.memory, NOW, &rules);
    prop_assert!(
        d.actions.iter().all(|a| a.instance() == x),
        "{:?}",
        d.actions
    );
    let mut others = w.memory.clone();
    others.ghosts_first_seen.remove(&x);
    others.missing_strikes.remove(&x);
    let mut carried = d.memory.clone();
    carried.ghosts_first_seen.remove(&x);
    carried.missing_strikes.remove(&x);
    prop_assert_eq!(carried, others);
    prop_assert!(d.memory.missing_strikes.get(&x) <= w.memory.missing_strikes.get(&x));
    let full: Vec<_> = reconcile(&w.views, &w.memory, NOW, &rules)
        .actions
        .into_iter()
        .filter(|a| a.instance() == x)
        .filter(|a| {
            !matches!(
                a,
                Action::CloseRow {
                    cause: Cause::Orphan | Cause::Vanished,
                    ..
                } | Action::Update {
                    cause: Cause::Vanished,
                    ..
                }
            )
        })
        .collect();
    prop_assert_eq!(d.actions, full);
    Ok(())
}

proptest! {
    // Failures are reported, not written into the source tree.
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_pass_is_safe(w in world()) {
        check_one_pass(&w)?;
    }

    #[test]
    fn repeated_passes_converge_without_repeating(w in world()) {
        check_convergence(&w)?;
    }

    #[test]
    fn a_hint_pass_stays_on_its_instance(w in world(), k in 0..POOL) {
        check_hint_pass(&w, k)?;
    }
}
