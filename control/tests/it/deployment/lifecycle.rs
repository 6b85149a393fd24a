//! The instance lifecycle through the signed HTTP API, each key case on the in-process store and
//! queue and on real Redis and RabbitMQ.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fctf_control::deployment::center::REPUBLISH_AFTER;
use fctf_control::deployment::contract::{
    DeploymentControl, ExtendRequest, InstanceKey, InstanceTarget, ListRequest, LogsRequest,
    StopAllRequest, WorkflowCallback, WorkflowPhase, paths,
};
use fctf_control::deployment::{DeploymentCenter, extension_counter};
use fctf_core::ids::{InstanceId, TeamId};
use fctf_core::queue::{DeploySpec, JobKind};
use fctf_core::runtime::{
    InstanceRef, InstanceRuntime, Observed, Placement, RuntimeError, RuntimeResult,
};
use fctf_core::store::{DeploymentRecord, DeploymentState, Reservation};
use fctf_core::token::{Keyring, TokenError, Verifier};
use http::StatusCode;
use serde_json::Value;

use super::fixture::{
    Backend, behind_proxy, key, keys, now_ms, now_secs, on_both, spec, start_request, test_config,
    token_key,
};

on_both!(
    start_writes_the_record_then_one_job,
    a_reservation_left_without_its_job_is_published_again,
    quota_exceeded_is_refused_without_a_job,
    queue_full_rolls_the_reservation_back,
    queued_starts_have_queue_positions,
    running_status_carries_a_token_that_ends_with_the_instance,
    extensions_follow_the_rules,
    stop_moves_to_stopping_and_publishes_a_stop_job,
    stop_of_an_instance_that_is_not_the_live_one_conflicts,
    a_failed_workflow_fails_the_instance_and_frees_its_slot,
    a_build_callback_for_an_absent_preview_instance_is_not_found,
    stop_all_stops_every_active_instance,
    an_extension_moves_the_runtime_deadline_to_the_new_end,
    a_runtime_that_cannot_move_the_deadline_undoes_the_extension,
);

fn instance_of(answer: &Value) -> InstanceId {
    answer["instance"]
        .as_str()
        .expect("an instance id")
        .parse()
        .unwrap()
}

fn target(key: InstanceKey, instance: Option<InstanceId>) -> InstanceTarget {
    InstanceTarget { key, instance }
}

async fn start_writes_the_record_then_one_job(backend: Backend) {
    let h = backend.harness("start", 300).await;
    let k = key(7, 1);
    let before = now_ms();
    let answer = h.post(paths::START, &start_request(k, 3)).await;
    let after = now_ms();
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["state"], "queued");
    assert_eq!(answer.body["queue_position"], 0);
    assert_eq!(answer.body["access"], Value::Null);
    let instance = instance_of(&answer.body);

    let record = h.record(k).await.expect("the provisional record");
    assert_eq!(
        (record.instance, record.state, record.version),
        (instance, DeploymentState::Queued, 1)
    );
    assert_eq!(h.store.quota_usage(k.team).await.unwrap(), 1);

    // A second start of the same slot answers the same instance and publishes nothing.
    let again = h.post(paths::START, &start_request(k, 3)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(instance_of(&again.body), instance);
    assert_eq!(h.ready_jobs().await, 1);
    assert_eq!(h.store.quota_usage(k.team).await.unwrap(), 1);

    let job = match h.take_raw().await {
        Some((job, delivery_mode, expiration_ms)) => {
            // On the broker: persistent, expiring with the provisional TTL.
            assert_eq!(delivery_mode, Some(2));
            let ttl = h.config.provisional_ttl_secs * 1000;
            assert!(
                expiration_ms <= ttl && expiration_ms > ttl - 5_000,
                "{expiration_ms}"
            );
            job
        }
        None => h.take_jobs(1).await.remove(0),
    };
    assert_eq!(
        (job.team, job.challenge, job.instance),
        (k.team, k.challenge, instance)
    );
    assert_eq!(job.kind, JobKind::Start(spec()));
    assert!((before..=after).contains(&job.enqueued_at_ms));
    assert_eq!(
        job.expires_at_ms - job.enqueued_at_ms,
        h.config.provisional_ttl_secs * 1000
    );
    assert_eq!(h.center.metrics().operation_count("start", "queued"), 1);
    assert_eq!(
        h.center
            .metrics()
            .operation_count("start", "already_active"),
        1
    );
}

