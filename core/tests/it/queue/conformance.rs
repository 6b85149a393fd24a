//! The one conformance suite of [`JobQueue`]: every case runs against the in-process queue and
//! against RabbitMQ (`queue::conformance::memory::*`, `queue::conformance::amqp::*`).

use std::num::NonZeroU16;
use std::time::Duration;

use fctf_core::queue::{
    DeadLetterReason, DeployJob, JobConsumer, JobDecodeError, QueueError, QueueStats,
};

use super::fixture::{Backend, assert_quiet, fresh_job, job_of, next, start_job, take_parked};

fn prefetch(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).expect("non-zero prefetch")
}

macro_rules! conformance_suite {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Backend::Memory).await;
                }
            )*
        }
        mod amqp {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Backend::Amqp).await;
                }
            )*
        }
    };
}

conformance_suite!(
    round_trip_delivers_what_was_published,
    ack_removes_the_job,
    nack_requeues_marked_redelivered,
    dropped_delivery_is_redelivered,
    dropped_consumer_requeues_its_unsettled_deliveries,
    reject_parks_the_job,
    undecodable_messages_are_still_settleable,
    bound_refuses_without_losing_anything,
    bound_is_exact_under_concurrent_publishers,
    prefetch_limits_in_flight_deliveries,
    expired_jobs_are_never_delivered_and_are_parked,
    invalid_or_stale_jobs_are_refused_before_publishing,
);

async fn round_trip_delivers_what_was_published(backend: Backend) {
    let f = backend.open("round_trip", 10).await;
    let first = fresh_job();
    let second = DeployJob::stop(
        first.team,
        first.challenge,
        first.instance,
        fctf_core::clock::unix_now_millis(),
        Duration::from_secs(60),
    );
    f.queue.publish(&first).await.expect("publish start");
    f.queue.publish(&second).await.expect("publish stop");
    assert_eq!(f.queue.stats().await.expect("stats").ready, 2);

    let mut consumer = f.queue.consume(prefetch(10)).await.expect("consume");
    let d1 = next(&mut consumer).await;
    assert_eq!(d1.job(), Ok(&first));
    assert_eq!(d1.payload(), first.encode().as_slice());
    assert!(!d1.redelivered());
    let d2 = next(&mut consumer).await;
    assert_eq!(d2.job(), Ok(&second));
    d1.ack().await.expect("ack");
    d2.ack().await.expect("ack");
    assert_quiet(&mut consumer).await;
}

async fn ack_removes_the_job(backend: Backend) {
    let f = backend.open("ack_removes", 10).await;
    f.queue.publish(&fresh_job()).await.expect("publish");
    let mut consumer = f.queue.consume(prefetch(1)).await.expect("consume");
    next(&mut consumer).await.ack().await.expect("ack");
    drop(consumer);
    // A new consumer (a new channel on the broker) sees nothing: the ack was final.
    let mut consumer = f.queue.consume(prefetch(1)).await.expect("consume again");
    assert_quiet(&mut consumer).await;
    assert_eq!(
        f.queue.stats().await.expect("stats"),
        QueueStats {
            ready: 0,
            parked: 0
        }
    );
}

/// The next delivery must be `job` again, marked redelivered; acks it and checks nothing follows.
async fn ack_the_redelivery(consumer: &mut JobConsumer, job: &DeployJob) {
    let again = next(consumer).await;
    assert_eq!(&job_of(&again), job);
    assert!(again.redelivered());
    again.ack().await.expect("ack");
    assert_quiet(consumer).await;
}

async fn nack_requeues_marked_redelivered(backend: Backend) {
    let f = backend.open("nack_requeues", 10).await;
    let job = fresh_job();
    f.queue.publish(&job).await.expect("publish");
    let mut consumer = f.queue.consume(prefetch(1)).await.expect("consume");
    let first = next(&mut consumer).await;
    assert!(!first.redelivered());
    first.nack_requeue().await.expect("nack");
    ack_the_redelivery(&mut consumer, &job).await;
}

