//! What only the RabbitMQ implementation has: the shared topology declaration and its 406, routing
//! failures, the message properties on the wire, and the behaviour when the broker goes away or
//! stalls.

use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use fctf_core::queue::{
    AmqpQueue, ArgumentValue, DEFAULT_PUBLISH_TIMEOUT, DeployJob, JobQueue, QueueError,
    RECONNECT_BACKOFF, Topology, declare,
};
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};

use super::fixture::{
    BrokerCleanup, assert_quiet, fresh_job, job_of, next, raw_connection, unique_topology,
};
use super::proxy::Proxy;
use crate::services;

fn one() -> NonZeroU16 {
    NonZeroU16::new(1).expect("non-zero")
}

async fn connect(topology: &Topology) -> Result<AmqpQueue, QueueError> {
    AmqpQueue::connect(&services::amqp_url(), topology, DEFAULT_PUBLISH_TIMEOUT).await
}

fn test_broker() -> lapin::uri::AMQPUri {
    services::amqp_url().parse().expect("test AMQP URL")
}

/// The test broker's `host:port` (what the proxy relays to).
fn broker_addr() -> String {
    let uri = test_broker();
    format!("{}:{}", uri.authority.host, uri.authority.port)
}

/// The test broker's URL (same credentials) pointed at `port` on loopback instead.
fn url_via(port: u16) -> String {
    let user = test_broker().authority.userinfo;
    format!(
        "amqp://{}:{}@127.0.0.1:{port}",
        user.username, user.password
    )
}

/// T57: the consumer side and the publisher side declare the same topology, in either order.
#[tokio::test]
async fn both_sides_declare_the_same_topology_in_either_order() {
    services::require_rabbitmq().await;
    for _ in 0..2 {
        let topology = unique_topology("declare_order", 5);
        let _cleanup = BrokerCleanup(topology.clone());
        let first = connect(&topology).await.expect("first side");
        let second = connect(&topology)
            .await
            .expect("second side redeclares identically");
        // Whichever connected first, jobs flow from one to the other.
        let job = fresh_job();
        second.publish(&job).await.expect("publish");
        let mut consumer = first.consume(one()).await.expect("consume");
        let d = next(&mut consumer).await;
        assert_eq!(job_of(&d), job);
        d.ack().await.expect("ack");
        drop(consumer);
        let job = fresh_job();
        first.publish(&job).await.expect("publish");
        let mut consumer = second.consume(one()).await.expect("consume");
        let d = next(&mut consumer).await;
        assert_eq!(job_of(&d), job);
        d.ack().await.expect("ack");
    }
}

/// T57: a redeclaration with another argument is the broker's 406, surfaced as a startup error.
#[tokio::test]
async fn a_mismatched_redeclare_is_a_loud_error() {
    services::require_rabbitmq().await;
    let topology = unique_topology("mismatch", 5);
    let _cleanup = BrokerCleanup(topology.clone());
    let _existing = connect(&topology).await.expect("first declaration");

    let other_bound = Topology {
        max_length: 6,
        ..topology.clone()
    };
    match connect(&other_bound).await {
        Err(QueueError::TopologyMismatch(message)) => {
            assert!(message.contains("PRECONDITION_FAILED"), "{message}");
            assert!(message.contains("x-max-length"), "{message}");
        }
        other => panic!("expected a topology mismatch, got {other:?}"),
    }

    // The public declare function says the same on a raw channel, and the broker closed it.
    let connection = raw_connection(&topology).await;
    let channel = connection.create_channel().await.expect("channel");
    assert!(matches!(
        declare(&channel, &other_bound).await,
        Err(QueueError::TopologyMismatch(_))
    ));
    assert!(
        !channel.status().connected(),
        "the broker closed the channel"
    );
    // An identical declaration on a fresh channel is still fine.
    let channel = connection.create_channel().await.expect("channel");
    declare(&channel, &topology)
        .await
        .expect("identical redeclare");
}

