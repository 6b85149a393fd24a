//! The decision function, one rule at a time, at the boundary times of each.

use std::time::Duration;

use fctf_core::runtime::Phase;
use fctf_core::store::DeploymentState;
use fctf_workers::listener::decision::{Cause, Stuck, reasons};
use fctf_workers::listener::{Action, Decision, Memory, Scope, reconcile};

use super::support::*;

fn kinds(d: &Decision) -> Vec<&'static str> {
    d.actions.iter().map(|a| a.kind().name()).collect()
}

fn updated_state(d: &Decision) -> Option<(DeploymentState, Option<String>)> {
    d.actions.iter().find_map(|a| match a {
        Action::Update { record, .. } => Some((record.state, record.reason.clone())),
        _ => None,
    })
}

#[test]
fn deploying_and_ready_becomes_running_with_a_row() {
    let id = iref(1, 10);
    let v = views(
        vec![ready(id, T0 - 5_000)],
        vec![record(id, DeploymentState::Deploying, 2)],
        vec![],
    );
    let d = reconcile(&v, &Memory::default(), T0, &rules());
    assert_eq!(kinds(&d), ["mark_running", "open_row"]);
    let Action::Update {
        record: written,
        ttl,
        cause,
    } = &d.actions[0]
    else {
        panic!()
    };
    assert_eq!(*cause, Cause::Ready);
    assert_eq!(written.version, 2, "a CAS on the version read");
    assert_eq!(written.instance, id.instance);
    assert_eq!(written.expires_at_ms, Some(T0 + 3_600_000));
    assert_eq!(written.route.as_deref(), Some("127.0.0.1:20010"));
    assert_eq!(*ttl, LIFETIME + rules().running_ttl_margin);
    let Action::OpenRow(opened) = &d.actions[1] else {
        panic!()
    };
    assert_eq!(opened.started_at_ms, T0 as i64);
    assert_eq!(opened.expires_at_ms, Some((T0 + 3_600_000) as i64));

    // Not ready yet, or ready with no route anywhere: wait.
    let mut not_ready = views(
        vec![observed(id, Phase::Started { ready: false }, T0 - 5_000)],
        vec![record(id, DeploymentState::Deploying, 2)],
        vec![],
    );
    assert!(
        reconcile(&not_ready, &Memory::default(), T0, &rules())
            .actions
            .is_empty()
    );
    not_ready.observed[0].phase = Phase::Started { ready: true };
    not_ready.observed[0].route = None;
    assert!(
        reconcile(&not_ready, &Memory::default(), T0, &rules())
            .actions
            .is_empty()
    );
}

#[test]
fn running_expiry_never_passes_the_contest_end() {
    let id = iref(1, 10);
    let mut v = views(
        vec![ready(id, T0 - 5_000)],
        vec![record(id, DeploymentState::Queued, 1)],
        vec![],
    );
    v.contest_ends_at_ms = Some(T0 + 600_000);
    let d = reconcile(&v, &Memory::default(), T0, &rules());
    let Action::Update { record, .. } = &d.actions[0] else {
        panic!()
    };
    assert_eq!(record.state, DeploymentState::Running);
    assert_eq!(record.expires_at_ms, Some(T0 + 600_000));
}

/// Runs the stuck rules on a Deploying instance observed as `o` at `now`.
fn stuck_at(o: fctf_core::runtime::Observed, now: u64) -> Decision {
    let v = views(
        vec![o.clone()],
        vec![record(o.id, DeploymentState::Deploying, 3)],
        vec![],
    );
    reconcile(&v, &Memory::default(), now, &rules())
}

fn assert_failed(d: &Decision, stuck: Stuck) {
    assert_eq!(kinds(d), ["mark_failed", "remove"], "{d:?}");
    assert_eq!(
        updated_state(d),
        Some((DeploymentState::Failed, Some(stuck.reason().to_owned())))
    );
    assert!(matches!(
        d.actions[1],
        Action::Remove { cause: Cause::Stuck(s), .. } if s == stuck
    ));
}

