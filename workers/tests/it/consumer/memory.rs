//! The consumer on the in-process queue and store with a scripted runtime: the shared cases,
//! then what paused time lets us pin down exactly (backoff delays, the budget's wait without a
//! busy loop), shutdown, poison messages and a queue that refuses to be consumed.

use std::num::NonZeroU16;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_core::queue::{
    DeadLetterReason, DeployJob, JobConsumer, JobQueue, ParkedJob, QueueError, QueueStats,
};
use fctf_core::store::{
    DeploymentRecord, DeploymentState, HeldLeases, LeaseOutcome, LeaseRequest, LeaseScope,
    LockToken, MemoryStore, RateDecision, RateLimit, Reservation, StateStore, StoreError,
    StoreResult, UpdateOutcome,
};
use tokio::time::Instant;

use super::support::{FakeRuntime, Harness, Mode, eventually};

async fn setup(_test: &str) -> (Harness, Arc<FakeRuntime>, ()) {
    let fake = Arc::new(FakeRuntime::default());
    let (harness, _) = Harness::memory(fake.clone());
    (harness, fake, ())
}

crate::consumer_cases!(setup:
    a_start_job_is_deployed_and_acked_after_the_intent_is_persisted,
    redelivered_and_duplicated_jobs_never_create_a_second_instance,
    an_expired_job_is_dropped_and_its_reservation_released,
    a_failing_runtime_is_retried_with_backoff_then_dead_lettered_and_failed,
    a_rejected_deploy_fails_the_instance_at_once,
    a_stop_job_removes_the_instance_and_marks_it_stopped,
    a_consumer_killed_mid_batch_and_restarted_carries_every_job_out_once,
    deliveries_that_crash_the_consumer_count_toward_the_limit,
    one_failing_message_of_a_batch_is_settled_on_its_own,
);

#[tokio::test(start_paused = true)]
async fn retry_delays_double_up_to_the_cap_and_the_delivery_is_held_meanwhile() {
    let fake = Arc::new(FakeRuntime::default());
    let (mut h, _) = Harness::memory(fake.clone());
    h.settings.delivery_limit = 6;
    h.settings.retry_base = Duration::from_secs(1);
    h.settings.retry_max = Duration::from_secs(4);
    fake.with(|s| s.mode = Mode::Unavailable);
    let consumer = h.start();
    let job = h.start_job(1).await;
    eventually("first attempt", || fake.with(|s| s.deploy_calls.len()) == 1).await;
    // During the delay the job is held, not back in the queue nor delivered again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.stats().await.ready, 0);
    assert_eq!(fake.with(|s| s.deploy_calls.len()), 1);
    h.wait_state(&job, DeploymentState::Failed).await;
    consumer.stop().await.unwrap();
    let calls: Vec<Instant> = fake.with(|s| s.deploy_calls.iter().map(|(_, t)| *t).collect());
    let gaps: Vec<u64> = calls
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis() as u64 / 100)
        .collect();
    // In tenths of a second, under paused time: 1, 2, 4, 4, 4 seconds.
    assert_eq!(gaps, [10, 20, 40, 40, 40]);
}