/// A reservation the store applied after the caller gave up (a store timeout: the player saw
/// 503) has no job; a later start of the slot publishes it once it has sat unchanged for
/// `REPUBLISH_AFTER`, and not again right after.
async fn a_reservation_left_without_its_job_is_published_again(backend: Backend) {
    let h = backend.harness("republish", 300).await;
    let k = key(7, 2);
    let record = DeploymentRecord {
        team: k.team,
        challenge: k.challenge,
        instance: InstanceId::new(),
        state: DeploymentState::Queued,
        version: 0,
        route: None,
        reason: None,
        created_at_ms: now_ms(),
        updated_at_ms: now_ms(),
        expires_at_ms: None,
    };
    let reserved = h
        .store
        .reserve_instance(&record, 3, Duration::from_secs(300))
        .await
        .unwrap();
    assert!(matches!(reserved, Reservation::Reserved(_)), "{reserved:?}");
    // Right away, a start answers the reservation and publishes nothing (it may be slow only).
    let soon = h.center.start(&start_request(k, 3)).await.unwrap();
    assert_eq!(soon.instance, Some(record.instance));
    assert_eq!(h.ready_jobs().await, 0);

    // Later, on a center whose clock is past REPUBLISH_AFTER, the job is published once.
    let later = DeploymentCenter::new(
        Arc::clone(&h.store),
        Arc::clone(&h.queue),
        &h.config,
        keys(),
    )
    .with_clock(Arc::new(Ahead(REPUBLISH_AFTER + Duration::from_secs(1))));
    let status = later.start(&start_request(k, 3)).await.unwrap();
    assert_eq!(status.instance, Some(record.instance));
    assert_eq!(h.store.quota_usage(k.team).await.unwrap(), 1);
    // The store stamped the mark with its own (real) clock: a start right after publishes
    // nothing more.
    let again = h.center.start(&start_request(k, 3)).await.unwrap();
    assert_eq!(again.instance, Some(record.instance));
    assert_eq!(h.ready_jobs().await, 1);
    let job = h.take_jobs(1).await.remove(0);
    assert_eq!(job.instance, record.instance);
    assert_eq!(job.kind, JobKind::Start(spec()));
    assert_eq!(later.metrics().operation_count("start", "republished"), 1);
    assert_eq!(
        h.center
            .metrics()
            .operation_count("start", "already_active"),
        2
    );
}

/// The system clock moved ahead by a fixed amount.
#[derive(Debug)]
struct Ahead(Duration);

impl fctf_control::deployment::Clock for Ahead {
    fn now_ms(&self) -> u64 {
        now_ms() + self.0.as_millis() as u64
    }
}

