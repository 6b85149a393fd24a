//! One whole pipeline per test: Deployment Center, consumer, listener, local runtime, on
//! RabbitMQ, Redis and MariaDB, with waits bounded in time.

#![allow(dead_code)] // each test module uses part of this

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fctf_control::deployment::CenterKeys;
use fctf_control::deployment::DeploymentCenter;
use fctf_control::deployment::contract::{InstanceKey, InstanceTarget, StartRequest};
use fctf_core::config::DeploymentConfig;
use fctf_core::db::{Database, ScratchDatabase};
use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_core::queue::{AmqpQueue, DeploySpec, JobQueue, Topology};
use fctf_core::runtime::{InstanceRuntime, Observed};
use fctf_core::signing::{KeyRing, SigningKey};
use fctf_core::store::{DeploymentRecord, RedisStore, StateStore};
use fctf_core::token::TokenKey;
use fctf_workers::consumer::{self, ConsumerSettings};
use fctf_workers::listener::poll::SnapshotPoller;
use fctf_workers::listener::{ChangeFeed, FixedContestWindow, Listener, Rules};
use fctf_workers::runtime::local::{LocalRuntime, LocalSettings};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672";
pub const MARIADB_URL: &str = "mysql://root@127.0.0.1:3306/test";
pub const TOKEN_SECRET: &[u8] = b"pipeline-test-token-secret-0123456789abcdef";
const SIGNING_SECRET: &[u8] = b"pipeline-test-signing-secret-0123456789abcdef";

/// Fails the test loudly unless something accepts TCP connections at `addr`.
pub async fn require(service: &str, addr: &str) {
    let ok = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(
        ok,
        "{service} does not answer on {addr}; this test needs it"
    );
}

pub fn token_key() -> TokenKey {
    TokenKey::new("k1", TOKEN_SECRET.to_vec()).unwrap()
}

pub fn now_ms() -> u64 {
    fctf_core::clock::unix_now_millis()
}

pub fn key(team: i64, challenge: i64) -> InstanceKey {
    InstanceKey {
        team: TeamId(team),
        challenge: ChallengeId(challenge),
    }
}

pub fn target(key: InstanceKey) -> InstanceTarget {
    InstanceTarget {
        key,
        instance: None,
    }
}

/// The demo web challenge of the `fctf` binary (reads `PORT`, `HOST` and `FLAG`).
pub fn http_spec(lifetime_secs: u64) -> DeploySpec {
    DeploySpec {
        challenge_name: "pipeline demo".to_owned(),
        image: None,
        command: Some(vec![
            env!("CARGO_BIN_EXE_fctf").to_owned(),
            "demo-challenge".to_owned(),
            "http".to_owned(),
        ]),
        container_port: 80,
        cpu_millicores: 100,
        memory_mib: 64,
        use_gvisor: false,
        harden: false,
        lifetime_secs,
        env: BTreeMap::from([("FLAG".to_owned(), "FCTF{pipeline}".to_owned())]),
    }
}

pub fn start_request(key: InstanceKey, lifetime_secs: u64) -> StartRequest {
    StartRequest {
        key,
        quota: 3,
        spec: http_spec(lifetime_secs),
        contest_ends_at_ms: None,
    }
}

/// A task the test can stop gracefully or kill where it stands.
pub struct Task {
    handle: JoinHandle<()>,
    stop: oneshot::Sender<()>,
}

