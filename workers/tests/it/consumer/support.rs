//! A scripted runtime, a consumer harness over any queue and store, and patient waits.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU16;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fctf_core::clock;
use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_core::queue::{DeployJob, DeploySpec, JobQueue, MemoryQueue, QueueStats, Topology};
use fctf_core::runtime::{
    InstanceRef, InstanceRuntime, Observed, Placement, RuntimeError, RuntimeResult,
};
use fctf_core::store::{DeploymentRecord, DeploymentState, MemoryStore, Reservation, StateStore};
use fctf_workers::consumer::{self, ConsumerError, ConsumerMetrics, ConsumerSettings};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the scripted runtime answers to deploys.
#[derive(Clone, Debug, Default)]
pub enum Mode {
    #[default]
    Works,
    Unavailable,
    Rejected(String),
    /// The deploy call never returns (until the consumer is killed).
    Hangs,
    /// `Unavailable` for this many more calls, then works.
    FailsTimes(u32),
}

#[derive(Debug, Default)]
pub struct FakeState {
    pub mode: Mode,
    /// Live instances.
    pub instances: HashMap<InstanceId, InstanceRef>,
    /// How many times each instance was really created (must never exceed 1).
    pub created: HashMap<InstanceId, u32>,
    /// Every deploy call, with its time.
    pub deploy_calls: Vec<(InstanceId, Instant)>,
    pub removed: Vec<InstanceId>,
    /// What `in_progress` answers (the budget tests fill it)...
    pub in_progress: u32,
    /// ... plus every live instance, when set (as a runtime whose instances are not ready yet).
    pub instances_in_progress: bool,
    pub in_progress_calls: u32,
    /// How long a deploy takes (inside the call, before the instance exists).
    pub deploy_delay: Duration,
    /// Failpoints: what deploys of one instance answer, instead of `mode`.
    pub failpoints: HashMap<InstanceId, Mode>,
}

/// A runtime that does what the test says and remembers everything.
#[derive(Debug, Default)]
pub struct FakeRuntime {
    pub state: Mutex<FakeState>,
}

impl FakeRuntime {
    pub fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
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
        _started_at_ms: u64,
    ) -> RuntimeResult<Placement> {
        let (mode, delay) = self.with(|s| {
            s.deploy_calls.push((id.instance, Instant::now()));
            let mode = match s.failpoints.get_mut(&id.instance) {
                Some(Mode::FailsTimes(0)) => Mode::Works,
                Some(Mode::FailsTimes(n)) => {
                    *n -= 1;
                    Mode::Unavailable
                }
                Some(mode) => mode.clone(),
                None => s.mode.clone(),
            };
            (mode, s.deploy_delay)
        });
        match mode {
            Mode::Works | Mode::FailsTimes(_) => {}
            Mode::Unavailable => return Err(RuntimeError::Unavailable("API server down".into())),
            Mode::Rejected(m) => return Err(RuntimeError::Rejected(m)),
            Mode::Hangs => std::future::pending::<()>().await,
        }
        tokio::time::sleep(delay).await;
        self.with(|s| {
            if let std::collections::hash_map::Entry::Vacant(slot) = s.instances.entry(id.instance)
            {
                slot.insert(*id);
                *s.created.entry(id.instance).or_default() += 1;
            }
        });
        Ok(Placement {
            route: format!("fake-{}", id.instance),
        })
    }

    async fn remove(&self, id: &InstanceRef) -> RuntimeResult<()> {
        self.with(|s| {
            s.instances.remove(&id.instance);
            s.removed.push(id.instance);
        });
        Ok(())
    }

    async fn in_progress(&self) -> RuntimeResult<u32> {
        Ok(self.with(|s| {
            s.in_progress_calls += 1;
            let creating = if s.instances_in_progress {
                u32::try_from(s.instances.len()).unwrap()
            } else {
                0
            };
            s.in_progress + creating
        }))
    }

    async fn snapshot(&self) -> RuntimeResult<Vec<Observed>> {
        Err(RuntimeError::Unavailable("not used".into()))
    }

    async fn logs(&self, _id: &InstanceRef, _tail: u32) -> RuntimeResult<String> {
        Err(RuntimeError::NotFound)
    }
}

/// Settings with short delays, so retries show quickly.
pub fn test_settings() -> ConsumerSettings {
    ConsumerSettings {
        prefetch: NonZeroU16::new(40).unwrap(),
        budget: 100,
        retry_base: Duration::from_millis(10),
        retry_max: Duration::from_millis(80),
        delivery_limit: 3,
        deploying_ttl: Duration::from_secs(60),
        ended_ttl: Duration::from_secs(30),
        budget_poll: Duration::from_millis(20),
        shutdown_grace: Duration::from_secs(5),
    }
}