#[tokio::test(start_paused = true)]
async fn past_the_budget_jobs_wait_unacked_without_a_busy_loop_then_proceed() {
    let fake = Arc::new(FakeRuntime::default());
    let (mut h, _) = Harness::memory(fake.clone());
    h.settings.budget = 2;
    h.settings.budget_poll = Duration::from_millis(500);
    fake.with(|s| {
        s.in_progress = 2;
        s.instances_in_progress = true;
    });
    let consumer = h.start();
    let mut jobs = Vec::new();
    for team in 1..=3 {
        jobs.push(h.start_job(team).await);
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(fake.with(|s| s.deploy_calls.is_empty()));
    // Delivered and held: none is ready in the queue, none was requeued.
    assert_eq!(h.stats().await.ready, 0);
    // Each waiting job looks at the budget once per poll interval: 3 jobs, 10 s, 0.5 s.
    let checks = fake.with(|s| s.in_progress_calls);
    assert!((3..=3 * 21).contains(&checks), "{checks} budget checks");

    // One slot frees up: exactly one job proceeds (then the runtime counts its instance).
    fake.with(|s| s.in_progress = 1);
    h.wait_state(&jobs[0], DeploymentState::Deploying).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let deployed = fake.with(|s| s.created.len());
    assert_eq!(deployed, 1);
    fake.with(|s| {
        s.in_progress = 0;
        s.instances_in_progress = false;
    });
    for job in &jobs {
        h.wait_state(job, DeploymentState::Deploying).await;
    }
    consumer.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_requeues_jobs_that_wait_and_finishes_those_under_way() {
    let fake = Arc::new(FakeRuntime::default());
    let (mut h, _) = Harness::memory(fake.clone());
    h.settings.budget = 1;
    fake.with(|s| s.deploy_delay = Duration::from_secs(3));
    let consumer = h.start();
    let under_way = h.start_job(1).await;
    eventually("a deploy under way", || {
        fake.with(|s| s.deploy_calls.len()) == 1
    })
    .await;
    let waiting = h.start_job(2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    consumer.stop().await.unwrap();
    // The deploy under way finished and was persisted; the waiting job is back in the queue.
    h.wait_state(&under_way, DeploymentState::Deploying).await;
    assert_eq!(
        h.record(&waiting).await.unwrap().state,
        DeploymentState::Queued
    );
    assert_eq!(h.stats().await.ready, 1);
    assert_eq!(fake.with(|s| s.deploy_calls.len()), 1);
}

#[tokio::test]
async fn an_unreadable_message_is_parked_and_the_next_job_still_runs() {
    let fake = Arc::new(FakeRuntime::default());
    let (h, memory) = Harness::memory(fake.clone());
    memory
        .publish_raw(
            b"{\"schema\":1,\"nonsense\":true}".to_vec(),
            Duration::from_secs(60),
        )
        .unwrap();
    let consumer = h.start();
    let job = h.start_job(1).await;
    h.wait_state(&job, DeploymentState::Deploying).await;
    let parked = h.wait_parked(1).await;
    assert_eq!(parked[0].reason, DeadLetterReason::Rejected);
    assert!(parked[0].job().is_err());
    consumer.stop().await.unwrap();
}

/// A queue whose first `refusals` consumes fail as a broker outage would.
#[derive(Debug)]
struct Flaky {
    inner: Arc<dyn JobQueue>,
    refusals: AtomicU32,
    attempts: AtomicU32,
}

#[async_trait]
impl JobQueue for Flaky {
    async fn publish(&self, job: &DeployJob) -> Result<(), QueueError> {
        self.inner.publish(job).await
    }

    async fn consume(&self, prefetch: NonZeroU16) -> Result<JobConsumer, QueueError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let left = self.refusals.load(Ordering::SeqCst);
        if left > 0 {
            self.refusals.store(left - 1, Ordering::SeqCst);
            return Err(QueueError::Unavailable("connection refused".into()));
        }
        self.inner.consume(prefetch).await
    }

    async fn take_parked(&self, max: usize) -> Result<Vec<ParkedJob>, QueueError> {
        self.inner.take_parked(max).await
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.inner.stats().await
    }
}

#[tokio::test(start_paused = true)]
async fn an_unavailable_queue_is_consumed_again_with_backoff() {
    let fake = Arc::new(FakeRuntime::default());
    let (mut h, _) = Harness::memory(fake.clone());
    let flaky = Arc::new(Flaky {
        inner: h.queue.clone(),
        refusals: AtomicU32::new(3),
        attempts: AtomicU32::new(0),
    });
    h.queue = flaky.clone();
    let started = Instant::now();
    let consumer = h.start();
    let job = h.start_job(1).await;
    h.wait_state(&job, DeploymentState::Deploying).await;
    assert_eq!(flaky.attempts.load(Ordering::SeqCst), 4);
    // Waited 10 + 20 + 40 ms between the attempts.
    assert!(started.elapsed() >= Duration::from_millis(70));
    consumer.stop().await.unwrap();
}

#[tokio::test]
async fn a_broken_topology_ends_the_consumer_with_an_error() {
    #[derive(Debug)]
    struct Broken;
    #[async_trait]
    impl JobQueue for Broken {
        async fn publish(&self, _job: &DeployJob) -> Result<(), QueueError> {
            unreachable!()
        }
        async fn consume(&self, _prefetch: NonZeroU16) -> Result<JobConsumer, QueueError> {
            Err(QueueError::TopologyMismatch("x-max-length differs".into()))
        }
        async fn take_parked(&self, _max: usize) -> Result<Vec<ParkedJob>, QueueError> {
            unreachable!()
        }
        async fn stats(&self) -> Result<QueueStats, QueueError> {
            unreachable!()
        }
    }
    let fake = Arc::new(FakeRuntime::default());
    let (mut h, _) = Harness::memory(fake);
    h.queue = Arc::new(Broken);
    let result = tokio::time::timeout(Duration::from_secs(10), h.start().join()).await;
    assert!(matches!(result, Ok(Err(_))), "{result:?}");
}

/// A store whose first `failures` deployment updates fail, as a Redis outage would.
#[derive(Debug)]
struct FailingWrites {
    inner: MemoryStore,
    failures: AtomicU32,
}

#[async_trait]
impl StateStore for FailingWrites {
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
    async fn reserve_instance(
        &self,
        record: &DeploymentRecord,
        quota: u32,
        ttl: Duration,
    ) -> StoreResult<Reservation> {
        self.inner.reserve_instance(record, quota, ttl).await
    }
    async fn update_deployment(
        &self,
        record: &DeploymentRecord,
        ttl: Duration,
    ) -> StoreResult<UpdateOutcome> {
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(StoreError::Unavailable("connection reset".into()));
        }
        self.inner.update_deployment(record, ttl).await
    }
    async fn release_instance(
        &self,
        team: TeamId,
        challenge: ChallengeId,
        instance: InstanceId,
    ) -> StoreResult<bool> {
        self.inner.release_instance(team, challenge, instance).await
    }
    async fn get_deployment(
        &self,
        team: TeamId,
        challenge: ChallengeId,
    ) -> StoreResult<Option<DeploymentRecord>> {
        self.inner.get_deployment(team, challenge).await
    }
    async fn list_deployments(&self) -> StoreResult<Vec<DeploymentRecord>> {
        self.inner.list_deployments().await
    }
    async fn quota_usage(&self, team: TeamId) -> StoreResult<u32> {
        self.inner.quota_usage(team).await
    }
    async fn rate_limit(
        &self,
        key: &str,
        limit: RateLimit,
        cost: u32,
    ) -> StoreResult<RateDecision> {
        self.inner.rate_limit(key, limit, cost).await
    }
    async fn rate_take(&self, key: &str, limit: RateLimit, max: u32) -> StoreResult<u32> {
        self.inner.rate_take(key, limit, max).await
    }
    async fn lease_acquire(
        &self,
        scopes: &[LeaseScope<'_>],
        holder: &str,
        ttl: Duration,
    ) -> StoreResult<LeaseOutcome> {
        self.inner.lease_acquire(scopes, holder, ttl).await
    }
    async fn lease_acquire_many(
        &self,
        requests: &[LeaseRequest<'_>],
        ttl: Duration,
    ) -> StoreResult<Vec<LeaseOutcome>> {
        self.inner.lease_acquire_many(requests, ttl).await
    }
    async fn lease_renew(&self, keys: &[&str], holder: &str, ttl: Duration) -> StoreResult<bool> {
        self.inner.lease_renew(keys, holder, ttl).await
    }
    async fn lease_renew_many(
        &self,
        held: &[HeldLeases<'_>],
        ttl: Duration,
    ) -> StoreResult<Vec<bool>> {
        self.inner.lease_renew_many(held, ttl).await
    }
    async fn lease_release(&self, keys: &[&str], holder: &str) -> StoreResult<()> {
        self.inner.lease_release(keys, holder).await
    }
    async fn lease_release_many(&self, held: &[HeldLeases<'_>]) -> StoreResult<()> {
        self.inner.lease_release_many(held).await
    }
    async fn lease_count(&self, key: &str) -> StoreResult<u32> {
        self.inner.lease_count(key).await
    }
    async fn lock_acquire(&self, name: &str, ttl: Duration) -> StoreResult<Option<LockToken>> {
        self.inner.lock_acquire(name, ttl).await
    }
    async fn lock_release(&self, name: &str, token: &LockToken) -> StoreResult<bool> {
        self.inner.lock_release(name, token).await
    }
    async fn counter_incr(
        &self,
        key: &str,
        cap: u64,
        window: Duration,
    ) -> StoreResult<Option<u64>> {
        self.inner.counter_incr(key, cap, window).await
    }
    async fn counter_get(&self, key: &str) -> StoreResult<u64> {
        self.inner.counter_get(key).await
    }
    async fn counter_reset(&self, key: &str) -> StoreResult<()> {
        self.inner.counter_reset(key).await
    }
    async fn cooldown_begin(&self, key: &str, period: Duration) -> StoreResult<Option<Duration>> {
        self.inner.cooldown_begin(key, period).await
    }
    async fn remember_once(&self, key: &str, ttl: Duration) -> StoreResult<bool> {
        self.inner.remember_once(key, ttl).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_job_whose_intent_cannot_be_persisted_is_not_acked_and_is_redone_once() {
    let fake = Arc::new(FakeRuntime::default());
    let (mut h, _) = Harness::memory(fake.clone());
    let store = Arc::new(FailingWrites {
        inner: MemoryStore::new(),
        failures: AtomicU32::new(2),
    });
    h.store = store.clone();
    let consumer = h.start();
    let job = h.start_job(1).await;
    let record = h.wait_state(&job, DeploymentState::Deploying).await;
    assert_eq!(record.route, Some(format!("fake-{}", job.instance)));
    consumer.stop().await.unwrap();
    assert_eq!(store.failures.load(Ordering::SeqCst), 0);
    // Three deliveries (two could not persist), one instance.
    assert_eq!(fake.with(|s| s.deploy_calls.len()), 3);
    assert_eq!(
        fake.with(|s| s.created.get(&job.instance).copied()),
        Some(1)
    );
    assert_eq!(h.stats().await.ready, 0);
}
