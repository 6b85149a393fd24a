//! Starts that publish at the same time: each gets the answer about its own job. A queue-full
//! nack refuses only the starts past the bound (429, rolled back), and an unroutable job is an
//! error for the start that published it, never a success, while other publishes are
//! outstanding on the same connection (the deploy queue's confirms overlap).

use std::collections::BTreeSet;
use std::sync::Arc;

use fctf_control::deployment::contract::{DeploymentControl, InstanceKey};
use fctf_control::error::ErrorKind;
use fctf_core::ids::InstanceId;

use super::fixture::{Backend, Harness, key, on_both, start_request};

on_both!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    concurrent_starts_past_the_bound_are_refused_one_by_one
);

/// What one start of a burst got: its key and the instance it was given, or the error kind.
type Outcome = (InstanceKey, Result<InstanceId, (ErrorKind, String)>);

/// Sends a start for every key at once (the center in-process, as the HTTP route calls it).
async fn burst(h: &Harness, keys: &[InstanceKey]) -> Vec<Outcome> {
    let mut starts = tokio::task::JoinSet::new();
    for k in keys {
        let center = Arc::clone(&h.center);
        let request = start_request(*k, 3);
        starts.spawn(async move {
            let answer = center.start(&request).await;
            let outcome = answer
                .map(|status| status.instance.expect("a started instance has an id"))
                .map_err(|e| (e.kind, e.message.clone()));
            (request.key, outcome)
        });
    }
    starts.join_all().await
}

/// The instances of the jobs waiting in the queue (taken and acked).
async fn queued_instances(h: &Harness) -> BTreeSet<InstanceId> {
    let ready = h.ready_jobs().await as usize;
    h.take_jobs(ready)
        .await
        .into_iter()
        .map(|job| job.instance)
        .collect()
}

/// Every accepted start's record is there and every refused one's is rolled back.
async fn assert_records_match(h: &Harness, outcomes: &[Outcome]) {
    for (k, outcome) in outcomes {
        let record = h.record(*k).await;
        match outcome {
            Ok(instance) => assert_eq!(
                record.map(|r| r.instance),
                Some(*instance),
                "{k:?}: accepted, so its reservation stands"
            ),
            Err(e) => assert!(
                record.is_none(),
                "{k:?} was refused ({e:?}) but kept {record:?}"
            ),
        }
    }
}

async fn concurrent_starts_past_the_bound_are_refused_one_by_one(backend: Backend) {
    let h = backend.harness("burst-full", 5).await;
    let keys: Vec<_> = (1..=12).map(|team| key(team, 1)).collect();
    let outcomes = burst(&h, &keys).await;

    let accepted: BTreeSet<InstanceId> = outcomes
        .iter()
        .filter_map(|(_, o)| o.as_ref().ok().copied())
        .collect();
    assert_eq!(accepted.len(), 5, "exactly the bound: {outcomes:?}");
    for (k, outcome) in &outcomes {
        if let Err((kind, message)) = outcome {
            assert_eq!(*kind, ErrorKind::QueueFull, "{k:?}: {message}");
        }
    }
    assert_records_match(&h, &outcomes).await;
    // The queue holds the jobs of exactly the accepted starts.
    assert_eq!(queued_instances(&h).await, accepted);
    // The refused teams hold no quota slot.
    for (k, outcome) in &outcomes {
        let usage = h.store.quota_usage(k.team).await.unwrap();
        assert_eq!(usage, u32::from(outcome.is_ok()), "{k:?}");
    }
}

/// Three bursts of concurrent starts: routable, then unroutable (the binding removed), then
/// routable again. Every start of the middle burst is refused (503, rolled back), none is told
/// it was queued; the others all stand and the queue holds exactly their jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_unroutable_start_of_a_burst_is_refused() {
    let h = Backend::Real.harness("burst-unroutable", 300).await;
    let wave =
        |first: i64| -> Vec<InstanceKey> { (first..first + 20).map(|t| key(t, 1)).collect() };

    let routed = burst(&h, &wave(1)).await;
    h.set_bound(false).await;
    let unrouted = burst(&h, &wave(101)).await;
    h.set_bound(true).await;
    let routed_again = burst(&h, &wave(201)).await;

    let mut accepted = BTreeSet::new();
    for (k, outcome) in routed.iter().chain(&routed_again) {
        match outcome {
            Ok(instance) => {
                accepted.insert(*instance);
            }
            Err(e) => panic!("{k:?} was routable but refused: {e:?}"),
        }
    }
    for (k, outcome) in &unrouted {
        match outcome {
            Err((ErrorKind::Unavailable, _)) => {}
            other => panic!("{k:?} was unroutable but got {other:?}"),
        }
    }
    for outcomes in [&routed, &unrouted, &routed_again] {
        assert_records_match(&h, outcomes).await;
    }
    assert_eq!(queued_instances(&h).await, accepted);
    assert_eq!(accepted.len(), 40);
}