async fn dropped_delivery_is_redelivered(backend: Backend) {
    let f = backend.open("dropped_delivery", 10).await;
    let job = fresh_job();
    f.queue.publish(&job).await.expect("publish");
    let mut consumer = f.queue.consume(prefetch(1)).await.expect("consume");
    drop(next(&mut consumer).await);
    ack_the_redelivery(&mut consumer, &job).await;
}

async fn dropped_consumer_requeues_its_unsettled_deliveries(backend: Backend) {
    let f = backend.open("dropped_consumer", 10).await;
    let (a, b) = (fresh_job(), fresh_job());
    f.queue.publish(&a).await.expect("publish");
    f.queue.publish(&b).await.expect("publish");
    let mut crashed = f.queue.consume(prefetch(10)).await.expect("consume");
    let held = next(&mut crashed).await;
    let _also_held = next(&mut crashed).await;
    drop(crashed);

    let mut consumer = f.queue.consume(prefetch(10)).await.expect("consume again");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let d = next(&mut consumer).await;
        assert!(d.redelivered(), "a requeued job is marked redelivered");
        seen.push(job_of(&d));
        d.ack().await.expect("ack");
    }
    seen.sort_by_key(|j| j.job_id);
    let mut expected = vec![a, b];
    expected.sort_by_key(|j| j.job_id);
    assert_eq!(seen, expected);
    // The old handle belongs to a consumer that is gone: settling it is an error, not a no-op
    // that would pretend the job was handled.
    assert!(matches!(held.ack().await, Err(QueueError::Unavailable(_))));
    assert_quiet(&mut consumer).await;
}

async fn reject_parks_the_job(backend: Backend) {
    let f = backend.open("reject_parks", 10).await;
    let job = fresh_job();
    f.queue.publish(&job).await.expect("publish");
    let mut consumer = f.queue.consume(prefetch(1)).await.expect("consume");
    next(&mut consumer)
        .await
        .reject_to_dead_letter()
        .await
        .expect("reject");
    let parked = take_parked(f.queue.as_ref(), 1).await;
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].reason, DeadLetterReason::Rejected);
    assert_eq!(parked[0].job(), Ok(job));
    assert_quiet(&mut consumer).await;
    assert_eq!(
        f.queue.stats().await.expect("stats"),
        QueueStats {
            ready: 0,
            parked: 0
        },
        "taking parked jobs removes them"
    );
}

async fn undecodable_messages_are_still_settleable(backend: Backend) {
    let f = backend.open("poison", 10).await;
    let mut future_job: serde_json::Value =
        serde_json::from_slice(&fresh_job().encode()).expect("json");
    future_job["schema"] = 2.into();
    let future_job = serde_json::to_vec(&future_job).expect("bytes");
    f.publish_raw(b"{not json").await;
    f.publish_raw(&future_job).await;

    let mut consumer = f.queue.consume(prefetch(2)).await.expect("consume");
    let malformed = next(&mut consumer).await;
    assert!(matches!(malformed.job(), Err(JobDecodeError::Malformed(_))));
    assert_eq!(malformed.payload(), b"{not json");
    let unknown = next(&mut consumer).await;
    assert_eq!(
        unknown.job(),
        Err(&JobDecodeError::UnknownSchema {
            found: 2,
            supported: 1
        })
    );
    malformed.reject_to_dead_letter().await.expect("reject");
    unknown.reject_to_dead_letter().await.expect("reject");

    let parked = take_parked(f.queue.as_ref(), 2).await;
    let payloads: Vec<&[u8]> = parked.iter().map(|p| p.payload.as_slice()).collect();
    assert_eq!(payloads, [b"{not json".as_slice(), future_job.as_slice()]);
    assert!(
        parked
            .iter()
            .all(|p| p.reason == DeadLetterReason::Rejected)
    );
}

