//! 300 starts at once (100 teams x 3 challenges): each runs once, within the quota; and the 301st
//! start into a full queue is refused and rolled back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use fctf_control::deployment::DeploymentCenter;
use fctf_control::deployment::contract::{DeploymentControl, InstanceKey, InstanceStatus};
use fctf_control::error::{ApiError, ErrorKind};
use fctf_core::store::DeploymentState;
use tokio::task::JoinSet;

use super::support::{Pipeline, key, start_request, target};

const TEAMS: i64 = 100;
const CHALLENGES: i64 = 3;

fn all_keys() -> Vec<InstanceKey> {
    (1..=TEAMS)
        .flat_map(|t| (1..=CHALLENGES).map(move |c| key(t, c)))
        .collect()
}

/// Every start of `keys` at once; answers in the order of `keys`.
async fn start_all(
    center: &Arc<DeploymentCenter>,
    keys: &[InstanceKey],
) -> Vec<Result<InstanceStatus, ApiError>> {
    let mut set = JoinSet::new();
    for (i, k) in keys.iter().enumerate() {
        let (center, request) = (center.clone(), start_request(*k, 3600));
        set.spawn(async move { (i, center.start(&request).await) });
    }
    let mut answers: Vec<_> = set.join_all().await;
    answers.sort_by_key(|(i, _)| *i);
    answers.into_iter().map(|(_, a)| a).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_starts_at_once_run_once_each_within_the_quota() {
    let p = Pipeline::new("scale", 300).await;
    let consumer = p.start_consumer();
    let listener = p.start_listener(None, Duration::from_secs(2));
    let keys = all_keys();

    let answers = start_all(&p.center, &keys).await;
    let mut instances = HashMap::new();
    for (k, answer) in keys.iter().zip(&answers) {
        let status = answer
            .as_ref()
            .unwrap_or_else(|e| panic!("start {k:?}: {e:?}"));
        assert!(
            matches!(
                status.state,
                Some(DeploymentState::Queued | DeploymentState::Deploying)
            ),
            "{status:?}"
        );
        instances.insert(*k, status.instance.expect("an instance id"));
    }
    assert_eq!(
        instances.values().collect::<HashSet<_>>().len(),
        keys.len(),
        "one fresh instance id per start"
    );

    // Every team is at its quota of 3: a fourth challenge is refused, for each team at once.
    let fourth: Vec<_> = (1..=TEAMS).map(|t| key(t, CHALLENGES + 1)).collect();
    for (k, answer) in fourth.iter().zip(start_all(&p.center, &fourth).await) {
        let error = answer.expect_err("a fourth instance is over the quota");
        assert_eq!(error.kind, ErrorKind::QuotaExceeded, "{k:?}: {error:?}");
        assert_eq!(p.record(*k).await, None);
    }
    // The same 300 starts again while they are under way: the same instances, nothing new.
    for (k, answer) in keys.iter().zip(start_all(&p.center, &keys).await) {
        let status = answer.unwrap_or_else(|e| panic!("repeated start {k:?}: {e:?}"));
        assert_eq!(status.instance, Some(instances[k]), "{k:?}");
    }

    let records = p
        .wait_records(&keys, Duration::from_secs(90), "Running or Failed", |r| {
            r.as_ref().is_some_and(|r| {
                matches!(r.state, DeploymentState::Running | DeploymentState::Failed)
            })
        })
        .await;
    let failed: Vec<_> = records
        .values()
        .flatten()
        .filter(|r| r.state == DeploymentState::Failed)
        .collect();
    for r in &failed {
        assert!(
            r.reason.as_deref().is_some_and(|m| !m.is_empty()),
            "a Failed record says why: {r:?}"
        );
    }
    // The issue allows "Running or a clear Failed" (a program that misses its ready timeout on
    // an overloaded machine); a failed one must say why and hold nothing. Most must run.
    assert!(
        failed.len() * 20 <= keys.len(),
        "{} of {} failed: {failed:#?}",
        failed.len(),
        keys.len()
    );
    let running: HashSet<_> = keys
        .iter()
        .copied()
        .filter(|k| {
            records[k]
                .as_ref()
                .is_some_and(|r| r.state == DeploymentState::Running)
        })
        .collect();

    // Exactly one process per Running (team, challenge), the one its record names, at its
    // route; none for a Failed one once the listener has cleaned it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let snapshot = loop {
        let snapshot = p.snapshot().await;
        if snapshot.len() == running.len() || tokio::time::Instant::now() > deadline {
            break snapshot;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(snapshot.len(), running.len());
    let mut seen = HashSet::new();
    for o in &snapshot {
        let k = key(o.id.team.0, o.id.challenge.0);
        assert!(seen.insert(k), "two processes for {k:?}");
        assert!(
            running.contains(&k),
            "a process for a non-Running slot {k:?}"
        );
        let record = records[&k].as_ref().unwrap();
        assert_eq!(o.id.instance, instances[&k], "{k:?}");
        assert_eq!(record.instance, instances[&k]);
        assert_eq!(o.route, record.route, "{k:?}");
        assert!(record.expires_at_ms.is_some(), "{record:?}");
    }
    for t in 1..=TEAMS {
        let usage = p.store.quota_usage(key(t, 1).team).await.unwrap();
        let held = (1..=CHALLENGES)
            .filter(|c| running.contains(&key(t, *c)))
            .count();
        assert_eq!(usage as usize, held, "team {t}");
    }
    // One open tracking row per Running instance.
    let rows = p.db.tracking_open_rows().await.unwrap();
    let row_ids: HashSet<_> = rows.iter().map(|r| r.instance).collect();
    assert_eq!(rows.len(), row_ids.len(), "one row per instance");
    let running_ids: HashSet<_> = running.iter().map(|k| instances[k]).collect();
    assert_eq!(row_ids, running_ids);
    // A Running status hands out access.
    let any = *running.iter().next().expect("some instance runs");
    let status = p.center.status(&target(any)).await.unwrap();
    assert_eq!(status.state, Some(DeploymentState::Running));
    assert!(status.access.is_some(), "{status:?}");

    listener.stop().await;
    consumer.stop().await;
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_301st_concurrent_start_is_refused_queue_full_and_rolled_back() {
    // No consumer: the 300 jobs stay ready in the queue.
    let p = Pipeline::new("full", 300).await;
    let keys = all_keys();
    let answers = start_all(&p.center, &keys).await;
    for (k, answer) in keys.iter().zip(&answers) {
        let status = answer
            .as_ref()
            .unwrap_or_else(|e| panic!("start {k:?}: {e:?}"));
        assert_eq!(status.state, Some(DeploymentState::Queued), "{status:?}");
    }
    assert_eq!(p.queue.stats().await.unwrap().ready, 300);

    let extra = key(TEAMS + 1, 1);
    let error = p
        .center
        .start(&start_request(extra, 3600))
        .await
        .expect_err("the queue is full");
    assert_eq!(error.kind, ErrorKind::QueueFull, "{error:?}");
    assert!(error.retry_after.is_some(), "{error:?}");
    // Rolled back: no record, no quota slot taken, nothing more in the queue.
    assert_eq!(p.record(extra).await, None);
    assert_eq!(p.store.quota_usage(extra.team).await.unwrap(), 0);
    assert_eq!(p.queue.stats().await.unwrap().ready, 300);
    // The quota is checked before the queue: a team at its quota hears about the quota.
    let error = p
        .center
        .start(&start_request(key(1, CHALLENGES + 1), 3600))
        .await
        .expect_err("over the quota");
    assert_eq!(error.kind, ErrorKind::QuotaExceeded, "{error:?}");
    assert_eq!(p.store.quota_usage(key(1, 1).team).await.unwrap(), 3);

    p.finish().await;
}