#[test]
fn image_pull_errors_fail_past_30_seconds() {
    let id = iref(1, 10);
    for reason in ["ImagePullBackOff", "ErrImagePull"] {
        let mut o = observed(id, Phase::Creating, T0);
        o.waiting_reason = Some(reason.to_owned());
        assert!(stuck_at(o.clone(), T0 + 30_000).actions.is_empty());
        assert_failed(&stuck_at(o, T0 + 30_001), Stuck::ImagePull);
    }
}

#[test]
fn crash_loops_fail_past_2_restarts() {
    let id = iref(1, 10);
    let mut o = observed(id, Phase::Started { ready: false }, T0);
    o.waiting_reason = Some("CrashLoopBackOff".to_owned());
    o.restarts = 2;
    assert!(stuck_at(o.clone(), T0 + 1_000).actions.is_empty());
    o.restarts = 3;
    assert_failed(&stuck_at(o.clone(), T0 + 1_000), Stuck::CrashLoop);
    // Restarted but serving again: not stuck.
    o.phase = Phase::Started { ready: true };
    assert_eq!(
        kinds(&stuck_at(o, T0 + 1_000)),
        ["mark_running", "open_row"]
    );
}

#[test]
fn creating_fails_past_300_seconds() {
    let o = observed(iref(1, 10), Phase::Creating, T0);
    assert!(stuck_at(o.clone(), T0 + 300_000).actions.is_empty());
    assert_failed(&stuck_at(o, T0 + 300_001), Stuck::Creating);
}

#[test]
fn not_ready_fails_past_180_seconds() {
    let o = observed(iref(1, 10), Phase::Started { ready: false }, T0);
    assert!(stuck_at(o.clone(), T0 + 180_000).actions.is_empty());
    assert_failed(&stuck_at(o, T0 + 180_001), Stuck::NotReady);
}

#[test]
fn a_running_instance_that_stops_being_ready_is_failed_with_its_row_closed() {
    let id = iref(1, 10);
    let v = views(
        vec![observed(id, Phase::Started { ready: false }, T0)],
        vec![running(id, 4, T0 + 3_600_000)],
        vec![row(id, T0 - 60_000, T0 + 3_600_000)],
    );
    assert!(
        reconcile(&v, &Memory::default(), T0 + 180_000, &rules())
            .actions
            .is_empty()
    );
    let d = reconcile(&v, &Memory::default(), T0 + 180_001, &rules());
    assert_eq!(kinds(&d), ["mark_failed", "remove", "close_row"]);
}

#[test]
fn a_ghost_is_deleted_only_after_the_grace_period() {
    let id = iref(1, 10);
    let v = views(vec![ready(id, T0 - 3_600_000)], vec![], vec![]);
    let first = reconcile(&v, &Memory::default(), T0, &rules());
    assert!(first.actions.is_empty());
    assert_eq!(first.memory.ghosts_first_seen.get(&id.instance), Some(&T0));

    let early = reconcile(&v, &first.memory, T0 + 59_999, &rules());
    assert!(early.actions.is_empty());
    assert_eq!(early.memory, first.memory, "first seen is kept, not moved");

    let due = reconcile(&v, &first.memory, T0 + 60_000, &rules());
    assert_eq!(
        due.actions,
        [Action::Remove {
            id,
            cause: Cause::Ghost
        }]
    );

    // A restarted listener (empty memory) waits a whole grace period again.
    assert!(
        reconcile(&v, &Memory::default(), T0 + 60_000, &rules())
            .actions
            .is_empty()
    );

    // A pod younger than the grace period is never a ghost yet, whatever the memory says.
    let young = views(vec![ready(id, T0 + 30_000)], vec![], vec![]);
    assert!(
        reconcile(&young, &first.memory, T0 + 60_000, &rules())
            .actions
            .is_empty()
    );
    let d = reconcile(&young, &first.memory, T0 + 90_000, &rules());
    assert_eq!(kinds(&d), ["remove_ghost"]);

    // Gone: forgotten.
    let gone = views(vec![], vec![], vec![]);
    assert_eq!(
        reconcile(&gone, &first.memory, T0 + 1, &rules()).memory,
        Memory::default()
    );
}

