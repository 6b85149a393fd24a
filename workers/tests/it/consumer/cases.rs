//! Consumer cases that must hold on every queue and store: each takes a harness whose runtime
//! is `fake`, and runs in real time (short delays), so the same code runs on the in-process
//! backends and on RabbitMQ + Redis.

use std::sync::Arc;
use std::time::Duration;

use fctf_core::clock;
use fctf_core::queue::{DeadLetterReason, DeployJob};
use fctf_core::runtime::InstanceRef;
use fctf_core::store::{DeploymentRecord, DeploymentState, UpdateOutcome};

use fctf_workers::consumer::ConsumerMetrics;

use super::support::{FakeRuntime, Harness, Mode, eventually};

/// Gives the broker time to requeue anything left unsettled, then checks that nothing was:
/// every job was settled (acked or parked).
async fn assert_all_settled(h: &Harness) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.stats().await.ready, 0, "a job went back to the queue");
}

pub async fn a_start_job_is_deployed_and_acked_after_the_intent_is_persisted(
    h: Harness,
    fake: Arc<FakeRuntime>,
) {
    let consumer = h.start();
    let job = h.start_job(1).await;
    let record = h.wait_state(&job, DeploymentState::Deploying).await;
    assert_eq!(record.route, Some(format!("fake-{}", job.instance)));
    assert!(record.version >= 2);
    consumer.stop().await.unwrap();
    assert_all_settled(&h).await;
    assert_eq!(
        fake.with(|s| s.created.get(&job.instance).copied()),
        Some(1)
    );
    assert_eq!(h.store.quota_usage(job.team).await.unwrap(), 1);
}

pub async fn redelivered_and_duplicated_jobs_never_create_a_second_instance(
    h: Harness,
    fake: Arc<FakeRuntime>,
) {
    // The same job three times (duplicate publishes), and a job whose earlier delivery crashed
    // after creating the instance and persisting the intent.
    let job = h.reserve(1, Duration::from_secs(60)).await;
    for _ in 0..3 {
        h.queue.publish(&job).await.unwrap();
    }
    let crashed = h.reserve(2, Duration::from_secs(60)).await;
    let id = InstanceRef::of_job(&crashed);
    h.runtime
        .deploy(&id, crashed.spec().unwrap(), crashed.enqueued_at_ms)
        .await
        .unwrap();
    let queued = h.record(&crashed).await.unwrap();
    let deploying = DeploymentRecord {
        state: DeploymentState::Deploying,
        route: Some(format!("fake-{}", crashed.instance)),
        ..queued
    };
    assert!(matches!(
        h.store
            .update_deployment(&deploying, Duration::from_secs(60))
            .await
            .unwrap(),
        UpdateOutcome::Updated(_)
    ));
    h.queue.publish(&crashed).await.unwrap();

    let consumer = h.start();
    h.wait_state(&job, DeploymentState::Deploying).await;
    let after_crash = h
        .wait_record(&crashed, "redeployed", |r| {
            r.is_some_and(|r| r.version > deploying.version)
        })
        .await
        .unwrap();
    assert_eq!(after_crash.state, DeploymentState::Deploying);
    // One call of the test itself, one per delivery.
    eventually("every delivery handled", || {
        fake.with(|s| s.deploy_calls.len()) >= 5
    })
    .await;
    consumer.stop().await.unwrap();
    assert_all_settled(&h).await;
    fake.with(|s| {
        assert_eq!(s.created.get(&job.instance), Some(&1));
        assert_eq!(s.created.get(&crashed.instance), Some(&1));
        assert_eq!(s.instances.len(), 2);
    });
    assert_eq!(h.queue.take_parked(10).await.unwrap(), vec![]);
}

pub async fn an_expired_job_is_dropped_and_its_reservation_released(
    h: Harness,
    fake: Arc<FakeRuntime>,
) {
    // The budget is full, so the job waits (delivered, unacked) until it is stale.
    fake.with(|s| s.in_progress = h.settings.budget);
    let job = h.reserve(1, Duration::from_millis(400)).await;
    h.queue.publish(&job).await.unwrap();
    let consumer = h.start();
    eventually("the job waits for the budget", || {
        fake.with(|s| s.in_progress_calls) > 0
    })
    .await;
    let wait = job.expires_at_ms.saturating_sub(clock::unix_now_millis()) + 50;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    assert!(job.is_expired(clock::unix_now_millis()));
    fake.with(|s| s.in_progress = 0);

    h.wait_record(&job, "released", |r| r.is_none()).await;
    assert_eq!(h.store.quota_usage(job.team).await.unwrap(), 0);
    consumer.stop().await.unwrap();
    assert_all_settled(&h).await;
    assert!(
        fake.with(|s| s.created.is_empty()),
        "an expired job created an instance"
    );
    assert_eq!(h.queue.take_parked(10).await.unwrap(), vec![]);
}

