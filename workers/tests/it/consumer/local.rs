//! The consumer driving the real `local` runtime: duplicates and a consumer killed mid-batch
//! still leave exactly one process per job, and a stop job kills it.

use std::sync::Arc;
use std::time::Duration;

use fctf_core::clock;
use fctf_core::queue::DeployJob;
use fctf_core::runtime::{InstanceRuntime, Phase};
use fctf_core::store::DeploymentState;
use fctf_workers::runtime::local::LocalRuntime;

use super::support::Harness;
use crate::runtime_local::{Scratch, settings};

async fn open(test: &str) -> (Harness, LocalRuntime, Scratch) {
    let scratch = Scratch::new(test);
    let runtime = LocalRuntime::open(scratch.path("state"), settings())
        .await
        .unwrap();
    let (harness, _) = Harness::memory(Arc::new(runtime.clone()));
    (harness, runtime, scratch)
}

/// Removes every instance the test left (so no process outlives it).
async fn clean(runtime: &LocalRuntime) {
    for seen in runtime.snapshot().await.unwrap() {
        runtime.remove(&seen.id).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_per_job_despite_duplicates_and_a_stop_kills_it() {
    let (h, runtime, _scratch) = open("consumer-local").await;
    let job = h.reserve(1, Duration::from_secs(60)).await;
    h.queue.publish(&job).await.unwrap();
    h.queue.publish(&job).await.unwrap();
    let consumer = h.start();
    let record = h.wait_state(&job, DeploymentState::Deploying).await;
    let route = record.route.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let snapshot = runtime.snapshot().await.unwrap();
        assert_eq!(snapshot.len(), 1, "{snapshot:#?}");
        assert_eq!(snapshot[0].route.as_deref(), Some(route.as_str()));
        if snapshot[0].phase == (Phase::Started { ready: true }) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::net::TcpStream::connect(&route).await.unwrap();
    // Both deliveries handled: nothing waits in the queue, still one process.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.stats().await.ready, 0);
    assert_eq!(runtime.snapshot().await.unwrap().len(), 1);

    let stop = DeployJob::stop(
        job.team,
        job.challenge,
        job.instance,
        clock::unix_now_millis(),
        Duration::from_secs(60),
    );
    h.queue.publish(&stop).await.unwrap();
    h.wait_state(&job, DeploymentState::Stopped).await;
    assert!(runtime.snapshot().await.unwrap().is_empty());
    assert!(tokio::net::TcpStream::connect(&route).await.is_err());
    consumer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_mid_batch_leaves_exactly_one_process_per_job() {
    let (h, runtime, _scratch) = open("consumer-local-kill").await;
    let mut jobs = Vec::new();
    for team in 1..=6 {
        jobs.push(h.start_job(team).await);
    }
    let first = h.start();
    h.wait_state(&jobs[0], DeploymentState::Deploying).await;
    first.kill().await;
    let second = h.start();
    for job in &jobs {
        h.wait_state(job, DeploymentState::Deploying).await;
    }
    second.stop().await.unwrap();
    let snapshot = runtime.snapshot().await.unwrap();
    assert_eq!(snapshot.len(), jobs.len(), "{snapshot:#?}");
    for job in &jobs {
        let record = h.record(job).await.unwrap();
        let seen = snapshot
            .iter()
            .find(|o| o.id.instance == job.instance)
            .unwrap();
        assert_eq!(seen.route, record.route);
    }
    clean(&runtime).await;
}