#[test]
fn an_orphan_row_is_closed_on_the_second_consecutive_strike_only() {
    let id = iref(1, 10);
    let v = views(vec![], vec![], vec![row(id, T0 - 60_000, T0 + 60_000)]);
    let first = reconcile(&v, &Memory::default(), T0, &rules());
    assert!(first.actions.is_empty());
    assert_eq!(first.memory.missing_strikes.get(&id.instance), Some(&1));
    let second = reconcile(&v, &first.memory, T0 + 30_000, &rules());
    assert_eq!(
        second.actions,
        [Action::CloseRow {
            instance: id.instance,
            reason: reasons::ROW_ORPHAN,
            cause: Cause::Orphan
        }]
    );

    // A pass that sees the instance breaks the streak.
    let back = views(
        vec![ready(id, T0 - 60_000)],
        vec![running(id, 2, T0 + 60_000)],
        vec![row(id, T0 - 60_000, T0 + 60_000)],
    );
    let seen = reconcile(&back, &first.memory, T0 + 30_000, &rules());
    assert!(seen.memory.missing_strikes.is_empty());
    assert!(
        reconcile(&v, &seen.memory, T0 + 60_000, &rules())
            .actions
            .is_empty()
    );

    // A hint pass neither counts a strike nor drops one.
    let mut hinted = v.clone();
    hinted.scope = Scope::instance(id.instance);
    let h = reconcile(&hinted, &first.memory, T0 + 1, &rules());
    assert!(h.actions.is_empty());
    assert_eq!(h.memory, first.memory);
}

#[test]
fn a_running_instance_missing_twice_is_stopped() {
    let id = iref(1, 10);
    let v = views(
        vec![],
        vec![running(id, 5, T0 + 3_600_000)],
        vec![row(id, T0 - 60_000, T0 + 3_600_000)],
    );
    let first = reconcile(&v, &Memory::default(), T0, &rules());
    assert!(first.actions.is_empty());
    let second = reconcile(&v, &first.memory, T0 + 30_000, &rules());
    assert_eq!(kinds(&second), ["mark_stopped", "close_row"]);
    assert_eq!(
        updated_state(&second),
        Some((DeploymentState::Stopped, Some(reasons::VANISHED.to_owned())))
    );
    // Deploying and Queued records wait for their instance (their provisional TTL bounds them).
    let waiting = views(
        vec![],
        vec![record(id, DeploymentState::Deploying, 2)],
        vec![],
    );
    let d = reconcile(&waiting, &first.memory, T0, &rules());
    assert!(d.actions.is_empty() && d.memory.missing_strikes.is_empty());
}

#[test]
fn an_old_instance_never_touches_the_newer_record_of_its_slot() {
    let old = iref(1, 10);
    let new = fctf_core::runtime::InstanceRef {
        instance: fctf_core::ids::InstanceId::new(),
        ..old
    };
    // The old instance is ready, the slot's record is the new one's, still Deploying.
    let v = views(
        vec![ready(old, T0 - 600_000)],
        vec![record(new, DeploymentState::Deploying, 2)],
        vec![row(old, T0 - 600_000, T0 + 600_000)],
    );
    let d = reconcile(&v, &Memory::default(), T0, &rules());
    assert!(d.actions.is_empty(), "{d:?}");
    // Past the grace it goes as a ghost, with its own row; the new record is never written.
    let d = reconcile(&v, &d.memory, T0 + 60_000, &rules());
    assert_eq!(kinds(&d), ["remove_ghost", "close_row"]);
    assert!(d.actions.iter().all(|a| a.instance() == old.instance));
}

#[test]
fn an_expired_instance_is_stopped_deleted_and_its_row_closed() {
    let id = iref(1, 10);
    let at = T0 + 1_000;
    let v = views(
        vec![ready(id, T0 - 600_000)],
        vec![running(id, 3, at)],
        vec![row(id, T0 - 600_000, at)],
    );
    assert!(
        reconcile(&v, &Memory::default(), at - 1, &rules())
            .actions
            .is_empty()
    );
    let d = reconcile(&v, &Memory::default(), at, &rules());
    assert_eq!(kinds(&d), ["mark_stopped", "remove", "close_row"]);
    assert_eq!(
        updated_state(&d),
        Some((DeploymentState::Stopped, Some(reasons::EXPIRED.to_owned())))
    );
    let Action::Update { ttl, .. } = &d.actions[0] else {
        panic!()
    };
    assert_eq!(*ttl, rules().terminal_record_ttl);
}