pub fn spec() -> DeploySpec {
    DeploySpec {
        challenge_name: "consumer test".to_owned(),
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

/// One consumer under test with its queue, store and runtime.
#[derive(Clone)]
pub struct Harness {
    pub queue: Arc<dyn JobQueue>,
    pub store: Arc<dyn StateStore>,
    pub runtime: Arc<dyn InstanceRuntime>,
    pub settings: ConsumerSettings,
}

/// A running consumer.
pub struct Running {
    handle: JoinHandle<Result<(), ConsumerError>>,
    stop: oneshot::Sender<()>,
}

impl Running {
    /// Graceful shutdown; returns what `run` returned.
    pub async fn stop(self) -> Result<(), ConsumerError> {
        let _ = self.stop.send(());
        self.handle.await.unwrap()
    }

    /// Waits for the consumer to end on its own.
    pub async fn join(self) -> Result<(), ConsumerError> {
        let _keep_running = self.stop;
        self.handle.await.unwrap()
    }

    /// Kills the consumer where it stands (its unsettled deliveries go back to the queue).
    pub async fn kill(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

impl Harness {
    pub fn memory(runtime: Arc<dyn InstanceRuntime>) -> (Self, MemoryQueue) {
        let queue = MemoryQueue::new(&Topology::default());
        (
            Self {
                queue: Arc::new(queue.clone()),
                store: Arc::new(MemoryStore::new()),
                runtime,
                settings: test_settings(),
            },
            queue,
        )
    }

    pub fn start(&self) -> Running {
        self.start_counted(Arc::new(ConsumerMetrics::default()))
    }

    /// [`Self::start`], counting into `metrics`.
    pub fn start_counted(&self, metrics: Arc<ConsumerMetrics>) -> Running {
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(consumer::run_with_metrics(
            self.queue.clone(),
            self.store.clone(),
            self.runtime.clone(),
            self.settings.clone(),
            metrics,
            async move {
                let _ = stopped.await;
            },
        ));
        Running { handle, stop }
    }

    /// Reserves a slot for `team` (as the Deployment Center does) and returns the start job,
    /// not yet published.
    pub async fn reserve(&self, team: i64, ttl: Duration) -> DeployJob {
        let job = DeployJob::start(
            TeamId(team),
            ChallengeId(1),
            InstanceId::new(),
            spec(),
            clock::unix_now_millis(),
            ttl,
        );
        let record = DeploymentRecord {
            team: job.team,
            challenge: job.challenge,
            instance: job.instance,
            state: DeploymentState::Queued,
            version: 0,
            route: None,
            reason: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            expires_at_ms: None,
        };
        let reserved = self
            .store
            .reserve_instance(&record, 10, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(matches!(reserved, Reservation::Reserved(_)), "{reserved:?}");
        job
    }

    /// Reserves and publishes a start job.
    pub async fn start_job(&self, team: i64) -> DeployJob {
        let job = self.reserve(team, Duration::from_secs(60)).await;
        self.queue.publish(&job).await.unwrap();
        job
    }

    pub async fn record(&self, job: &DeployJob) -> Option<DeploymentRecord> {
        self.store
            .get_deployment(job.team, job.challenge)
            .await
            .unwrap()
    }

    /// Waits until the record of `job`'s slot satisfies `want`.
    pub async fn wait_record(
        &self,
        job: &DeployJob,
        what: &str,
        want: impl Fn(Option<&DeploymentRecord>) -> bool,
    ) -> Option<DeploymentRecord> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let record = self.record(job).await;
            if want(record.as_ref()) {
                return record;
            }
            assert!(Instant::now() < deadline, "{what}: record is {record:#?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn wait_state(&self, job: &DeployJob, state: DeploymentState) -> DeploymentRecord {
        self.wait_record(job, &format!("{state:?}"), |r| {
            r.is_some_and(|r| r.instance == job.instance && r.state == state)
        })
        .await
        .unwrap()
    }

    /// Waits for `n` parked jobs and returns them.
    pub async fn wait_parked(&self, n: usize) -> Vec<fctf_core::queue::ParkedJob> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut parked = Vec::new();
        while parked.len() < n {
            parked.extend(self.queue.take_parked(n - parked.len()).await.unwrap());
            assert!(Instant::now() < deadline, "only {} parked", parked.len());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        parked
    }

    pub async fn stats(&self) -> QueueStats {
        self.queue.stats().await.unwrap()
    }
}

/// Waits until `check` holds (polling).
pub async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