async fn quota_exceeded_is_refused_without_a_job(backend: Backend) {
    let h = backend.harness("quota", 300).await;
    for challenge in [1, 2] {
        let answer = h
            .post(paths::START, &start_request(key(7, challenge), 2))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    }
    let refused = h.post(paths::START, &start_request(key(7, 3), 2)).await;
    refused.assert_error(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
    assert!(h.record(key(7, 3)).await.is_none());
    assert_eq!(h.store.quota_usage(key(7, 3).team).await.unwrap(), 2);
    assert_eq!(h.ready_jobs().await, 2);
    // Another team is not affected.
    let other = h.post(paths::START, &start_request(key(8, 3), 2)).await;
    assert_eq!(other.status, StatusCode::OK, "{:?}", other.body);
}

async fn queue_full_rolls_the_reservation_back(backend: Backend) {
    let h = backend.harness("queue-full", 2).await;
    for challenge in [1, 2] {
        let answer = h
            .post(paths::START, &start_request(key(7, challenge), 10))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    }
    let usage_before = h.store.quota_usage(key(7, 3).team).await.unwrap();
    let refused = h.post(paths::START, &start_request(key(7, 3), 10)).await;
    refused.assert_error(StatusCode::TOO_MANY_REQUESTS, "queue_full");
    assert_eq!(refused.headers[http::header::RETRY_AFTER], "10");
    assert_eq!(refused.body["retry_after"], 10);
    assert_eq!(
        h.store.quota_usage(key(7, 3).team).await.unwrap(),
        usage_before
    );
    assert!(
        h.record(key(7, 3)).await.is_none(),
        "the reservation is rolled back"
    );
    assert_eq!(h.ready_jobs().await, 2);

    // Once a job is taken there is room again, and nothing of the refused start is left over.
    h.take_jobs(1).await;
    let retried = h.post(paths::START, &start_request(key(7, 3), 10)).await;
    assert_eq!(retried.status, StatusCode::OK, "{:?}", retried.body);
    assert_eq!(retried.body["state"], "queued");
}

async fn queued_starts_have_queue_positions(backend: Backend) {
    let h = backend.harness("positions", 300).await;
    let mut positions = Vec::new();
    for team in [7, 8, 9] {
        let answer = h.post(paths::START, &start_request(key(team, 1), 3)).await;
        positions.push(answer.body["queue_position"].clone());
        // Distinct creation times, so the order is the order of the starts.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert_eq!(positions, [0, 1, 2]);
    let status = h.post(paths::STATUS, &target(key(9, 1), None)).await;
    assert_eq!(status.body["queue_position"], 2);
}

async fn running_status_carries_a_token_that_ends_with_the_instance(backend: Backend) {
    let h = backend.harness("running", 300).await;
    let k = key(7, 1);
    let instance = instance_of(&h.post(paths::START, &start_request(k, 3)).await.body);
    let expires = now_ms() + 30 * 60 * 1000 + 123;
    h.set_running(k, expires).await;

    let answer = h.post(paths::STATUS, &target(k, Some(instance))).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let body = &answer.body;
    assert_eq!(body["state"], "running");
    assert_eq!(body["queue_position"], Value::Null);
    assert_eq!(body["expires_at_ms"], expires);
    let left = body["time_left_secs"].as_u64().unwrap();
    assert!((1790..=1800).contains(&left), "{left}");
    assert_eq!(body["extensions_left"], 2);
    let access = &body["access"];
    let token = access["token"].as_str().unwrap();
    assert_eq!(
        access["http_url"],
        format!("http://ctf.example:8080/?fctftoken={token}")
    );
    assert_eq!(access["nc"], "nc tcp.ctf.example 31337");
    assert_eq!(access["tcp_host"], "tcp.ctf.example");
    assert_eq!(access["tcp_port"], 31337);

    let verifier = Verifier::new(Keyring::new(vec![token_key()]).unwrap(), Duration::ZERO);
    let claims = verifier.verify(token, now_secs()).unwrap();
    assert_eq!(
        (claims.team, claims.challenge, claims.instance),
        (k.team, k.challenge, instance)
    );
    assert_eq!(claims.route, "127.0.0.1:40123");
    assert_eq!(
        claims.exp,
        expires / 1000,
        "the token ends with the instance, never after"
    );
    assert_eq!(
        verifier.verify(token, expires / 1000 + 1),
        Err(TokenError::Expired)
    );
    // A token of another key ring does not verify.
    let other = fctf_core::token::TokenKey::new("k1", vec![9u8; 32]).unwrap();
    let stranger = Verifier::new(Keyring::new(vec![other]).unwrap(), Duration::ZERO);
    assert_eq!(
        stranger.verify(token, now_secs()),
        Err(TokenError::BadSignature)
    );

    // Asking about an older instance of the slot is not answered with the live one.
    let stale = h
        .post(paths::STATUS, &target(k, Some(InstanceId::new())))
        .await;
    stale.assert_error(StatusCode::NOT_FOUND, "not_found");
}

async fn extensions_follow_the_rules(backend: Backend) {
    let h = backend.harness("extend", 300).await;
    let k = key(7, 1);
    let instance = instance_of(&h.post(paths::START, &start_request(k, 3)).await.body);
    let extend = |end: Option<u64>| ExtendRequest {
        target: target(k, Some(instance)),
        contest_ends_at_ms: end,
    };

    // Queued: nothing to extend yet.
    h.post(paths::EXTEND, &extend(None))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");

    // 20 minutes left; extensions open in the last 15.
    h.set_running(k, now_ms() + 20 * 60_000).await;
    let early = h.post(paths::EXTEND, &extend(None)).await;
    early.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    assert!(
        early.body["message"]
            .as_str()
            .unwrap()
            .contains("last 15 minutes"),
        "{:?}",
        early.body
    );

    // Twice allowed, each adding 10 minutes.
    for left in [1, 0] {
        let expires = now_ms() + 10 * 60_000;
        h.set_running(k, expires).await;
        let answer = h.post(paths::EXTEND, &extend(None)).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        assert_eq!(answer.body["expires_at_ms"], expires + 600_000);
        assert_eq!(answer.body["extensions_left"], left);
        assert_eq!(
            h.record(k).await.unwrap().expires_at_ms,
            Some(expires + 600_000)
        );
    }
    assert_eq!(
        h.store
            .counter_get(&extension_counter(instance))
            .await
            .unwrap(),
        2
    );
    h.set_running(k, now_ms() + 10 * 60_000).await;
    let third = h.post(paths::EXTEND, &extend(None)).await;
    third.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    assert!(
        third.body["message"].as_str().unwrap().contains("2 times"),
        "{:?}",
        third.body
    );

    // Never past the contest end: cut to it, then nothing more to add.
    let k2 = key(7, 2);
    let second = instance_of(&h.post(paths::START, &start_request(k2, 3)).await.body);
    let expires = now_ms() + 10 * 60_000;
    h.set_running(k2, expires).await;
    let end = expires + 2 * 60_000;
    let request = ExtendRequest {
        target: target(k2, Some(second)),
        contest_ends_at_ms: Some(end),
    };
    let answer = h.post(paths::EXTEND, &request).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["expires_at_ms"], end);
    let token = answer.body["access"]["token"].as_str().unwrap();
    let verifier = Verifier::new(Keyring::new(vec![token_key()]).unwrap(), Duration::ZERO);
    assert_eq!(verifier.verify(token, now_secs()).unwrap().exp, end / 1000);
    h.post(paths::EXTEND, &request)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    assert_eq!(h.record(k2).await.unwrap().expires_at_ms, Some(end));
}

async fn stop_moves_to_stopping_and_publishes_a_stop_job(backend: Backend) {
    let h = backend.harness("stop", 300).await;
    let k = key(7, 1);
    let instance = instance_of(&h.post(paths::START, &start_request(k, 3)).await.body);
    h.take_jobs(1).await;
    h.set_running(k, now_ms() + 3_600_000).await;

    let answer = h.post(paths::STOP, &target(k, Some(instance))).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["state"], "stopping");
    assert_eq!(answer.body["access"], Value::Null);
    let record = h.record(k).await.unwrap();
    assert_eq!(
        (record.instance, record.state),
        (instance, DeploymentState::Stopping)
    );
    assert_eq!(
        h.store.quota_usage(k.team).await.unwrap(),
        1,
        "the slot is held until Stopped"
    );

    let job = h.take_jobs(1).await.remove(0);
    assert_eq!((job.kind.clone(), job.instance), (JobKind::Stop, instance));
    assert_eq!(
        job.expires_at_ms - job.enqueued_at_ms,
        h.config.provisional_ttl_secs * 1000
    );

    // Stopping twice is one stop.
    let again = h.post(paths::STOP, &target(k, None)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["state"], "stopping");
    assert_eq!(h.ready_jobs().await, 0);
    // And a stopping instance cannot be extended.
    let extend = ExtendRequest {
        target: target(k, None),
        contest_ends_at_ms: None,
    };
    h.post(paths::EXTEND, &extend)
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
}