#[test]
fn the_contest_end_deletes_everything() {
    let a = iref(1, 10);
    let b = iref(2, 10);
    let ghost = iref(3, 10);
    let queued = iref(4, 10);
    let mut v = views(
        vec![
            ready(a, T0 - 600_000),
            observed(b, Phase::Creating, T0),
            ready(ghost, T0),
        ],
        vec![
            running(a, 3, T0 + 3_600_000),
            record(b, DeploymentState::Deploying, 2),
            record(queued, DeploymentState::Queued, 1),
        ],
        vec![row(a, T0 - 600_000, T0 + 3_600_000)],
    );
    v.contest_ends_at_ms = Some(T0 + 1);
    assert!(
        reconcile(&v, &Memory::default(), T0, &rules())
            .actions
            .is_empty()
    );
    v.contest_ends_at_ms = Some(T0);
    let d = reconcile(&v, &Memory::default(), T0, &rules());
    let removed: Vec<_> = d
        .actions
        .iter()
        .filter_map(|x| match x {
            Action::Remove { id, cause } => {
                assert_eq!(*cause, Cause::ContestEnded);
                Some(id.instance)
            }
            _ => None,
        })
        .collect();
    assert_eq!(removed.len(), 3);
    for id in [a, b, ghost] {
        assert!(removed.contains(&id.instance));
    }
    let stopped = d
        .actions
        .iter()
        .filter(|x| matches!(x, Action::Update { record, .. } if record.state == DeploymentState::Stopped && record.reason.as_deref() == Some(reasons::CONTEST_ENDED)))
        .count();
    assert_eq!(stopped, 3, "a, b and the queued record");
    assert!(d.actions.contains(&Action::CloseRow {
        instance: a.instance,
        reason: reasons::CONTEST_ENDED,
        cause: Cause::ContestEnded
    }));
}

#[test]
fn a_stopping_record_is_deleted_then_released() {
    let id = iref(1, 10);
    let mut v = views(
        vec![ready(id, T0 - 600_000)],
        vec![record(id, DeploymentState::Stopping, 4)],
        vec![row(id, T0 - 600_000, T0 + 600_000)],
    );
    let d = reconcile(&v, &Memory::default(), T0, &rules());
    assert_eq!(kinds(&d), ["remove", "close_row"]);
    // Being deleted: nothing more until it is gone.
    v.observed[0].terminating = true;
    v.rows.clear();
    assert!(
        reconcile(&v, &Memory::default(), T0, &rules())
            .actions
            .is_empty()
    );
    v.observed.clear();
    let d = reconcile(&v, &Memory::default(), T0, &rules());
    assert_eq!(
        d.actions,
        [Action::Release {
            team: id.team,
            challenge: id.challenge,
            instance: id.instance
        }]
    );
}

#[test]
fn a_stopped_or_failed_record_gets_its_instance_deleted_at_once() {
    let id = iref(1, 10);
    for state in [DeploymentState::Stopped, DeploymentState::Failed] {
        let v = views(
            vec![ready(id, T0)],
            vec![record(id, state, 4)],
            vec![row(id, T0, T0 + 600_000)],
        );
        let d = reconcile(&v, &Memory::default(), T0, &rules());
        assert_eq!(kinds(&d), ["remove", "close_row"]);
    }
}

#[test]
fn an_instance_that_ended_on_its_own_is_recorded_and_cleaned() {
    let id = iref(1, 10);
    let cases = [
        (
            DeploymentState::Running,
            Phase::Ended { succeeded: true },
            DeploymentState::Stopped,
            reasons::EXITED,
        ),
        (
            DeploymentState::Running,
            Phase::Ended { succeeded: false },
            DeploymentState::Failed,
            reasons::CRASHED,
        ),
        (
            DeploymentState::Running,
            Phase::Failed,
            DeploymentState::Failed,
            reasons::CRASHED,
        ),
        (
            DeploymentState::Deploying,
            Phase::Ended { succeeded: true },
            DeploymentState::Failed,
            reasons::START_FAILED,
        ),
    ];
    for (state, phase, want, reason) in cases {
        let mut rec = running(id, 3, T0 + 600_000);
        rec.state = state;
        let v = views(vec![observed(id, phase, T0)], vec![rec], vec![]);
        let d = reconcile(&v, &Memory::default(), T0, &rules());
        assert_eq!(updated_state(&d), Some((want, Some(reason.to_owned()))));
        assert!(matches!(
            d.actions[1],
            Action::Remove {
                cause: Cause::Ended,
                ..
            }
        ));
    }
}

