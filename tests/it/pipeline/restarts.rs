//! Restarts: a consumer killed mid-batch loses and duplicates nothing; a restarted listener
//! converges.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use fctf_control::deployment::contract::{DeploymentControl, InstanceKey};
use fctf_core::runtime::InstanceRuntime as _;
use fctf_core::store::DeploymentState;

use super::support::{Pipeline, key, start_request};

/// Starts every key (no consumer needed: the jobs wait in the queue).
async fn queue_starts(
    p: &Pipeline,
    keys: &[InstanceKey],
) -> HashMap<InstanceKey, fctf_core::ids::InstanceId> {
    let mut instances = HashMap::new();
    for k in keys {
        let status = p.center.start(&start_request(*k, 3600)).await.unwrap();
        instances.insert(*k, status.instance.unwrap());
    }
    instances
}

fn is_state(
    state: DeploymentState,
) -> impl Fn(&Option<fctf_core::store::DeploymentRecord>) -> bool {
    move |r| r.as_ref().is_some_and(|r| r.state == state)
}

/// Exactly one process per key, the instance its record names; one open row per instance.
async fn assert_one_each(
    p: &Pipeline,
    instances: &HashMap<InstanceKey, fctf_core::ids::InstanceId>,
) {
    let snapshot = p.snapshot().await;
    assert_eq!(snapshot.len(), instances.len(), "{snapshot:#?}");
    let mut seen = HashSet::new();
    for o in &snapshot {
        let k = key(o.id.team.0, o.id.challenge.0);
        assert!(seen.insert(k), "two processes for {k:?}");
        assert_eq!(Some(&o.id.instance), instances.get(&k), "{k:?}");
        let record = p.record(k).await.unwrap();
        assert_eq!(record.instance, o.id.instance);
        assert_eq!(record.route, o.route);
    }
    let rows = p.db.tracking_open_rows().await.unwrap();
    assert_eq!(rows.len(), instances.len(), "{rows:#?}");
    for row in &rows {
        let k = key(row.team.0, row.challenge.0);
        assert_eq!(Some(&row.instance), instances.get(&k), "{row:?}");
        let record = p.record(k).await.unwrap();
        assert_eq!(row.route, record.route, "{row:?}");
        assert_eq!(
            row.expires_at_ms,
            record.expires_at_ms.map(|e| i64::try_from(e).unwrap()),
            "{row:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_killed_mid_batch_and_restarted_loses_and_duplicates_nothing() {
    let p = Pipeline::new("consumer-kill", 300).await;
    let keys: Vec<_> = (1..=30).flat_map(|t| [key(t, 1), key(t, 2)]).collect();
    let instances = queue_starts(&p, &keys).await;
    let listener = p.start_listener(None, Duration::from_secs(2));

    // Every deploy of the first consumer waits 2 s first, so none settles (and the prefetch
    // of 40 takes no more) before the kill: it comes mid-batch however fast the runtime is.
    let first = p.start_slow_consumer(Duration::from_secs(2));
    // Killed once the first deploys are under way. Jobs are taken in queue order: watch only
    // the first three.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut started = 0;
        for k in &keys[..3] {
            if p.record(*k)
                .await
                .is_some_and(|r| r.state != DeploymentState::Queued)
            {
                started += 1;
            }
        }
        if started == 3 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no deploy in 30 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    first.kill().await;
    let mut progressed = 0;
    for k in &keys {
        if p.record(*k)
            .await
            .is_some_and(|r| r.state != DeploymentState::Queued)
        {
            progressed += 1;
        }
    }
    assert!(
        progressed < keys.len(),
        "the kill came after the whole batch ({progressed} of {})",
        keys.len()
    );

    let second = p.start_consumer();
    p.wait_records(
        &keys,
        Duration::from_secs(60),
        "Running",
        is_state(DeploymentState::Running),
    )
    .await;
    assert_eq!(p.queue.stats().await.unwrap().ready, 0);
    assert_one_each(&p, &instances).await;

    listener.stop().await;
    second.stop().await;
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_listener_converges() {
    let p = Pipeline::new("listener-restart", 300).await;
    let keys: Vec<_> = (1..=10).flat_map(|t| [key(t, 1), key(t, 2)]).collect();
    let consumer = p.start_consumer();
    let first = p.start_listener(None, Duration::from_secs(1));
    let mut instances = queue_starts(&p, &keys).await;
    // The first listener marks some Running, then goes away.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let victim_key = loop {
        let mut running = None;
        for k in &keys {
            // Running with its row open: the listener finished marking it (a listener killed
            // between the record write and the row would leave no row to close).
            let is_running = p
                .record(*k)
                .await
                .is_some_and(|r| r.state == DeploymentState::Running);
            if is_running && p.db.tracking_get(instances[k]).await.unwrap().is_some() {
                running = Some(*k);
                break;
            }
        }
        if let Some(k) = running {
            break k;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing Running in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    first.kill().await;

    // While no listener runs: that Running instance dies behind the platform's back.
    let victim = p
        .snapshot()
        .await
        .into_iter()
        .find(|o| o.id.instance == instances[&victim_key])
        .expect("the Running instance's process");
    p.runtime.remove(&victim.id).await.unwrap();
    let survivors: Vec<_> = keys.iter().copied().filter(|k| *k != victim_key).collect();

    // A fresh listener (empty memory) converges: the others Running with a route and an
    // expiry, the lost one stopped (missing on two full passes), each row once.
    let second = p.start_listener(None, Duration::from_secs(1));
    let records = p
        .wait_records(
            &survivors,
            Duration::from_secs(60),
            "Running",
            is_state(DeploymentState::Running),
        )
        .await;
    for r in records.values().flatten() {
        assert!(r.route.is_some() && r.expires_at_ms.is_some(), "{r:?}");
    }
    p.wait_records(&[victim_key], Duration::from_secs(30), "stopped", |r| {
        r.as_ref()
            .is_some_and(|r| r.state == DeploymentState::Stopped)
    })
    .await;
    p.wait_row_closed(victim.id.instance).await;
    assert_eq!(p.store.quota_usage(victim_key.team).await.unwrap(), 1);
    instances.remove(&victim_key);
    // A second pass of the new listener changes nothing more.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_one_each(&p, &instances).await;

    second.stop().await;
    consumer.stop().await;
    p.finish().await;
}