async fn stop_of_an_instance_that_is_not_the_live_one_conflicts(backend: Backend) {
    let h = backend.harness("stop-stale", 300).await;
    let k = key(7, 1);
    h.post(paths::STOP, &target(k, None))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    h.post(paths::STOP, &target(k, Some(InstanceId::new())))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");

    let instance = instance_of(&h.post(paths::START, &start_request(k, 3)).await.body);
    let stale = h
        .post(paths::STOP, &target(k, Some(InstanceId::new())))
        .await;
    stale.assert_error(StatusCode::CONFLICT, "conflict");
    let record = h.record(k).await.unwrap();
    assert_eq!(
        (record.instance, record.state),
        (instance, DeploymentState::Queued)
    );
    assert_eq!(h.ready_jobs().await, 1, "only the start job");
}

async fn a_failed_workflow_fails_the_instance_and_frees_its_slot(backend: Backend) {
    let h = backend.harness("callback", 300).await;
    let k = key(7, 1);
    let instance = instance_of(&h.post(paths::START, &start_request(k, 1)).await.body);
    h.take_jobs(1).await;
    let callback = WorkflowCallback {
        team: k.team,
        challenge: k.challenge,
        instance,
        workflow: "start-chal-v2-x7k2p".to_owned(),
        status: WorkflowPhase::Failed,
        message: Some("ErrImagePull: registry.local/ctf/baby-web:1 not found".to_owned()),
    };
    let answer = h.post(paths::WORKFLOW_CALLBACK, &callback).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["state"], "failed");
    let record = h.record(k).await.unwrap();
    assert_eq!(record.state, DeploymentState::Failed);
    assert_eq!(
        record.reason.as_deref(),
        Some("The deployment failed: ErrImagePull: registry.local/ctf/baby-web:1 not found")
    );
    assert_eq!(
        h.store.quota_usage(k.team).await.unwrap(),
        0,
        "a failed instance holds no slot"
    );
    let status = h.post(paths::STATUS, &target(k, None)).await;
    assert_eq!(status.body["reason"], record.reason.clone().unwrap());
    // Whatever the workflow left behind is asked to go.
    let cleanup = h.take_jobs(1).await.remove(0);
    assert_eq!((cleanup.kind, cleanup.instance), (JobKind::Stop, instance));

    // A succeeded workflow changes nothing, and a callback about an older instance is refused.
    let ok = WorkflowCallback {
        status: WorkflowPhase::Succeeded,
        ..callback.clone()
    };
    assert_eq!(
        h.post(paths::WORKFLOW_CALLBACK, &ok).await.body["state"],
        "failed"
    );
    let old = WorkflowCallback {
        instance: InstanceId::new(),
        ..callback
    };
    h.post(paths::WORKFLOW_CALLBACK, &old)
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");

    // Starting again replaces the failed record with a new instance (quota 1 is free again).
    let restarted = h.post(paths::START, &start_request(k, 1)).await;
    assert_eq!(restarted.status, StatusCode::OK, "{:?}", restarted.body);
    assert_eq!(restarted.body["state"], "queued");
    assert_ne!(instance_of(&restarted.body), instance);
}