async fn bound_refuses_without_losing_anything(backend: Backend) {
    let f = backend.open("bound", 5).await;
    // No consumer yet: everything stays ready.
    let mut accepted = Vec::new();
    for _ in 0..5 {
        let job = fresh_job();
        f.queue.publish(&job).await.expect("below the bound");
        accepted.push(job);
    }
    for _ in 0..2 {
        assert!(
            matches!(f.queue.publish(&fresh_job()).await, Err(QueueError::Full)),
            "the publish past max_length is refused"
        );
    }
    assert_eq!(f.queue.stats().await.expect("stats").ready, 5);

    let mut consumer = f.queue.consume(prefetch(10)).await.expect("consume");
    let first = next(&mut consumer).await;
    assert_eq!(job_of(&first), accepted[0]);
    first.ack().await.expect("ack");
    // One slot free again: exactly one more fits, at once.
    let late = fresh_job();
    f.queue.publish(&late).await.expect("room again");
    accepted.push(late);

    let mut delivered = vec![accepted[0].clone()];
    for _ in 1..accepted.len() {
        let d = next(&mut consumer).await;
        delivered.push(job_of(&d));
        d.ack().await.expect("ack");
    }
    assert_eq!(
        delivered, accepted,
        "nothing lost, nothing displaced, in order"
    );
    assert_quiet(&mut consumer).await;
    assert_eq!(f.queue.stats().await.expect("stats").parked, 0);
}

async fn bound_is_exact_under_concurrent_publishers(backend: Backend) {
    let f = backend.open("bound_concurrent", 5).await;
    let mut publishers = Vec::new();
    for _ in 0..8 {
        let queue = f.queue.clone();
        publishers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for _ in 0..4 {
                outcomes.push(queue.publish(&fresh_job()).await);
            }
            outcomes
        }));
    }
    let (mut ok, mut full) = (0, 0);
    for publisher in publishers {
        for outcome in publisher.await.expect("publisher task") {
            match outcome {
                Ok(()) => ok += 1,
                Err(QueueError::Full) => full += 1,
                Err(other) => panic!("unexpected publish error: {other}"),
            }
        }
    }
    assert_eq!((ok, full), (5, 27));
    assert_eq!(f.queue.stats().await.expect("stats").ready, 5);
}

async fn prefetch_limits_in_flight_deliveries(backend: Backend) {
    let f = backend.open("prefetch", 10).await;
    for _ in 0..4 {
        f.queue.publish(&fresh_job()).await.expect("publish");
    }
    let mut consumer = f.queue.consume(prefetch(2)).await.expect("consume");
    let d1 = next(&mut consumer).await;
    let d2 = next(&mut consumer).await;
    assert_quiet(&mut consumer).await;
    d1.ack().await.expect("ack");
    let d3 = next(&mut consumer).await;
    assert_quiet(&mut consumer).await;
    d2.ack().await.expect("ack");
    d3.ack().await.expect("ack");
    next(&mut consumer).await.ack().await.expect("ack");
    assert_quiet(&mut consumer).await;
}

async fn expired_jobs_are_never_delivered_and_are_parked(backend: Backend) {
    let f = backend.open("expiry", 10).await;
    let stale = start_job(Duration::from_millis(300));
    let fresh = fresh_job();
    f.queue.publish(&stale).await.expect("publish");
    f.queue.publish(&fresh).await.expect("publish");
    tokio::time::sleep(Duration::from_millis(800)).await;

    let mut consumer = f.queue.consume(prefetch(10)).await.expect("consume");
    let d = next(&mut consumer).await;
    assert_eq!(job_of(&d), fresh, "the stale job is skipped");
    d.ack().await.expect("ack");
    assert_quiet(&mut consumer).await;

    let parked = take_parked(f.queue.as_ref(), 1).await;
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].reason, DeadLetterReason::Expired);
    assert_eq!(parked[0].job(), Ok(stale));
}

async fn invalid_or_stale_jobs_are_refused_before_publishing(backend: Backend) {
    let f = backend.open("invalid", 10).await;
    let mut already_stale = fresh_job();
    already_stale.enqueued_at_ms -= 200_000;
    already_stale.expires_at_ms -= 200_000;
    assert!(matches!(
        f.queue.publish(&already_stale).await,
        Err(QueueError::InvalidJob(_))
    ));
    let mut invalid = fresh_job();
    if let fctf_core::queue::JobKind::Start(spec) = &mut invalid.kind {
        spec.container_port = 0;
    }
    assert!(matches!(
        f.queue.publish(&invalid).await,
        Err(QueueError::InvalidJob(_))
    ));
    assert_eq!(
        f.queue.stats().await.expect("stats"),
        QueueStats {
            ready: 0,
            parked: 0
        }
    );
}