impl Task {
    fn spawn<F: Future<Output = ()> + Send + 'static>(
        run: impl FnOnce(oneshot::Receiver<()>) -> F,
    ) -> Task {
        let (stop, stopped) = oneshot::channel();
        Task {
            handle: tokio::spawn(run(stopped)),
            stop,
        }
    }

    /// Graceful stop, waited for.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("stops within 30 s")
            .unwrap();
    }

    /// Aborted at its next await point (as a SIGKILL would end it: nothing settled after).
    pub async fn kill(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

/// What every test needs, on the real servers.
pub struct Pipeline {
    pub center: Arc<DeploymentCenter>,
    pub store: Arc<dyn StateStore>,
    pub queue: Arc<dyn JobQueue>,
    pub runtime: LocalRuntime,
    pub db: Database,
    pub topology: Topology,
    scratch: Option<ScratchDatabase>,
    dir: PathBuf,
    finished: bool,
}

impl Pipeline {
    /// A fresh pipeline whose deploy queue holds `max_length` ready jobs.
    pub async fn new(test: &str, max_length: u32) -> Pipeline {
        require("Redis", "127.0.0.1:6379").await;
        require("RabbitMQ", "127.0.0.1:5672").await;
        require("MariaDB", "127.0.0.1:3306").await;
        let unique = format!("fctf-test:pipeline-{test}:{}:", InstanceId::new());
        let store: Arc<dyn StateStore> = Arc::new(
            RedisStore::connect(REDIS_URL, &unique, Duration::from_secs(5))
                .await
                .unwrap(),
        );
        let topology = Topology {
            exchange: format!("{unique}exchange"),
            queue: format!("{unique}queue"),
            dead_letter_exchange: format!("{unique}dlx"),
            parked_queue: format!("{unique}parked"),
            max_length,
            parked_max_length: 100,
            ..Topology::default()
        };
        let queue: Arc<dyn JobQueue> = Arc::new(
            AmqpQueue::connect(AMQP_URL, &topology, Duration::from_secs(5))
                .await
                .unwrap(),
        );
        let scratch = ScratchDatabase::create(MARIADB_URL, 8).await.unwrap();
        scratch.db.migrate().await.unwrap();
        let dir = std::env::temp_dir().join(format!("fctf-pipeline-{test}-{}", InstanceId::new()));
        let runtime = LocalRuntime::open(
            dir.join("state"),
            LocalSettings {
                stop_grace: Duration::from_millis(500),
                ready_timeout: Duration::from_secs(60),
                ..LocalSettings::default()
            },
        )
        .await
        .unwrap();
        let config = DeploymentConfig {
            provisional_ttl_secs: 300,
            ..DeploymentConfig::default()
        };
        let keys = CenterKeys {
            signing: KeyRing::from(SigningKey::new("s1", SIGNING_SECRET).unwrap()),
            signing_window: Duration::from_secs(60),
            token: token_key(),
        };
        let center = Arc::new(
            DeploymentCenter::new(store.clone(), queue.clone(), &config, keys)
                .with_runtime(Arc::new(runtime.clone())),
        );
        Pipeline {
            center,
            store,
            queue,
            runtime,
            db: scratch.db.clone(),
            topology,
            scratch: Some(scratch),
            dir,
            finished: false,
        }
    }

    pub fn consumer_settings() -> ConsumerSettings {
        ConsumerSettings {
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
            budget_poll: Duration::from_millis(50),
            shutdown_grace: Duration::from_secs(5),
            deploying_ttl: Duration::from_secs(300),
            ..ConsumerSettings::default()
        }
    }

    /// A Deployment Consumer on this pipeline's queue (prefetch 40).
    pub fn start_consumer(&self) -> Task {
        self.start_consumer_on(Arc::new(self.runtime.clone()))
    }

    /// A consumer whose every deploy first waits `delay` (no deploy settles before it), so a
    /// test can act mid-batch however fast the runtime is.
    pub fn start_slow_consumer(&self, delay: Duration) -> Task {
        self.start_consumer_on(Arc::new(SlowDeploys {
            inner: self.runtime.clone(),
            delay,
        }))
    }

    fn start_consumer_on(&self, runtime: Arc<dyn InstanceRuntime>) -> Task {
        let (queue, store) = (self.queue.clone(), self.store.clone());
        Task::spawn(move |stopped| async move {
            consumer::run(queue, store, runtime, Self::consumer_settings(), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        })
    }

    /// A Deployment Listener as `fctf listener` runs it on the local runtime (snapshot poller
    /// every 100 ms, full resync every `resync`), with the contest ending at `contest_end`.
    pub fn start_listener(&self, contest_end: Option<u64>, resync: Duration) -> Task {
        let runtime = Arc::new(self.runtime.clone()) as Arc<dyn InstanceRuntime>;
        let listener = Arc::new(Listener::new(
            runtime.clone(),
            self.store.clone(),
            self.db.clone(),
            Arc::new(FixedContestWindow(contest_end)),
            Rules::default(),
        ));
        let feed: Arc<dyn ChangeFeed> =
            Arc::new(SnapshotPoller::new(runtime, Duration::from_millis(100)));
        Task::spawn(move |stopped| async move {
            listener
                .run(Some(feed), resync, 4, async {
                    let _ = stopped.await;
                })
                .await;
        })
    }

    pub async fn record(&self, key: InstanceKey) -> Option<DeploymentRecord> {
        self.store
            .get_deployment(key.team, key.challenge)
            .await
            .unwrap()
    }

    pub async fn snapshot(&self) -> Vec<Observed> {
        self.runtime.snapshot().await.unwrap()
    }

    /// Waits (up to `limit`) until `done` holds for the records of `keys`; returns them.
    pub async fn wait_records(
        &self,
        keys: &[InstanceKey],
        limit: Duration,
        what: &str,
        done: impl Fn(&Option<DeploymentRecord>) -> bool,
    ) -> HashMap<InstanceKey, Option<DeploymentRecord>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let mut all = HashMap::new();
            for key in keys {
                all.insert(*key, self.record(*key).await);
            }
            let pending: Vec<_> = all.iter().filter(|(_, r)| !done(r)).collect();
            if pending.is_empty() {
                return all;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {} records not {what} after {limit:?}; first: {:?}",
                pending.len(),
                keys.len(),
                pending.first()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits (up to 20 s) until the tracking row of `instance` exists and is closed: the
    /// listener writes the store first and the database last, so a record may say Stopped an
    /// instant before its row closes.
    pub async fn wait_row_closed(&self, instance: InstanceId) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let row = self.db.tracking_get(instance).await.unwrap();
            if row.as_ref().is_some_and(|r| r.stopped_at_ms.is_some()) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "row of {instance} not closed: {row:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Removes every instance, deletes the broker objects, the database and the directory.
    pub async fn finish(mut self) {
        for seen in self.snapshot().await {
            let _ = self.runtime.remove(&seen.id).await;
        }
        delete_topology(&self.topology).await;
        if let Some(scratch) = self.scratch.take() {
            scratch.drop_database().await.unwrap();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        self.finished = true;
    }
}

impl Drop for Pipeline {
    /// A failed test still leaves no process and no broker object behind.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let runtime = self.runtime.clone();
        let topology = self.topology.clone();
        let dir = self.dir.clone();
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async {
                for seen in runtime.snapshot().await.unwrap_or_default() {
                    let _ = runtime.remove(&seen.id).await;
                }
                delete_topology(&topology).await;
            });
            let _ = std::fs::remove_dir_all(&dir);
        });
        let _ = cleanup.join();
    }
}