#[test]
fn an_instance_its_runtime_ended_at_its_deadline_is_expired_not_crashed() {
    let id = iref(1, 10);
    let mut o = observed(id, Phase::Ended { succeeded: false }, T0);
    o.waiting_reason = Some(fctf_workers::listener::decision::DEADLINE_EXCEEDED.to_owned());
    let v = views(
        vec![o],
        vec![running(id, 3, T0 + 60_000)],
        vec![row(id, T0 - HOUR, T0 + 60_000)],
    );
    let d = reconcile(&v, &Memory::default(), T0, &rules());
    assert_eq!(kinds(&d), ["mark_stopped", "remove", "close_row"]);
    assert_eq!(
        updated_state(&d),
        Some((DeploymentState::Stopped, Some(reasons::EXPIRED.to_owned())))
    );
}

const HOUR: u64 = 3_600_000;

#[test]
fn a_lost_record_is_restored_from_the_row_while_the_instance_lives() {
    let id = iref(1, 10);
    let v = views(
        vec![ready(id, T0 - 600_000)],
        vec![],
        vec![row(id, T0 - 600_000, T0 + 600_000)],
    );
    let d = reconcile(&v, &Memory::default(), T0, &rules());
    let [Action::Restore { record, ttl }] = d.actions.as_slice() else {
        panic!("{d:?}")
    };
    assert_eq!(record.state, DeploymentState::Running);
    assert_eq!(record.instance, id.instance);
    assert_eq!(record.expires_at_ms, Some(T0 + 600_000));
    assert_eq!(*ttl, Duration::from_secs(600) + rules().running_ttl_margin);

    // Past the row's expiry it goes instead, at once.
    let d = reconcile(&v, &Memory::default(), T0 + 600_000, &rules());
    assert_eq!(kinds(&d), ["remove", "close_row"]);
}

#[test]
fn a_running_record_and_its_row_are_kept_in_step() {
    let id = iref(1, 10);
    let mut v = views(
        vec![ready(id, T0)],
        vec![running(id, 3, T0 + 900_000)],
        vec![],
    );
    assert_eq!(
        kinds(&reconcile(&v, &Memory::default(), T0, &rules())),
        ["open_row"]
    );
    v.rows.push(row(id, T0, T0 + 600_000));
    let d = reconcile(&v, &Memory::default(), T0, &rules());
    assert_eq!(
        d.actions,
        [Action::ExtendRow {
            instance: id.instance,
            expires_at_ms: (T0 + 900_000) as i64
        }]
    );
    v.rows[0].expires_at_ms = Some((T0 + 900_000) as i64);
    assert!(
        reconcile(&v, &Memory::default(), T0, &rules())
            .actions
            .is_empty()
    );
}

#[test]
fn a_hint_pass_acts_on_its_instance_only() {
    let a = iref(1, 10);
    let b = iref(2, 10);
    let mut v = views(
        vec![ready(a, T0), ready(b, T0)],
        vec![
            record(a, DeploymentState::Deploying, 2),
            record(b, DeploymentState::Deploying, 2),
        ],
        vec![],
    );
    v.scope = Scope::instance(b.instance);
    let mut memory = Memory::default();
    memory.ghosts_first_seen.insert(a.instance, 5);
    let d = reconcile(&v, &memory, T0, &rules());
    assert!(d.actions.iter().all(|x| x.instance() == b.instance));
    assert_eq!(kinds(&d), ["mark_running", "open_row"]);
    assert_eq!(d.memory, memory, "other instances' memory is carried");
}
