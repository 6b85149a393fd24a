//! A queue per test (in-process or on the real broker), jobs to put in it, and patient readers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fctf_core::clock;
use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_core::queue::{
    AmqpQueue, DEFAULT_PUBLISH_TIMEOUT, Delivery, DeployJob, DeploySpec, JobConsumer, JobQueue,
    MemoryQueue, ParkedJob, Topology,
};
use lapin::options::{BasicPublishOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};

use crate::services;

/// Which implementation a conformance case runs against.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Memory,
    Amqp,
}

/// One queue, private to one test.
pub struct Fixture {
    pub queue: Arc<dyn JobQueue>,
    pub topology: Topology,
    memory: Option<MemoryQueue>,
    /// Deletes the broker objects when the test ends (also when it panics).
    _cleanup: Option<BrokerCleanup>,
}

impl Backend {
    pub async fn open(self, test: &str, max_length: u32) -> Fixture {
        match self {
            Backend::Memory => {
                let topology = Topology {
                    max_length,
                    ..Topology::default()
                };
                let memory = MemoryQueue::new(&topology);
                Fixture {
                    queue: Arc::new(memory.clone()),
                    topology,
                    memory: Some(memory),
                    _cleanup: None,
                }
            }
            Backend::Amqp => {
                services::require_rabbitmq().await;
                let topology = unique_topology(test, max_length);
                let cleanup = BrokerCleanup(topology.clone());
                let queue =
                    AmqpQueue::connect(&services::amqp_url(), &topology, DEFAULT_PUBLISH_TIMEOUT)
                        .await
                        .unwrap_or_else(|e| panic!("connect to RabbitMQ: {e}"));
                Fixture {
                    queue: Arc::new(queue),
                    topology,
                    memory: None,
                    _cleanup: Some(cleanup),
                }
            }
        }
    }
}

/// A topology with names no other test uses, in the `fctf_deploy` vhost.
pub fn unique_topology(test: &str, max_length: u32) -> Topology {
    let prefix = services::unique_prefix(test);
    Topology {
        exchange: format!("{prefix}exchange"),
        queue: format!("{prefix}queue"),
        dead_letter_exchange: format!("{prefix}dlx"),
        parked_queue: format!("{prefix}parked"),
        max_length,
        parked_max_length: 100,
        ..Topology::default()
    }
}

/// The AMQP URL of the test broker with the topology's vhost, for raw lapin connections.
pub fn raw_url(topology: &Topology) -> String {
    format!("{}/{}", services::amqp_url(), topology.vhost)
}

pub async fn raw_connection(topology: &Topology) -> Connection {
    Connection::connect(&raw_url(topology), ConnectionProperties::default())
        .await
        .expect("raw connection to RabbitMQ")
}

/// Deletes a topology's exchanges and queues. Runs in `Drop` on its own thread and runtime, so it
/// works from a failing test too.
pub struct BrokerCleanup(pub Topology);

impl Drop for BrokerCleanup {
    fn drop(&mut self) {
        let topology = self.0.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(delete_topology(&topology));
        });
        let _ = cleanup.join();
    }
}

async fn delete_topology(topology: &Topology) {
    let Ok(connection) =
        Connection::connect(&raw_url(topology), ConnectionProperties::default()).await
    else {
        return;
    };
    // A fresh channel per object: deleting something already gone closes the channel (404).
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

impl Fixture {
    /// Enqueues bytes that need not be a valid job, as a foreign publisher would.
    pub async fn publish_raw(&self, payload: &[u8]) {
        if let Some(memory) = &self.memory {
            memory
                .publish_raw(payload.to_vec(), Duration::from_secs(60))
                .expect("room for a raw message");
            return;
        }
        let connection = raw_connection(&self.topology).await;
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(Default::default())
            .await
            .expect("confirm mode");
        let confirmation = channel
            .basic_publish(
                self.topology.exchange.as_str().into(),
                self.topology.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                payload,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert_eq!(confirmation, lapin::Confirmation::Ack(None));
        let _ = connection.close(200, "done".into()).await;
    }
}

/// A valid start job that expires after `ttl`.
pub fn start_job(ttl: Duration) -> DeployJob {
    DeployJob::start(
        TeamId(7),
        ChallengeId(42),
        InstanceId::new(),
        DeploySpec {
            challenge_name: "Baby Heap".to_owned(),
            image: Some("registry.local/ctf/baby-heap:1".to_owned()),
            command: None,
            container_port: 1337,
            cpu_millicores: 500,
            memory_mib: 256,
            use_gvisor: true,
            harden: true,
            lifetime_secs: 3600,
            env: BTreeMap::from([("MODE".to_owned(), "test".to_owned())]),
        },
        clock::unix_now_millis(),
        ttl,
    )
}

/// A valid start job that stays fresh for the whole test.
pub fn fresh_job() -> DeployJob {
    start_job(Duration::from_secs(120))
}

/// How long "nothing arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(400);
/// How long something that must arrive may take.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// The next delivery; fails the test if none arrives in time or the consumer fails.
pub async fn next(consumer: &mut JobConsumer) -> Delivery {
    tokio::time::timeout(PATIENCE, consumer.next())
        .await
        .expect("a delivery within the patience window")
        .expect("consumer healthy")
}

/// Fails the test if a delivery arrives within [`QUIET`].
pub async fn assert_quiet(consumer: &mut JobConsumer) {
    if let Ok(result) = tokio::time::timeout(QUIET, consumer.next()).await {
        panic!("expected no delivery, got {result:?}");
    }
}

/// Takes parked jobs until `count` have been seen or the patience runs out (the broker
/// dead-letters asynchronously).
pub async fn take_parked(queue: &dyn JobQueue, count: usize) -> Vec<ParkedJob> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut parked = Vec::new();
    while parked.len() < count && tokio::time::Instant::now() < deadline {
        parked.extend(
            queue
                .take_parked(count - parked.len())
                .await
                .expect("take parked"),
        );
        if parked.len() < count {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    parked
}

pub fn job_of(delivery: &Delivery) -> DeployJob {
    delivery.job().expect("a valid job").clone()
}