/// An image build's exit hook reports on its preview instance (team 0). When that instance was
/// never started, or is gone, the callback is `404` and writes nothing: no record appears and no
/// cleanup job is published. When another preview instance of the challenge is live, it is
/// `409` and that instance is left as it was.
async fn a_build_callback_for_an_absent_preview_instance_is_not_found(backend: Backend) {
    let h = backend.harness("callback-absent", 300).await;
    let preview = key(TeamId::PREVIEW.0, 42);
    let build = |instance, status| WorkflowCallback {
        team: preview.team,
        challenge: preview.challenge,
        instance,
        workflow: "up-challenge-template-k2x9q".to_owned(),
        status,
        message: Some("kaniko: error building image".to_owned()),
    };
    let absent = InstanceId::new();
    for status in [
        WorkflowPhase::Failed,
        WorkflowPhase::Error,
        WorkflowPhase::Succeeded,
    ] {
        h.post(paths::WORKFLOW_CALLBACK, &build(absent, status))
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    assert!(h.record(preview).await.is_none(), "nothing was recorded");
    assert_eq!(h.ready_jobs().await, 0, "no cleanup job for nothing");

    // Another preview instance holds the slot: the old build's callback conflicts and leaves it.
    let live = instance_of(&h.post(paths::START, &start_request(preview, 1)).await.body);
    h.take_jobs(1).await;
    let before = h.record(preview).await.unwrap();
    h.post(
        paths::WORKFLOW_CALLBACK,
        &build(absent, WorkflowPhase::Failed),
    )
    .await
    .assert_error(StatusCode::CONFLICT, "conflict");
    assert_eq!(h.record(preview).await.unwrap(), before);
    assert_eq!(h.ready_jobs().await, 0);

    // The live preview instance's own failed build fails it.
    let answer = h
        .post(
            paths::WORKFLOW_CALLBACK,
            &build(live, WorkflowPhase::Failed),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["state"], "failed");
}

async fn stop_all_stops_every_active_instance(backend: Backend) {
    let h = backend.harness("stop-all", 300).await;
    for (team, challenge) in [(7, 1), (7, 2), (8, 1)] {
        let answer = h
            .post(paths::START, &start_request(key(team, challenge), 3))
            .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    h.take_jobs(3).await;
    h.set_running(key(8, 1), now_ms() + 3_600_000).await;

    let listed = h
        .post(
            paths::LIST,
            &ListRequest {
                team: Some(key(7, 1).team),
                limit: 10,
                offset: 0,
            },
        )
        .await;
    assert_eq!(
        listed.body.as_array().unwrap().len(),
        2,
        "{:?}",
        listed.body
    );

    let answer = h.post(paths::STOP_ALL, &StopAllRequest {}).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["requested"], 3);
    for (team, challenge) in [(7, 1), (7, 2), (8, 1)] {
        assert_eq!(
            h.record(key(team, challenge)).await.unwrap().state,
            DeploymentState::Stopping
        );
    }
    let stops = h.take_jobs(3).await;
    assert!(stops.iter().all(|job| job.kind == JobKind::Stop));
    // Nothing left to stop.
    assert_eq!(
        h.post(paths::STOP_ALL, &StopAllRequest {}).await.body["requested"],
        0
    );
}

#[tokio::test]
async fn broker_down_is_503_and_the_reservation_is_rolled_back() {
    let h = behind_proxy("broker-down").await;
    let live = key(7, 1);
    let first = h.post(paths::START, &start_request(live, 3)).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    let instance = instance_of(&first.body);

    h.proxy.as_ref().unwrap().close().await;
    let k = key(7, 2);
    let refused = h.post(paths::START, &start_request(k, 3)).await;
    refused.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(refused.headers.contains_key(http::header::RETRY_AFTER));
    assert!(
        h.record(k).await.is_none(),
        "the reservation is rolled back"
    );
    assert_eq!(h.store.quota_usage(k.team).await.unwrap(), 1);

    // A stop is not lost with the broker: Stopping is durable for the listener to act on.
    let stop = h.post(paths::STOP, &target(live, Some(instance))).await;
    assert_eq!(stop.status, StatusCode::OK, "{:?}", stop.body);
    assert_eq!(stop.body["state"], "stopping");
    assert_eq!(
        h.record(live).await.unwrap().state,
        DeploymentState::Stopping
    );
    assert_eq!(
        h.center
            .metrics()
            .operation_count("stop", "stopping_unpublished"),
        1
    );
    assert_eq!(
        h.center.metrics().operation_count("start", "unavailable"),
        1
    );
}

#[tokio::test]
async fn starts_are_cut_to_the_contest_end_and_refused_after_it() {
    let h = Backend::Memory.harness("contest-end", 300).await;
    let mut request = start_request(key(7, 1), 3);
    request.contest_ends_at_ms = Some(now_ms() + 100_000);
    let answer = h.post(paths::START, &request).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let job = h.take_jobs(1).await.remove(0);
    let lifetime = job.spec().unwrap().lifetime_secs;
    assert!((98..=100).contains(&lifetime), "{lifetime}");

    let mut late = start_request(key(7, 2), 3);
    late.contest_ends_at_ms = Some(now_ms() - 1);
    h.post(paths::START, &late)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(h.store.quota_usage(key(7, 2).team).await.unwrap(), 1);

    let mut broken = start_request(key(7, 3), 3);
    broken.spec = DeploySpec {
        image: None,
        command: None,
        ..spec()
    };
    h.post(paths::START, &broken)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad_request");
}

/// A runtime that has logs for one instance only.
#[derive(Debug)]
struct OneInstanceLogs(InstanceId);

#[async_trait]
impl InstanceRuntime for OneInstanceLogs {
    fn kind(&self) -> &'static str {
        "test"
    }
    async fn deploy(&self, _: &InstanceRef, _: &DeploySpec, _: u64) -> RuntimeResult<Placement> {
        Err(RuntimeError::Rejected("not in this test".to_owned()))
    }
    async fn remove(&self, _: &InstanceRef) -> RuntimeResult<()> {
        Ok(())
    }
    async fn in_progress(&self) -> RuntimeResult<u32> {
        Ok(0)
    }
    async fn snapshot(&self) -> RuntimeResult<Vec<Observed>> {
        Ok(Vec::new())
    }
    async fn logs(&self, id: &InstanceRef, tail: u32) -> RuntimeResult<String> {
        if id.instance != self.0 {
            return Err(RuntimeError::NotFound);
        }
        Ok((0..tail.min(3)).map(|i| format!("line {i}\n")).collect())
    }
}

