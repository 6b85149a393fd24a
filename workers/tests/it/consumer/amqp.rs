//! The shared consumer cases on the real RabbitMQ (a topology of its own per test) and the real
//! Redis (a key prefix of its own per test), and a lost broker connection.

use std::sync::Arc;
use std::time::Duration;

use fctf_core::queue::{AmqpQueue, DEFAULT_PUBLISH_TIMEOUT, Topology};
use fctf_core::store::{DeploymentState, RedisStore};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};

use super::support::{FakeRuntime, Harness, test_settings};

fn redis_url() -> String {
    std::env::var("FCTF_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn amqp_url() -> String {
    std::env::var("FCTF_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_owned())
}

fn unique(test: &str) -> String {
    format!(
        "fctf-test:consumer-{test}:{}:",
        uuid::Uuid::new_v4().simple()
    )
}

/// Deletes the test's broker objects when dropped (on its own thread: it runs from a failing
/// test too).
pub struct BrokerCleanup(Topology);

impl Drop for BrokerCleanup {
    fn drop(&mut self) {
        let topology = self.0.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let url = format!("{}/{}", amqp_url(), topology.vhost);
                let Ok(connection) =
                    Connection::connect(&url, ConnectionProperties::default()).await
                else {
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
                            .exchange_delete(
                                exchange.as_str().into(),
                                ExchangeDeleteOptions::default(),
                            )
                            .await;
                    }
                }
                let _ = connection.close(200, "cleanup".into()).await;
            });
        })
        .join();
    }
}

/// A harness on RabbitMQ and Redis, private to `test`. Fails loudly when a server is down.
pub async fn open(test: &str) -> (Harness, Arc<AmqpQueue>, BrokerCleanup) {
    let prefix = unique(test);
    let topology = Topology {
        exchange: format!("{prefix}exchange"),
        queue: format!("{prefix}queue"),
        dead_letter_exchange: format!("{prefix}dlx"),
        parked_queue: format!("{prefix}parked"),
        parked_max_length: 100,
        ..Topology::default()
    };
    let cleanup = BrokerCleanup(topology.clone());
    let queue = AmqpQueue::connect(&amqp_url(), &topology, DEFAULT_PUBLISH_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ at {} must answer: {e}", amqp_url()));
    let store = RedisStore::connect(&redis_url(), &prefix, Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("Redis at {} must answer: {e}", redis_url()));
    let queue = Arc::new(queue);
    let harness = Harness {
        queue: queue.clone(),
        store: Arc::new(store),
        runtime: Arc::new(FakeRuntime::default()),
        settings: test_settings(),
    };
    (harness, queue, cleanup)
}

async fn setup(test: &str) -> (Harness, Arc<FakeRuntime>, BrokerCleanup) {
    let (mut harness, _, cleanup) = open(test).await;
    let fake = Arc::new(FakeRuntime::default());
    harness.runtime = fake.clone();
    (harness, fake, cleanup)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_broker_connection_is_consumed_again() {
    let (mut h, queue, _cleanup) = open("connection-lost").await;
    let fake = Arc::new(FakeRuntime::default());
    h.runtime = fake.clone();
    let consumer = h.start();
    let before = h.start_job(1).await;
    h.wait_state(&before, DeploymentState::Deploying).await;
    // The connection goes away under the consumer; the next job is still carried out.
    queue.close().await.unwrap();
    let after = h.start_job(2).await;
    h.wait_state(&after, DeploymentState::Deploying).await;
    consumer.stop().await.unwrap();
    assert_eq!(fake.with(|s| s.created.len()), 2);
}