pub async fn a_failing_runtime_is_retried_with_backoff_then_dead_lettered_and_failed(
    h: Harness,
    fake: Arc<FakeRuntime>,
) {
    fake.with(|s| s.mode = Mode::Unavailable);
    let consumer = h.start();
    let job = h.start_job(1).await;
    let failed = h.wait_state(&job, DeploymentState::Failed).await;
    let reason = failed.reason.unwrap();
    assert!(reason.contains("after 3 attempts"), "{reason}");
    assert!(reason.contains("API server down"), "{reason}");
    let parked = h.wait_parked(1).await;
    assert_eq!(parked[0].reason, DeadLetterReason::Rejected);
    assert_eq!(parked[0].job().unwrap(), job);
    consumer.stop().await.unwrap();
    assert_all_settled(&h).await;
    // Exactly the delivery limit of attempts, each after a doubled delay.
    let calls: Vec<_> = fake.with(|s| s.deploy_calls.iter().map(|(_, t)| *t).collect());
    assert_eq!(calls.len(), 3, "{calls:?}");
    let base = h.settings.retry_base;
    assert!(calls[1] - calls[0] >= base, "{:?}", calls[1] - calls[0]);
    assert!(calls[2] - calls[1] >= base * 2, "{:?}", calls[2] - calls[1]);
    // A failed instance holds no quota slot.
    assert_eq!(h.store.quota_usage(job.team).await.unwrap(), 0);
    assert!(fake.with(|s| s.instances.is_empty()));
}

pub async fn a_rejected_deploy_fails_the_instance_at_once(h: Harness, fake: Arc<FakeRuntime>) {
    fake.with(|s| s.mode = Mode::Rejected("image registry/x:1 does not exist".into()));
    let consumer = h.start();
    let job = h.start_job(1).await;
    let failed = h.wait_state(&job, DeploymentState::Failed).await;
    assert_eq!(
        failed.reason.as_deref(),
        Some("image registry/x:1 does not exist")
    );
    assert_eq!(h.wait_parked(1).await[0].job().unwrap(), job);
    consumer.stop().await.unwrap();
    assert_eq!(fake.with(|s| s.deploy_calls.len()), 1);
}

pub async fn a_stop_job_removes_the_instance_and_marks_it_stopped(
    h: Harness,
    fake: Arc<FakeRuntime>,
) {
    let consumer = h.start();
    let job = h.start_job(1).await;
    let deploying = h.wait_state(&job, DeploymentState::Deploying).await;
    // The listener saw it run; then the player stops it.
    let running = DeploymentRecord {
        state: DeploymentState::Running,
        ..deploying
    };
    let UpdateOutcome::Updated(running) = h
        .store
        .update_deployment(&running, Duration::from_secs(60))
        .await
        .unwrap()
    else {
        panic!("update to Running conflicted");
    };
    let stopping = DeploymentRecord {
        state: DeploymentState::Stopping,
        ..running
    };
    h.store
        .update_deployment(&stopping, Duration::from_secs(60))
        .await
        .unwrap();
    let stop = DeployJob::stop(
        job.team,
        job.challenge,
        job.instance,
        clock::unix_now_millis(),
        Duration::from_secs(60),
    );
    h.queue.publish(&stop).await.unwrap();
    let stopped = h.wait_state(&job, DeploymentState::Stopped).await;
    assert!(stopped.reason.is_some());
    assert_eq!(h.store.quota_usage(job.team).await.unwrap(), 0);
    assert!(fake.with(|s| s.instances.is_empty()));
    assert!(fake.with(|s| s.removed.contains(&job.instance)));
    // The start job redelivered now does nothing.
    h.queue.publish(&job).await.unwrap();
    assert_all_settled(&h).await;
    consumer.stop().await.unwrap();
    assert_eq!(
        fake.with(|s| s.created.get(&job.instance).copied()),
        Some(1)
    );
    assert!(fake.with(|s| s.instances.is_empty()));
}

pub async fn a_consumer_killed_mid_batch_and_restarted_carries_every_job_out_once(
    h: Harness,
    fake: Arc<FakeRuntime>,
) {
    fake.with(|s| s.deploy_delay = Duration::from_millis(30));
    let mut jobs = Vec::new();
    for team in 1..=20 {
        jobs.push(h.start_job(team).await);
    }
    let first = h.start();
    eventually("a deploy under way", || {
        fake.with(|s| !s.deploy_calls.is_empty())
    })
    .await;
    first.kill().await;
    let under_way = fake.with(|s| s.deploy_calls.len());
    assert!(under_way > 0);

    let second = h.start();
    for job in &jobs {
        h.wait_state(job, DeploymentState::Deploying).await;
    }
    second.stop().await.unwrap();
    assert_all_settled(&h).await;
    fake.with(|s| {
        assert_eq!(s.instances.len(), jobs.len());
        for job in &jobs {
            assert_eq!(s.created.get(&job.instance), Some(&1), "job {}", job.job_id);
        }
    });
    assert_eq!(h.queue.take_parked(100).await.unwrap(), vec![]);
}