#[tokio::test]
async fn logs_need_a_runtime() {
    let h = Backend::Memory.harness("logs", 300).await;
    let k = key(7, 1);
    let instance = instance_of(&h.post(paths::START, &start_request(k, 3)).await.body);
    let request = LogsRequest {
        target: target(k, None),
        tail: 50,
    };
    let answer = h.post(paths::LOGS, &request).await;
    answer.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(
        answer.body["message"]
            .as_str()
            .unwrap()
            .contains("without a runtime")
    );

    let with_runtime = DeploymentCenter::new(
        Arc::clone(&h.store),
        Arc::clone(&h.queue),
        &test_config(),
        keys(),
    )
    .with_runtime(Arc::new(OneInstanceLogs(instance)));
    assert_eq!(
        with_runtime.logs(&target(k, None), 2).await.unwrap(),
        "line 0\nline 1\n"
    );
    let stale = with_runtime
        .logs(&target(k, Some(InstanceId::new())), 2)
        .await
        .unwrap_err();
    assert_eq!(stale.kind, fctf_control::error::ErrorKind::Conflict);
    let elsewhere = DeploymentCenter::new(
        Arc::clone(&h.store),
        Arc::clone(&h.queue),
        &test_config(),
        keys(),
    )
    .with_runtime(Arc::new(OneInstanceLogs(InstanceId::new())));
    let gone = elsewhere.logs(&target(k, None), 2).await.unwrap_err();
    assert_eq!(gone.kind, fctf_control::error::ErrorKind::NotFound);
}

