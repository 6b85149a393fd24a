//! The listener over the real `local` runtime (child processes), MemoryStore and SQLite: an
//! instance goes Deploying -> Running with a tracking row, then a stop removes and releases it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fctf_core::clock;
use fctf_core::db::Database;
use fctf_core::ids::InstanceId;
use fctf_core::queue::DeploySpec;
use fctf_core::runtime::InstanceRuntime;
use fctf_core::store::{
    DeploymentRecord, DeploymentState, MemoryStore, Reservation, StateStore, UpdateOutcome,
};
use fctf_workers::listener::{FixedContestWindow, Listener, Rules};
use fctf_workers::runtime::local::{LocalRuntime, LocalSettings};

use super::support::iref;

fn http_spec() -> DeploySpec {
    DeploySpec {
        challenge_name: "listener e2e".to_owned(),
        image: None,
        command: Some(vec![
            "sh".to_owned(),
            "-c".to_owned(),
            "exec python3 -m http.server \"$PORT\" --bind \"$HOST\"".to_owned(),
        ]),
        container_port: 80,
        cpu_millicores: 100,
        memory_mib: 64,
        use_gvisor: false,
        harden: false,
        lifetime_secs: 3600,
        env: BTreeMap::new(),
    }
}

async fn update(store: &Arc<dyn StateStore>, record: DeploymentRecord) -> DeploymentRecord {
    match store
        .update_deployment(&record, Duration::from_secs(300))
        .await
        .unwrap()
    {
        UpdateOutcome::Updated(r) => r,
        UpdateOutcome::Conflict(r) => panic!("conflict: {r:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_instance_becomes_running_and_a_stop_removes_and_releases_it() {
    let dir = std::env::temp_dir().join(format!("fctf-listener-local-{}", InstanceId::new()));
    let settings = LocalSettings {
        stop_grace: Duration::from_millis(300),
        ready_timeout: Duration::from_secs(20),
        ..LocalSettings::default()
    };
    let runtime = Arc::new(
        LocalRuntime::open(dir.join("state"), settings)
            .await
            .unwrap(),
    );
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let db = Database::connect("sqlite::memory:", 1).await.unwrap();
    db.migrate().await.unwrap();
    let listener = Listener::new(
        runtime.clone(),
        store.clone(),
        db.clone(),
        Arc::new(FixedContestWindow(None)),
        Rules::default(),
    );

    // What the Deployment Center and the consumer do.
    let id = iref(1, 10);
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
    let Reservation::Reserved(queued) = store
        .reserve_instance(&fresh, 3, Duration::from_secs(300))
        .await
        .unwrap()
    else {
        panic!("slot taken")
    };
    let placement = runtime
        .deploy(&id, &http_spec(), clock::unix_now_millis())
        .await
        .unwrap();
    update(
        &store,
        DeploymentRecord {
            state: DeploymentState::Deploying,
            route: Some(placement.route.clone()),
            ..queued
        },
    )
    .await;

    // Passes until the process accepts connections (bounded: 20 s).
    let mut running = None;
    for _ in 0..200 {
        listener.resync().await.unwrap();
        let rec = store
            .get_deployment(id.team, id.challenge)
            .await
            .unwrap()
            .unwrap();
        if rec.state == DeploymentState::Running {
            running = Some(rec);
            break;
        }
        assert_eq!(rec.state, DeploymentState::Deploying, "{rec:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let running = running.expect("Running within 20 s");
    assert_eq!(running.route.as_deref(), Some(placement.route.as_str()));
    let row = db.tracking_get(id.instance).await.unwrap().unwrap();
    assert_eq!(row.stopped_at_ms, None);
    assert_eq!(row.expires_at_ms, running.expires_at_ms.map(|e| e as i64));
    tokio::net::TcpStream::connect(&placement.route)
        .await
        .unwrap();

    // A stop: removed (the local runtime returns once the process group is gone), then
    // released on the next pass.
    update(
        &store,
        DeploymentRecord {
            state: DeploymentState::Stopping,
            ..running
        },
    )
    .await;
    listener.resync().await.unwrap();
    assert!(runtime.snapshot().await.unwrap().iter().all(|o| o.id != id));
    assert!(
        db.tracking_get(id.instance)
            .await
            .unwrap()
            .unwrap()
            .stopped_at_ms
            .is_some()
    );
    listener.resync().await.unwrap();
    assert_eq!(
        store.get_deployment(id.team, id.challenge).await.unwrap(),
        None
    );
    assert_eq!(store.quota_usage(id.team).await.unwrap(), 0);
    assert!(
        tokio::net::TcpStream::connect(&placement.route)
            .await
            .is_err()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