/// Every case, by name, for the backends' test lists.
#[macro_export]
macro_rules! consumer_cases {
    ($setup:path: $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (harness, fake, _guard) = $setup(stringify!($case)).await;
                $crate::consumer::cases::$case(harness, fake).await;
            }
        )*
    };
}

pub async fn deliveries_that_crash_the_consumer_count_toward_the_limit(
    h: Harness,
    fake: Arc<FakeRuntime>,
) {
    // Each delivery hangs in the runtime and the consumer is killed there, as a crash would.
    fake.with(|s| s.deploy_delay = Duration::from_secs(3600));
    let job = h.start_job(1).await;
    for attempt in 1..=h.settings.delivery_limit as usize {
        let consumer = h.start();
        eventually("the delivery reaches the runtime", || {
            fake.with(|s| s.deploy_calls.len()) == attempt
        })
        .await;
        consumer.kill().await;
    }
    // The next delivery is past the limit: given up without calling the runtime again.
    let consumer = h.start();
    let failed = h.wait_state(&job, DeploymentState::Failed).await;
    assert!(
        failed.reason.unwrap().contains("after 3 attempts"),
        "the player is told why"
    );
    assert_eq!(h.wait_parked(1).await[0].job().unwrap(), job);
    consumer.stop().await.unwrap();
    assert_eq!(fake.with(|s| s.deploy_calls.len()), 3);
    assert!(fake.with(|s| s.created.is_empty()));
}

/// T62, ack discipline: message k of a batch fails (a failpoint in the runtime, for its
/// instance alone) while the rest of the batch goes through. Each delivery is settled on its
/// own: while k is held unsettled the others are acked, and when the consumer dies only k goes
/// back to the queue (an ack with `multiple=true` past k would have taken it too). Then k is
/// retried until it works, and a second failing message j, which never works, is dead-lettered
/// alone; every other job is deployed exactly once.
pub async fn one_failing_message_of_a_batch_is_settled_on_its_own(
    h: Harness,
    fake: Arc<FakeRuntime>,
) {
    let mut jobs = Vec::new();
    for team in 1..=10 {
        jobs.push(h.reserve(team, Duration::from_secs(60)).await);
    }
    let (k, j) = (jobs[4].clone(), jobs[7].clone());
    fake.with(|s| {
        s.failpoints.insert(k.instance, Mode::Hangs);
        s.failpoints.insert(j.instance, Mode::Unavailable);
    });
    for job in &jobs {
        h.queue.publish(job).await.unwrap();
    }
    let metrics = Arc::new(ConsumerMetrics::default());
    let first = h.start_counted(metrics.clone());
    let others: Vec<_> = jobs
        .iter()
        .filter(|job| job.job_id != k.job_id && job.job_id != j.job_id)
        .cloned()
        .collect();
    for job in &others {
        h.wait_state(job, DeploymentState::Deploying).await;
    }
    h.wait_state(&j, DeploymentState::Failed).await;
    eventually("the other 8 acked and j parked", || {
        let m = metrics.snapshot();
        m.acked == 8 && m.parked == 1
    })
    .await;
    // k is delivered and held: neither back in the queue nor carried out.
    assert_eq!(h.stats().await.ready, 0);
    assert_eq!(h.record(&k).await.unwrap().state, DeploymentState::Queued);

    first.kill().await;
    // Only k was unsettled: it, and nothing else, goes back to the queue.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.stats().await.ready == 0 {
        assert!(tokio::time::Instant::now() < deadline, "k never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_all_settled_but(&h, 1).await;

    // k fails once more, then works (its hung delivery was attempt 1 of 3).
    fake.with(|s| s.failpoints.insert(k.instance, Mode::FailsTimes(1)));
    let second = h.start();
    let deployed = h.wait_state(&k, DeploymentState::Deploying).await;
    assert_eq!(deployed.route, Some(format!("fake-{}", k.instance)));
    second.stop().await.unwrap();
    assert_all_settled(&h).await;

    let parked = h.queue.take_parked(10).await.unwrap();
    assert_eq!(parked.len(), 1, "only j is parked: {parked:?}");
    assert_eq!(parked[0].reason, DeadLetterReason::Rejected);
    assert_eq!(parked[0].job().unwrap(), j);
    fake.with(|s| {
        let calls = |id| s.deploy_calls.iter().filter(|(i, _)| *i == id).count();
        for job in &others {
            assert_eq!(calls(job.instance), 1, "job {} deployed once", job.job_id);
            assert_eq!(s.created.get(&job.instance), Some(&1));
        }
        assert_eq!(calls(k.instance), 3, "k: hung, failed, worked");
        assert_eq!(s.created.get(&k.instance), Some(&1));
        assert_eq!(calls(j.instance), 3, "j: the delivery limit");
        assert!(!s.instances.contains_key(&j.instance));
    });
}

/// Gives the broker time to requeue anything left unsettled, then checks that exactly `n` jobs
/// are back in the queue.
async fn assert_all_settled_but(h: &Harness, n: u32) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.stats().await.ready, n, "jobs back in the queue");
}
