//! The measurements behind "the deploy queue is a classic queue" (see the `fctf_core::queue`
//! module docs), re-checked against the real broker on every run. Each test declares a classic and
//! a quorum queue with the topology's overflow arguments and compares them. If a broker upgrade
//! changes one of these facts, the test fails and the choice must be revisited.

use std::time::Duration;

use fctf_core::queue::Topology;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};

use super::fixture::{BrokerCleanup, raw_connection, unique_topology};
use crate::services;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Classic,
    Quorum,
}

/// A work queue of `kind` bounded at `max_length` with `reject-publish`, dead-lettering into a
/// parked queue; deleted when the returned guard drops.
async fn declare_queue(
    connection: &Connection,
    test: &str,
    kind: Kind,
    max_length: i64,
    delivery_limit: Option<i64>,
) -> (Topology, BrokerCleanup) {
    let topology = unique_topology(test, 1);
    let cleanup = BrokerCleanup(topology.clone());
    let channel = connection.create_channel().await.expect("channel");
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .exchange_declare(
            topology.dead_letter_exchange.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("dlx");
    channel
        .queue_declare(
            topology.parked_queue.as_str().into(),
            durable,
            FieldTable::default(),
        )
        .await
        .expect("parked");
    channel
        .queue_bind(
            topology.parked_queue.as_str().into(),
            topology.dead_letter_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind parked");
    let mut arguments = FieldTable::default();
    let queue_type = match kind {
        Kind::Classic => "classic",
        Kind::Quorum => "quorum",
    };
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(queue_type.into()),
    );
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(max_length));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(topology.dead_letter_exchange.as_str().into()),
    );
    if let Some(limit) = delivery_limit {
        arguments.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(limit));
    }
    channel
        .queue_declare(topology.queue.as_str().into(), durable, arguments)
        .await
        .expect("work queue");
    (topology, cleanup)
}

async fn confirming_channel(connection: &Connection) -> Channel {
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    channel
}

/// Publishes one message straight to the queue; true if the broker acked it.
async fn publish(channel: &Channel, queue: &str, properties: BasicProperties) -> bool {
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            b"evidence",
            properties.with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm")
        .is_ack()
}

async fn ready(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("passive declare")
        .message_count()
}