/// A quorum queue left under the queue's name is refused (explicit `x-queue-type=classic`).
#[tokio::test]
async fn a_queue_of_another_type_is_a_loud_error() {
    services::require_rabbitmq().await;
    let topology = unique_topology("other_type", 5);
    let _cleanup = BrokerCleanup(topology.clone());
    let connection = raw_connection(&topology).await;
    let channel = connection.create_channel().await.expect("channel");
    // Everything as the topology declares it, except the type.
    let mut arguments = FieldTable::default();
    for (key, value) in topology.queue_arguments() {
        let value = match (key, value) {
            ("x-queue-type", _) => AMQPValue::LongString("quorum".into()),
            (_, ArgumentValue::Int(n)) => AMQPValue::LongLongInt(n),
            (_, ArgumentValue::Text(s)) => AMQPValue::LongString(s.into()),
        };
        arguments.insert(key.into(), value);
    }
    channel
        .queue_declare(
            topology.queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .expect("quorum queue");
    match connect(&topology).await {
        Err(QueueError::TopologyMismatch(message)) => {
            assert!(message.contains("x-queue-type"), "{message}");
        }
        other => panic!("expected a topology mismatch, got {other:?}"),
    }
}

/// T59 (b), (c): a missing binding is a returned message acked by the broker (lapin's
/// `Confirmation::Ack(Some(_))`); it must be an error, never a success.
#[tokio::test]
async fn a_missing_binding_makes_publish_unroutable() {
    services::require_rabbitmq().await;
    let topology = unique_topology("unbound", 5);
    let _cleanup = BrokerCleanup(topology.clone());
    let queue = connect(&topology).await.expect("connect");
    let connection = raw_connection(&topology).await;
    let channel = connection.create_channel().await.expect("channel");
    channel
        .queue_unbind(
            topology.queue.as_str().into(),
            topology.exchange.as_str().into(),
            topology.routing_key.as_str().into(),
            FieldTable::default(),
        )
        .await
        .expect("unbind");

    match queue.publish(&fresh_job()).await {
        Err(QueueError::Unroutable(reason)) => assert!(reason.contains("NO_ROUTE"), "{reason}"),
        other => panic!("expected Unroutable, got {other:?}"),
    }
    assert_eq!(queue.stats().await.expect("stats").ready, 0);

    channel
        .queue_bind(
            topology.queue.as_str().into(),
            topology.exchange.as_str().into(),
            topology.routing_key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind again");
    queue.publish(&fresh_job()).await.expect("routable again");
}

/// A deleted exchange (the broker closes the publishing channel with 404) is `Unroutable` too,
/// and the queue keeps working once the exchange is back: the closed channel is replaced.
#[tokio::test]
async fn a_missing_exchange_makes_publish_unroutable() {
    services::require_rabbitmq().await;
    let topology = unique_topology("no_exchange", 5);
    let _cleanup = BrokerCleanup(topology.clone());
    let queue = connect(&topology).await.expect("connect");
    let connection = raw_connection(&topology).await;
    let channel = connection.create_channel().await.expect("channel");
    channel
        .exchange_delete(topology.exchange.as_str().into(), Default::default())
        .await
        .expect("delete exchange");

    for _ in 0..2 {
        match queue.publish(&fresh_job()).await {
            Err(QueueError::Unroutable(reason)) => {
                assert!(reason.contains("NOT_FOUND"), "{reason}")
            }
            other => panic!("expected Unroutable, got {other:?}"),
        }
    }
    declare(&channel, &topology)
        .await
        .expect("restore topology");
    queue
        .publish(&fresh_job())
        .await
        .expect("publishing works again");
}

/// Persistent, expiring at the job's remaining TTL, identified by the job id.
#[tokio::test]
async fn published_messages_carry_the_agreed_properties() {
    services::require_rabbitmq().await;
    let topology = unique_topology("properties", 5);
    let _cleanup = BrokerCleanup(topology.clone());
    let queue = connect(&topology).await.expect("connect");
    let job = fresh_job();
    queue.publish(&job).await.expect("publish");

    let connection = raw_connection(&topology).await;
    let channel = connection.create_channel().await.expect("channel");
    let message = channel
        .basic_get(
            topology.queue.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .expect("get")
        .expect("the job is in the queue");
    let properties = &message.delivery.properties;
    assert_eq!(*properties.delivery_mode(), Some(2));
    assert_eq!(
        properties.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(
        properties.message_id().as_ref().map(|s| s.to_string()),
        Some(job.job_id.to_string())
    );
    let expiration: u64 = properties
        .expiration()
        .as_ref()
        .expect("an expiration")
        .as_str()
        .parse()
        .expect("milliseconds");
    let ttl = job.expires_at_ms - job.enqueued_at_ms;
    assert!(
        expiration <= ttl && expiration > ttl - 5_000,
        "expiration {expiration} ms vs TTL {ttl} ms"
    );
    assert_eq!(DeployJob::decode(&message.delivery.data), Ok(job));
}

/// Nothing listens on port 1: the answer is `Unavailable`, quickly.
#[tokio::test]
async fn an_unreachable_broker_is_unavailable_quickly() {
    let url = url_via(1);
    let started = Instant::now();
    let result = AmqpQueue::connect(&url, &Topology::default(), DEFAULT_PUBLISH_TIMEOUT).await;
    let took = started.elapsed();
    assert!(
        matches!(result, Err(QueueError::Unavailable(_))),
        "{result:?}"
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

/// T60 without stopping the shared broker: the connection is cut (a proxy in between closes it and
/// refuses new ones). Publishing fails fast with `Unavailable`, the consumer reports the loss, and
/// once the broker is reachable again the same `AmqpQueue` publishes and consumes, losing nothing.
#[tokio::test]
async fn connection_loss_fails_fast_and_recovers_without_restart() {
    services::require_rabbitmq().await;
    let topology = unique_topology("reconnect", 10);
    let _cleanup = BrokerCleanup(topology.clone());
    let proxy = Proxy::start(&broker_addr()).await;
    let url = url_via(proxy.port());
    let queue = AmqpQueue::connect(&url, &topology, DEFAULT_PUBLISH_TIMEOUT)
        .await
        .expect("connect through the proxy");
    let before = fresh_job();
    queue.publish(&before).await.expect("publish");
    let mut consumer = queue.consume(one()).await.expect("consume");
    let unsettled = next(&mut consumer).await;

    proxy.cut();
    let lost = tokio::time::timeout(Duration::from_secs(2), consumer.next())
        .await
        .expect("the consumer notices the loss");
    assert!(matches!(lost, Err(QueueError::Unavailable(_))), "{lost:?}");
    assert!(matches!(
        consumer.next().await,
        Err(QueueError::Unavailable(_))
    ));
    assert!(matches!(
        unsettled.ack().await,
        Err(QueueError::Unavailable(_))
    ));

    for _ in 0..3 {
        let started = Instant::now();
        let result = queue.publish(&fresh_job()).await;
        assert!(
            matches!(result, Err(QueueError::Unavailable(_))),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(1), "fails fast");
    }

    proxy.restore();
    tokio::time::sleep(RECONNECT_BACKOFF).await;
    let after = fresh_job();
    queue.publish(&after).await.expect("publishing resumes");
    let mut consumer = queue.consume(one()).await.expect("consume again");
    let d = next(&mut consumer).await;
    assert_eq!(job_of(&d), before, "the unsettled job was requeued");
    assert!(d.redelivered());
    d.ack().await.expect("ack");
    let d = next(&mut consumer).await;
    assert_eq!(job_of(&d), after);
    d.ack().await.expect("ack");
    assert_quiet(&mut consumer).await;
}

/// A broker that stops answering (stalled network, resource alarm) gives `Timeout` after the
/// publish timeout, not a hang. As documented, a timed-out job may still arrive later.
#[tokio::test]
async fn a_stalled_broker_times_out_the_publish() {
    services::require_rabbitmq().await;
    let topology = unique_topology("stall", 10);
    let _cleanup = BrokerCleanup(topology.clone());
    let proxy = Proxy::start(&broker_addr()).await;
    let url = url_via(proxy.port());
    let timeout = Duration::from_millis(500);
    let queue = AmqpQueue::connect(&url, &topology, timeout)
        .await
        .expect("connect through the proxy");

    proxy.freeze(true);
    let started = Instant::now();
    let result = queue.publish(&fresh_job()).await;
    let took = started.elapsed();
    assert!(
        matches!(result, Err(QueueError::Timeout(t)) if t == timeout),
        "{result:?}"
    );
    assert!(
        took >= timeout && took < timeout + Duration::from_millis(500),
        "took {took:?}"
    );

    proxy.freeze(false);
    queue
        .publish(&fresh_job())
        .await
        .expect("publishing resumes");
    assert_eq!(
        queue.stats().await.expect("stats").ready,
        2,
        "the timed-out job was enqueued after all: the consumer must check the reservation"
    );
}