/// What [`DeadlineRecorder::set_deadline`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeadlineAnswer {
    Moved,
    Unavailable,
    Missing,
}

/// A runtime that records every deadline it is asked to set and answers as told.
#[derive(Debug)]
struct DeadlineRecorder {
    calls: std::sync::Mutex<Vec<(InstanceRef, u64)>>,
    answer: std::sync::Mutex<DeadlineAnswer>,
}

impl DeadlineRecorder {
    fn new(answer: DeadlineAnswer) -> Arc<Self> {
        Arc::new(Self {
            calls: std::sync::Mutex::new(Vec::new()),
            answer: std::sync::Mutex::new(answer),
        })
    }

    fn answer(&self, answer: DeadlineAnswer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn calls(&self) -> Vec<(InstanceRef, u64)> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl InstanceRuntime for DeadlineRecorder {
    fn kind(&self) -> &'static str {
        "test"
    }
    async fn deploy(&self, _: &InstanceRef, _: &DeploySpec, _: u64) -> RuntimeResult<Placement> {
        Err(RuntimeError::Rejected("not in this test".to_owned()))
    }
    async fn remove(&self, _: &InstanceRef) -> RuntimeResult<()> {
        Ok(())
    }
    async fn in_progress(&self) -> RuntimeResult<u32> {
        Ok(0)
    }
    async fn snapshot(&self) -> RuntimeResult<Vec<Observed>> {
        Ok(Vec::new())
    }
    async fn logs(&self, _: &InstanceRef, _: u32) -> RuntimeResult<String> {
        Err(RuntimeError::NotFound)
    }
    async fn set_deadline(&self, id: &InstanceRef, ends_at_ms: u64) -> RuntimeResult<()> {
        self.calls.lock().unwrap().push((*id, ends_at_ms));
        match *self.answer.lock().unwrap() {
            DeadlineAnswer::Moved => Ok(()),
            DeadlineAnswer::Unavailable => {
                Err(RuntimeError::Unavailable("API server down".to_owned()))
            }
            DeadlineAnswer::Missing => Err(RuntimeError::NotFound),
        }
    }
}

/// A Deployment Center on `h`'s store and queue that tells `runtime` about extensions.
fn center_with(h: &super::fixture::Harness, runtime: Arc<DeadlineRecorder>) -> DeploymentCenter {
    DeploymentCenter::new(
        Arc::clone(&h.store),
        Arc::clone(&h.queue),
        &test_config(),
        keys(),
    )
    .with_runtime(runtime)
}

async fn an_extension_moves_the_runtime_deadline_to_the_new_end(backend: Backend) {
    let h = backend.harness("extend-runtime", 300).await;
    let k = key(7, 1);
    let instance = instance_of(&h.post(paths::START, &start_request(k, 3)).await.body);
    let runtime = DeadlineRecorder::new(DeadlineAnswer::Moved);
    let center = center_with(&h, Arc::clone(&runtime));
    let expires = now_ms() + 10 * 60_000;
    h.set_running(k, expires).await;

    let status = center
        .extend(&ExtendRequest {
            target: target(k, Some(instance)),
            contest_ends_at_ms: None,
        })
        .await
        .unwrap();
    assert_eq!(status.expires_at_ms, Some(expires + 600_000));
    let id = InstanceRef {
        team: k.team,
        challenge: k.challenge,
        instance,
    };
    // Called once, after the record says so, with the record's new end.
    assert_eq!(runtime.calls(), vec![(id, expires + 600_000)]);
    assert_eq!(
        h.record(k).await.unwrap().expires_at_ms,
        Some(expires + 600_000)
    );

    // A refused extension does not reach the runtime.
    h.set_running(k, now_ms() + 20 * 60_000).await;
    center
        .extend(&ExtendRequest {
            target: target(k, Some(instance)),
            contest_ends_at_ms: None,
        })
        .await
        .unwrap_err();
    assert_eq!(runtime.calls().len(), 1);
}

async fn a_runtime_that_cannot_move_the_deadline_undoes_the_extension(backend: Backend) {
    let h = backend.harness("extend-runtime-down", 300).await;
    let k = key(7, 1);
    let instance = instance_of(&h.post(paths::START, &start_request(k, 3)).await.body);
    let runtime = DeadlineRecorder::new(DeadlineAnswer::Unavailable);
    let center = center_with(&h, Arc::clone(&runtime));
    let expires = now_ms() + 10 * 60_000;
    let running = h.set_running(k, expires).await;
    let request = ExtendRequest {
        target: target(k, Some(instance)),
        contest_ends_at_ms: None,
    };

    // The runtime would still end it at the old end: 503, and the record says the old end too.
    let refused = center.extend(&request).await.unwrap_err();
    assert_eq!(refused.kind, fctf_control::error::ErrorKind::Unavailable);
    assert_eq!(runtime.calls().len(), 1);
    assert_eq!(runtime.calls()[0].1, expires + 600_000);
    let undone = h.record(k).await.unwrap();
    assert_eq!(undone.expires_at_ms, Some(expires));
    assert_eq!(undone.state, DeploymentState::Running);
    assert_eq!(undone.instance, running.instance);
    assert!(undone.version > running.version, "extended, then undone");

    // Once the runtime answers again, the extension goes through from the old end; the failed
    // attempt counted (the store has no decrement).
    runtime.answer(DeadlineAnswer::Moved);
    let status = center.extend(&request).await.unwrap();
    assert_eq!(status.expires_at_ms, Some(expires + 600_000));
    assert_eq!(status.extensions_left, Some(0));
    assert_eq!(runtime.calls()[1].1, expires + 600_000);

    // A runtime without the instance has nothing that could end it early: the extension stands.
    let h2 = backend.harness("extend-runtime-missing", 300).await;
    let instance2 = instance_of(&h2.post(paths::START, &start_request(k, 3)).await.body);
    let missing = DeadlineRecorder::new(DeadlineAnswer::Missing);
    let center2 = center_with(&h2, Arc::clone(&missing));
    let expires2 = now_ms() + 10 * 60_000;
    h2.set_running(k, expires2).await;
    let status = center2
        .extend(&ExtendRequest {
            target: target(k, Some(instance2)),
            contest_ends_at_ms: None,
        })
        .await
        .unwrap();
    assert_eq!(status.expires_at_ms, Some(expires2 + 600_000));
    assert_eq!(missing.calls().len(), 1);
    assert_eq!(
        h2.record(k).await.unwrap().expires_at_ms,
        Some(expires2 + 600_000)
    );
}