/// What a queue of `kind` bounded at 5 accepted: sequentially into an empty queue, then one more
/// after one message was taken, then from 8 concurrent publishing channels into an empty queue.
async fn measure_bound(kind: Kind) -> (usize, bool, usize) {
    let connection = raw_connection(&Topology::default()).await;
    let (topology, _cleanup) = declare_queue(&connection, "bound_evidence", kind, 5, None).await;
    let channel = confirming_channel(&connection).await;
    let mut sequential = 0;
    for _ in 0..8 {
        if publish(&channel, &topology.queue, BasicProperties::default()).await {
            sequential += 1;
        }
    }
    let taken = channel
        .basic_get(
            topology.queue.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .expect("get");
    assert!(taken.is_some());
    let after_one_taken = publish(&channel, &topology.queue, BasicProperties::default()).await;

    let (topology, _cleanup) = declare_queue(&connection, "bound_evidence", kind, 5, None).await;
    let mut publishers = Vec::new();
    for _ in 0..8 {
        let channel = confirming_channel(&connection).await;
        let queue = topology.queue.clone();
        publishers.push(tokio::spawn(async move {
            let mut confirms = Vec::new();
            for _ in 0..4 {
                confirms.push(
                    channel
                        .basic_publish(
                            "".into(),
                            queue.as_str().into(),
                            BasicPublishOptions::default(),
                            b"evidence",
                            BasicProperties::default().with_delivery_mode(2),
                        )
                        .await
                        .expect("publish"),
                );
            }
            let mut acked = 0;
            for confirm in confirms {
                if confirm.await.expect("confirm").is_ack() {
                    acked += 1;
                }
            }
            acked
        }));
    }
    let mut concurrent = 0;
    for publisher in publishers {
        concurrent += publisher.await.expect("publisher");
    }
    assert_eq!(
        ready(&channel, &topology.queue).await as usize,
        concurrent,
        "every acked message is in the queue"
    );
    (sequential, after_one_taken, concurrent)
}

#[tokio::test]
async fn classic_bound_is_exact_quorum_bound_is_not() {
    services::require_rabbitmq().await;
    let classic = measure_bound(Kind::Classic).await;
    let quorum = measure_bound(Kind::Quorum).await;
    println!(
        "x-max-length=5: classic {classic:?}, quorum {quorum:?} (sequential, after one taken, concurrent 8x4)"
    );
    assert_eq!(classic, (5, true, 5));
    assert_eq!(quorum.0, 6, "quorum: one past the bound");
    assert!(
        !quorum.1,
        "quorum: still refusing until below 80% of the bound"
    );
    assert!(quorum.2 >= 5, "quorum: {} accepted concurrently", quorum.2);
}

/// Deliveries of one message that is nacked with requeue every time, and whether it ended parked.
async fn measure_redelivery(kind: Kind) -> (Vec<(bool, Option<i64>)>, u32) {
    let connection = raw_connection(&Topology::default()).await;
    let limit = (kind == Kind::Quorum).then_some(2);
    let (topology, _cleanup) =
        declare_queue(&connection, "redelivery_evidence", kind, 5, limit).await;
    let channel = confirming_channel(&connection).await;
    assert!(publish(&channel, &topology.queue, BasicProperties::default()).await);

    let consumer_channel = connection.create_channel().await.expect("channel");
    consumer_channel
        .basic_qos(1, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = consumer_channel
        .basic_consume(
            topology.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut deliveries = Vec::new();
    // At most 5 rounds: enough to see the limit, bounded when there is none.
    while deliveries.len() < 5 {
        let Ok(Some(delivery)) =
            tokio::time::timeout(Duration::from_millis(1500), consumer.next()).await
        else {
            break;
        };
        let delivery = delivery.expect("delivery");
        let count = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-delivery-count").cloned())
            .and_then(|v| match v {
                AMQPValue::LongLongInt(n) => Some(n),
                _ => None,
            });
        deliveries.push((delivery.redelivered, count));
        delivery
            .acker
            .nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            })
            .await
            .expect("nack");
    }
    let parked = ready(&channel, &topology.parked_queue).await;
    (deliveries, parked)
}

#[tokio::test]
async fn only_quorum_queues_limit_deliveries() {
    services::require_rabbitmq().await;
    let (classic, classic_parked) = measure_redelivery(Kind::Classic).await;
    let (quorum, quorum_parked) = measure_redelivery(Kind::Quorum).await;
    println!(
        "nack-requeue loop: classic {classic:?} parked {classic_parked}; quorum (limit 2) {quorum:?} parked {quorum_parked}"
    );
    // Classic: redelivered forever (cut at 5 here), a flag but no count, never parked.
    assert_eq!(
        classic,
        [
            (false, None),
            (true, None),
            (true, None),
            (true, None),
            (true, None)
        ]
    );
    assert_eq!(classic_parked, 0);
    // Quorum with x-delivery-limit=2: L+1 = 3 deliveries, counted, then dead-lettered.
    assert_eq!(quorum, [(false, None), (true, Some(1)), (true, Some(2))]);
    assert_eq!(quorum_parked, 1);
}

#[tokio::test]
async fn both_queue_types_honour_per_message_ttl() {
    services::require_rabbitmq().await;
    for kind in [Kind::Classic, Kind::Quorum] {
        let connection = raw_connection(&Topology::default()).await;
        let (topology, _cleanup) = declare_queue(&connection, "ttl_evidence", kind, 5, None).await;
        let channel = confirming_channel(&connection).await;
        assert!(
            publish(
                &channel,
                &topology.queue,
                BasicProperties::default().with_expiration("200".into())
            )
            .await
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while ready(&channel, &topology.parked_queue).await == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{kind:?}: expired message not dead-lettered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(ready(&channel, &topology.queue).await, 0, "{kind:?}");
    }
}