async fn delete_topology(topology: &Topology) {
    let url = format!("{AMQP_URL}/{}", topology.vhost);
    let Ok(connection) = Connection::connect(&url, ConnectionProperties::default()).await else {
        return;
    };
    for queue in [&topology.queue, &topology.parked_queue] {
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    for exchange in [&topology.exchange, &topology.dead_letter_exchange] {
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = connection.close(200, "test cleanup".into()).await;
}

/// The local runtime with every deploy delayed.
#[derive(Debug)]
struct SlowDeploys {
    inner: LocalRuntime,
    delay: Duration,
}

#[async_trait::async_trait]
impl InstanceRuntime for SlowDeploys {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn deploy(
        &self,
        id: &fctf_core::runtime::InstanceRef,
        spec: &DeploySpec,
        started_at_ms: u64,
    ) -> fctf_core::runtime::RuntimeResult<fctf_core::runtime::Placement> {
        tokio::time::sleep(self.delay).await;
        self.inner.deploy(id, spec, started_at_ms).await
    }

    async fn remove(
        &self,
        id: &fctf_core::runtime::InstanceRef,
    ) -> fctf_core::runtime::RuntimeResult<()> {
        self.inner.remove(id).await
    }

    async fn in_progress(&self) -> fctf_core::runtime::RuntimeResult<u32> {
        self.inner.in_progress().await
    }

    async fn snapshot(&self) -> fctf_core::runtime::RuntimeResult<Vec<Observed>> {
        self.inner.snapshot().await
    }

    async fn logs(
        &self,
        id: &fctf_core::runtime::InstanceRef,
        tail: u32,
    ) -> fctf_core::runtime::RuntimeResult<String> {
        self.inner.logs(id, tail).await
    }

    async fn set_deadline(
        &self,
        id: &fctf_core::runtime::InstanceRef,
        ends_at_ms: u64,
    ) -> fctf_core::runtime::RuntimeResult<()> {
        self.inner.set_deadline(id, ends_at_ms).await
    }
}
